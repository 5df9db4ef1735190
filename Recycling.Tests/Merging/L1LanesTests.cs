using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// DARE's one-pass L1 sums and recorded masks against the scalar rules (element by element draws, lane sums written
/// out one element at a time), whatever the chunking; and DELLA's primitive-key sort against the comparison sort it replaced.
/// </summary>
[TestClass]
public sealed class L1LanesTests
{
    private static float[] Values(int length, int seed)
    {
        var random = new Random(seed);
        float[] special = [0f, -0f, -1e-30f, 3e-38f, 1e-45f];
        return [.. Enumerable.Range(0, length).Select(_ => random.Next(20) == 0 ? special[random.Next(special.Length)] : (float)(random.NextDouble() - 0.5) * 7)];
    }

    /// <summary>The lane rule written out: element e into lane e mod 8 in index order, lanes j and j + 4 paired, then ((0+1)+(2+3)).</summary>
    private static double ScalarLanes(float[] values, Func<int, bool> counts)
    {
        var lanes = new double[8];
        for (int e = 0; e < values.Length; e++)
        {
            lanes[e % 8] += counts(e) ? Math.Abs(values[e]) : 0;
        }

        double[] pairs = [.. Enumerable.Range(0, 4).Select(j => lanes[j] + lanes[j + 4])];
        return (pairs[0] + pairs[1]) + (pairs[2] + pairs[3]);
    }

    [TestMethod]
    [DataRow(1037, new[] { 1037 })]
    [DataRow(1037, new[] { 13, 500, 524 })]
    [DataRow(4099, new[] { 7, 1, 2048, 2043 })]
    [DataRow(5, new[] { 3, 2 })]
    public void AddDareEqualsTheScalarRuleInAnyChunking(int length, int[] chunks)
    {
        float[] tau = Values(length, length);
        var mask = new DareMask(5, 0xABCDEF, 0.6);
        ulong key = mask.KeyFor(2);
        L1Lanes before = default, after = default;
        var bits = new byte[(length + 7) / 8];
        long offset = 0;
        foreach (int count in chunks)
        {
            L1Lanes.AddDare(ref before, ref after, tau.AsSpan((int)offset, count), offset, key, mask.DropThreshold, bits);
            offset += count;
        }

        Assert.AreEqual(length, offset);
        Assert.AreEqual(ScalarLanes(tau, _ => true), before.Total);
        Assert.AreEqual(ScalarLanes(tau, e => DareMask.Keeps(key, e, mask.DropThreshold)), after.Total);
        Assert.AreEqual(tau.Sum(v => (double)Math.Abs(v)), before.Total, 1e-12 * before.Total, "the lanes' sum is the sum");
        for (int e = 0; e < length; e++)
        {
            Assert.AreEqual(DareMask.Keeps(key, e, mask.DropThreshold), (bits[e / 8] & (1 << (e % 8))) != 0, $"element {e}");
        }

        var plain = default(L1Lanes);
        int split = Math.Min(11, length);
        plain.Add(tau.AsSpan(0, split), 0);
        plain.Add(tau.AsSpan(split), split);
        Assert.AreEqual(before.Total, plain.Total);
        Assert.AreEqual(before.Total, Sparsify.L1(tau));
    }

    [TestMethod]
    public void TheRecordedMaskZeroesWhatTheDrawsDrop()
    {
        const int length = 3001;
        float[] tau = Values(length, 8);
        var mask = new DareMask(1, 42, 0.5);
        var bits = new byte[(length + 7) / 8];
        L1Lanes before = default, after = default;
        L1Lanes.AddDare(ref before, ref after, tau, 0, mask.KeyFor(0), mask.DropThreshold, bits);
        foreach (int start in new[] { 0, 3, 1024 })
        {
            int count = Math.Min(1500, length - start);
            float[] expected = tau[start..(start + count)];
            float[] actual = tau[start..(start + count)];
            ChunkVectors.ZeroDropped(expected, (mask with { ElementOffset = start }).KeyFor(0), mask.DropThreshold);
            L1Lanes.ZeroDropped(actual, start, bits);
            CollectionAssert.AreEqual(expected.Select(BitConverter.SingleToUInt32Bits).ToArray(), actual.Select(BitConverter.SingleToUInt32Bits).ToArray(), $"start {start}");
        }
    }

    /// <summary>MergekitMasks.Della as it was before the primitive keys: a comparison-delegate sort per fiber.</summary>
    private static bool[] DellaWithComparisonSort(float[] tau, long[] shape, double density, double epsilon, ulong key, double[] probabilities)
    {
        int n = tau.Length;
        long m = shape.Length < 2 ? n : shape[1];
        long inner = shape.Length < 2 ? 1 : n / Math.Max(1, shape[0] * shape[1]);
        long outer = m == 0 ? 0 : n / (m * inner);
        var keys = new uint[m];
        var order = new int[m];
        var keep = new bool[n];
        for (long o = 0; o < outer; o++)
        {
            for (long i = 0; i < inner; i++)
            {
                long start = o * m * inner + i;
                for (int r = 0; r < m; r++)
                {
                    keys[r] = MergekitMasks.Bits(tau[(int)(start + r * inner)]);
                    order[r] = r;
                }

                Array.Sort(order, (a, b) => keys[a] != keys[b] ? keys[b].CompareTo(keys[a]) : a.CompareTo(b));
                for (int position = 0; position < m; position++)
                {
                    int e = (int)(start + order[position] * inner);
                    double normalised = m > 1 ? (double)(m - 1 - position) / (m - 1) : 0.5;
                    double p = (density - epsilon) + normalised * 2 * epsilon;
                    probabilities[e] = p;
                    keep[e] = DareMask.Keeps(key, e, MergekitMasks.DropThreshold(1.0 - p));
                }
            }
        }

        return keep;
    }

    [TestMethod]
    [DataRow(new long[] { 300, 97 })]
    [DataRow(new long[] { 4, 1000, 3 })]
    [DataRow(new long[] { 2000 })]
    [DataRow(new long[] { 50, 1 })]
    [DataRow(new long[] { 7, 2, 2, 2 })]
    public void DellaOrderEqualsTheComparisonSortOnManyTies(long[] shape)
    {
        var random = new Random(11);
        // A handful of magnitudes of both signs, zeros of both signs, NaN and ±Inf: nearly every entry ties with others.
        float[] levels = [0f, -0f, 0.5f, -0.5f, 1f, -1f, 2.5f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1e-40f, -1e-40f];
        int n = (int)shape.Aggregate(1L, (a, b) => a * b);
        float[] tau = [.. Enumerable.Range(0, n).Select(_ => levels[random.Next(levels.Length)])];
        ulong key = new DareMask(3, 99, 0).KeyFor(1);
        var expectedP = new double[n];
        var actualP = new double[n];
        var expected = DellaWithComparisonSort(tau, shape, 0.5, 0.3, key, expectedP);
        var actual = MergekitMasks.Della(tau, shape, 0.5, 0.3, key, actualP);
        CollectionAssert.AreEqual(expected, actual);
        CollectionAssert.AreEqual(expectedP, actualP);
        Assert.IsTrue(expected.Any(x => x) && expected.Any(x => !x));
    }
}
