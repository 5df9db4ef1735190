using Recycling.Onnx;
using Recycling.Onnx.Alignment;

namespace Recycling.Tests.Reliability;

/// <summary>
/// Alignment is near-linear in the number of tensors: tie detection (the part that compared every pair of equally
/// shaped weights, 97 s for two models of 30,000 small tensors) hashes each weight and compares only real candidates.
/// Pinned by the count of element reads and comparisons, not by time.
/// </summary>
[TestClass]
public sealed class BoundedAlignmentTests
{
    [TestMethod]
    public void AligningTwoModelsOf30000SmallTensorsReadsEachElementAFewTimesAndFindsEveryTie()
    {
        var folder = Directory.CreateTempSubdirectory("recycling-align-").FullName;
        try
        {
            const int count = 30_000;
            using var a = OnnxModel.Open(ManyTensorModel.Write(Path.Combine(folder, "a.onnx"), count, fineTuning: 1));
            using var b = OnnxModel.Open(ManyTensorModel.Write(Path.Combine(folder, "b.onnx"), count, fineTuning: 2));
            Aligner.TieComparisons = 0;
            var plan = Aligner.Align([a, b]);
            long comparisons = Aligner.TieComparisons;

            Assert.AreEqual(count, plan.Parameters.Count);
            for (var i = 0; i < count; i++)
            {
                var p = plan.Parameters[i];
                Assert.AreEqual($"w{i}", p.Tensors[0].Name);
                string? expected = i % 100 is 1 or 51 ? plan.Parameters[i - 1].Key : null;
                Assert.AreEqual(expected, p.TiedTo, $"w{i}");
                Assert.AreEqual(i % 100 == 51, p.TiedTransposed, $"w{i}");
            }

            // 4 elements per weight, 2 models: 240,000 elements. Every pair compared would be ~ 4.5e8 pairs.
            long elements = 2L * count * 4;
            Assert.IsTrue(comparisons <= 8 * elements, $"{comparisons} element reads for {elements} elements");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
