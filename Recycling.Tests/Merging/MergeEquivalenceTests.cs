using System.Text.Json;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Onnx;

namespace Recycling.Tests.Merging;

/// <summary>
/// Merging in ONNX space equals merging in PyTorch space: real torch exports (default, opset 17, no constant
/// folding, BatchNorm preserved) of fine-tunings of one base are merged by `ModelMerger`, and the merged model's logits
/// through ONNX Runtime match the script's references (scripts/fixtures/make_merge_fixtures.py).
/// </summary>
[TestClass]
public sealed class MergeEquivalenceTests
{
    private const double Tolerance = 1e-5;
    private static readonly string Root = Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-merge");

    public static IEnumerable<object[]> Cases()
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "manifest.json")));
        foreach (var arch in manifest.RootElement.GetProperty("architectures").EnumerateObject())
        {
            foreach (var variant in arch.Value.GetProperty("variants").EnumerateObject())
            {
                foreach (var method in new[] { "uniform", "ta0.7" })
                {
                    yield return [arch.Name, variant.Name, method];
                }
            }
        }
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void MergedExportReproducesOnnxSpaceReference(string arch, string variant, string method)
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "manifest.json")));
        var a = manifest.RootElement.GetProperty("architectures").GetProperty(arch);
        var v = a.GetProperty("variants").GetProperty(variant);
        var files = v.GetProperty("files");
        string FileOf(string role) => Path.Combine(Root, files.GetProperty(role).GetProperty("file").GetString()!);
        var output = Path.Combine(Path.GetTempPath(), $"recycling-merge-{arch}-{variant}-{method}-{Guid.NewGuid():N}.onnx");
        try
        {
            var summary = ModelMerger.Merge(new MergeRequest
            {
                Inputs = [FileOf("ft1"), FileOf("ft2"), FileOf("ft3")],
                Base = FileOf("base"),
                Output = output,
                Options = method == "uniform" ? new MergeOptions { Method = MergeMethod.Average } : new MergeOptions { Method = MergeMethod.TaskArithmetic, Lambda = 0.7 },
                ExternalData = ExternalDataMode.Embedded,
            });
            Assert.IsGreaterThan(0, summary.Merged);
            var expected = NpyFile.Read(Path.Combine(Root, v.GetProperty("onnx_space_merge").GetProperty(method).GetProperty("logits").GetString()!));
            var actual = OrtTestValues.RunOnNpy(output, Path.Combine(Root, a.GetProperty("input").GetString()!)).Values.First();
            var error = OrtTestValues.MaxRelativeError(actual, expected.ToSingleArray());
            Assert.IsLessThanOrEqualTo(Tolerance, error, $"{arch}/{variant}/{method}: max |merged - reference| / max |reference| = {error:E2}");

            // The comparison can tell methods apart: the other method's reference is far away.
            var other = NpyFile.Read(Path.Combine(Root, v.GetProperty("onnx_space_merge").GetProperty(method == "uniform" ? "ta0.7" : "uniform").GetProperty("logits").GetString()!));
            Assert.IsGreaterThan(1e-3, OrtTestValues.MaxRelativeError(actual, other.ToSingleArray()));
        }
        finally
        {
            File.Delete(output);
        }
    }

    [TestMethod]
    public void DeduplicatedBaseIsSplitSoEveryLayerNormGetsItsOwnValue()
    {
        var dir = Path.Combine(Root, "transformer", "default");
        using var ft1 = OnnxModel.Open(Path.Combine(dir, "ft1.onnx"));
        using var ft2 = OnnxModel.Open(Path.Combine(dir, "ft2.onnx"));
        using var baseModel = OnnxModel.Open(Path.Combine(dir, "base.onnx"));

        // The base (deduplicated) as the first input forces the template to be split.
        var plan = Aligner.Align([baseModel, ft1, ft2]);
        var aliased = plan.Parameters.Where(p => p.AliasedIn.Count > 0).ToList();
        Assert.HasCount(6, aliased, plan.ToText());
        var tied = plan.Parameters.Single(p => p.TiedTo is not null);
        Assert.IsTrue(tied.TiedTransposed, plan.ToText());
        Assert.AreEqual("onnx::MatMul_161", tied.Tensors[0].Name);
    }

}
