using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.Merging;

/// <summary>
/// Every merge method against an independent numpy implementation of mergekit's and PEFT's rules
/// (scripts/merging/reference_merges.py): each mergekit config in Fixtures/merge-reference is merged over the real torch
/// exports of cnn/default and every merged tensor is compared with the script's, per-model weights, densities,
/// gammas, epsilons and per-tensor filters included. DARE and DELLA draw from the same counter-based masks there.
/// Tolerance: max |ours − reference| ≤ 1e-6 · max |reference| per tensor (the script sums in fp64, the methods in
/// fp32 or fp64; masks and orders are exact).
/// </summary>
[TestClass]
public sealed class ReferenceConfigTests
{
    private const double Tolerance = 1e-6;
    private static readonly string Root = Path.Combine(global::Recycling.Tests.Fixtures.Root, "merge-reference");

    public static IEnumerable<object[]> Cases() =>
        Directory.EnumerateFiles(Root, "*.yml").Select(f => new object[] { Path.GetFileNameWithoutExtension(f) }).OrderBy(c => (string)c[0]);

    [TestMethod]
    public void EveryMethodHasAReferenceCase()
    {
        var methods = Directory.EnumerateFiles(Root, "*.yml").Select(f => MergeConfig.Load(f).Method.Name).ToHashSet();
        string[] expected =
        [
            "linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della",
            "della_linear", "sce", "slerp", "nuslerp", "multislerp", "karcher", "model_stock", "nearswap", "arcee_fusion",
            "ram", "ramplus_tl", "magnitude_prune",
        ];
        CollectionAssert.IsSubsetOf(expected, methods.ToArray());
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void ConfigMergeMatchesTheNumpyReference(string name)
    {
        var config = MergeConfig.Load(Path.Combine(Root, name + ".yml"));
        var output = Path.Combine(Path.GetTempPath(), $"recycling-reference-{name}-{Guid.NewGuid():N}.onnx");
        try
        {
            ModelMerger.Merge(config.Request(output) with { ExternalData = ExternalDataMode.Embedded });
            using var merged = OnnxModel.Open(output);
            using var expected = NpzArchive.Open(Path.Combine(Root, name + ".npz"));
            int compared = 0;
            foreach (var tensor in merged.Tensors.Where(t => t.Kind == TensorKind.Initializer && t.DataType == OnnxDataType.Float))
            {
                Assert.IsTrue(expected.Contains(tensor.Name), $"{name}: no reference for {tensor.Name}");
                float[] want = expected.Read(tensor.Name).ToSingleArray();
                float[] got = tensor.ReadFloat32();
                Assert.HasCount(want.Length, got, $"{name}: {tensor.Name}");
                double scale = want.Max(v => Math.Abs((double)v));
                for (int e = 0; e < want.Length; e++)
                {
                    double error = Math.Abs((double)got[e] - want[e]);
                    Assert.IsLessThanOrEqualTo(Tolerance * scale + 1e-30, error,
                        $"{name}: {tensor.Name}[{e}]: ours {got[e]:R}, reference {want[e]:R}");
                }

                compared++;
            }

            Assert.AreEqual(expected.Names.Count, compared, $"{name}: tensors compared");
        }
        finally
        {
            File.Delete(output);
        }
    }
}
