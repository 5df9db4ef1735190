using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;

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
    private static readonly string Root = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "Fixtures", "torch-merge");

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
            var expected = TestNpy.Read(Path.Combine(Root, v.GetProperty("onnx_space_merge").GetProperty(method).GetProperty("logits").GetString()!));
            var actual = Run(output, Path.Combine(Root, a.GetProperty("input").GetString()!));
            var error = RelativeError(actual, MemoryMarshal.Cast<byte, float>(expected.Data).ToArray());
            Assert.IsLessThanOrEqualTo(Tolerance, error, $"{arch}/{variant}/{method}: max |merged - reference| / max |reference| = {error:E2}");

            // The comparison can tell methods apart: the other method's reference is far away.
            var other = TestNpy.Read(Path.Combine(Root, v.GetProperty("onnx_space_merge").GetProperty(method == "uniform" ? "ta0.7" : "uniform").GetProperty("logits").GetString()!));
            Assert.IsGreaterThan(1e-3, RelativeError(actual, MemoryMarshal.Cast<byte, float>(other.Data).ToArray()));
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

    private static double RelativeError(float[] actual, float[] expected)
    {
        Assert.HasCount(expected.Length, actual);
        double maxDiff = 0, maxRef = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs(actual[i] - (double)expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
        }

        return maxDiff / maxRef;
    }

    private static float[] Run(string model, string inputNpy)
    {
        var input = TestNpy.Read(inputNpy);
        using var session = new InferenceSession(model);
        var type = input.Descr.EndsWith("f4", StringComparison.Ordinal) ? TensorElementType.Float : TensorElementType.Int64;
        var handle = GCHandle.Alloc(input.Data, GCHandleType.Pinned);
        try
        {
            using var value = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, type, input.Shape, handle.AddrOfPinnedObject(), input.Data.Length);
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, [session.InputNames[0]], [value], [session.OutputNames[0]]);
            return results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            handle.Free();
        }
    }
}

/// <summary>Minimal .npy reading for fixtures (C order, little-endian).</summary>
internal static class TestNpy
{
    public sealed record Array(string Descr, long[] Shape, byte[] Data);

    public static Array Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var headerLength = bytes[6] == 1 ? BitConverter.ToUInt16(bytes, 8) : (int)BitConverter.ToUInt32(bytes, 8);
        var start = bytes[6] == 1 ? 10 : 12;
        var header = System.Text.Encoding.ASCII.GetString(bytes, start, headerLength);
        var descr = System.Text.RegularExpressions.Regex.Match(header, "'descr': '([^']*)'").Groups[1].Value;
        var shape = System.Text.RegularExpressions.Regex.Match(header, @"'shape': \(([^)]*)\)").Groups[1].Value
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
        return new Array(descr, shape, bytes[(start + headerLength)..]);
    }
}
