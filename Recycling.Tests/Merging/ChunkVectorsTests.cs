using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// The chunked path's SIMD steps against the scalar rules they replace, bit for bit, on data with zeros of both signs,
/// NaN, ±Inf, exact sign ties and lengths that leave a partial vector.
/// </summary>
[TestClass]
public sealed class ChunkVectorsTests
{
    [TestMethod]
    [DataRow(0, false)]
    [DataRow(0, true)]
    [DataRow(1, true)]
    [DataRow(1, false)]
    [DataRow(2, true)]
    public void TaskVectorsEqualsTheScalarRule(int consensusIndex, bool normalize)
    {
        var consensus = new[] { Combine.Consensus.None, Combine.Consensus.Sum, Combine.Consensus.Count }[consensusIndex];
        var random = new Random(3);
        const int length = 1037;
        float[] special = [0f, -0f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0.25f, -0.25f];
        float Draw() => random.Next(10) == 0 ? special[random.Next(special.Length)] : random.Next(-4, 5) / 8f;
        float[][] tau = [.. Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, length).Select(_ => Draw()).ToArray())];
        float[] baseline = [.. Enumerable.Range(0, length).Select(_ => Draw())];
        foreach (double[] weights in new[] { new[] { 1.0, 1.0, 1.0 }, [0.3, -0.7, 2.0], [0.5, -0.5, 0.0] })
        {
            var expected = new float[length];
            var actual = new float[length];
            Combine.TaskVectors(tau, weights, baseline, consensus, normalize, 0.9, expected, 5, length - 5);
            ChunkVectors.TaskVectors(tau, weights, baseline, consensus, normalize, 0.9, actual, 5, length - 5);
            CollectionAssert.AreEqual(expected.Select(BitConverter.SingleToUInt32Bits).ToArray(), actual.Select(BitConverter.SingleToUInt32Bits).ToArray(),
                $"weights {string.Join(",", weights)}");
        }
    }

    [TestMethod]
    public void DropsEqualTheScalarRules()
    {
        var random = new Random(4);
        float[] tau = [.. Enumerable.Range(0, 1003).Select(_ => random.Next(-6, 7) / 16f)];
        tau[7] = float.NaN;
        tau[8] = -0f;
        uint bits = Sparsify.MagnitudeBits(2 / 16f);

        float[] below = [.. tau];
        ChunkVectors.ZeroBelow(below, bits);
        float[] expectedBelow = [.. tau.Select(v => Sparsify.MagnitudeBits(v) < bits ? 0f : v)];
        CollectionAssert.AreEqual(expectedBelow.Select(BitConverter.SingleToUInt32Bits).ToArray(), below.Select(BitConverter.SingleToUInt32Bits).ToArray());

        var mask = new Recycling.Onnx.Merging.DareMask(9, 77, 0.6);
        ulong key = (mask with { ElementOffset = 1 << 20 }).KeyFor(2);
        float[] dropped = [.. tau];
        ChunkVectors.ZeroDropped(dropped, key, mask.DropThreshold);
        float[] expectedDropped = [.. tau.Select((v, i) => Recycling.Onnx.Merging.DareMask.Keeps(key, i, mask.DropThreshold) ? v : 0f)];
        CollectionAssert.AreEqual(expectedDropped.Select(BitConverter.SingleToUInt32Bits).ToArray(), dropped.Select(BitConverter.SingleToUInt32Bits).ToArray());
        Assert.IsTrue(dropped.Count(v => v == 0) > tau.Count(v => v == 0) + 300, "the mask drops about 60%");

        long left = tau.Count(v => Sparsify.MagnitudeBits(v) == bits) / 2;
        long expectedLeft = left;
        int cut = ThresholdTies.LastKept(tau, bits, ref left);
        int expectedCut = 0;
        for (int i = 0; i < tau.Length && expectedLeft > 0; i++)
        {
            if (Sparsify.MagnitudeBits(tau[i]) == bits && --expectedLeft == 0)
            {
                expectedCut = i + 1;
            }
        }

        Assert.AreEqual(expectedCut, cut);
        Assert.AreEqual(0, left);
    }
}
