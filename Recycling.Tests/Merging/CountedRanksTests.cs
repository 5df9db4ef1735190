using Recycling.Onnx;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// <see cref="CountedRanks"/> against <see cref="Array.Sort(Array)"/> of the same values: every rank asked for is the
/// sorted array's value there (NaN equal to any NaN, −0 to +0, as the sort itself does not order them), whatever the
/// chunk size, on values with many ties, NaN, ±0, ±∞, subnormals and values that share their high key bits.
/// </summary>
[TestClass]
public sealed class CountedRanksTests
{
    [TestMethod]
    [DataRow(1, 1)]
    [DataRow(2, 1)]
    [DataRow(1000, 7)]
    [DataRow(20_011, 4099)]
    [DataRow(20_011, 20_011)]
    public void EveryRankIsTheSortedValue(int length, int chunk)
    {
        var random = new Random(length + chunk);
        double[] values = [.. Enumerable.Range(0, length).Select(_ => Draw(random))];
        double[] sorted = (double[])values.Clone();
        Array.Sort(sorted);
        long[] ranks = [.. Enumerable.Range(0, Math.Min(length, 97)).Select(i => (long)random.Next(length)).Append(0).Append(length - 1)];
        using var counted = new CountedRanks(length, ranks);
        int passes = 0;
        while (!counted.IsComplete)
        {
            for (int offset = 0; offset < length; offset += chunk)
            {
                counted.Count(values.AsSpan(offset, Math.Min(chunk, length - offset)));
            }

            counted.CompletePass();
            passes++;
        }

        Assert.AreEqual(4, passes);
        for (int i = 0; i < ranks.Length; i++)
        {
            double expected = sorted[ranks[i]], actual = counted.Value(i);
            Assert.IsTrue(expected == actual || (double.IsNaN(expected) && double.IsNaN(actual)), $"rank {ranks[i]} of {length}: expected {expected:R}, got {actual:R}");
        }
    }

    [TestMethod]
    public void ValuesThatChangeBetweenPassesAreReported()
    {
        double[] values = [3, 1, 2, 5, 4];
        using var counted = new CountedRanks(values.Length, 2);
        counted.Count(values);
        counted.CompletePass();
        // One more value with the same high 16 key bits as the rank's value, 3: the second pass counts it in 3's bin.
        counted.Count([3, 1, 2, 5, 4, 3.0000001]);
        var error = Assert.ThrowsExactly<RecyclingException>(counted.CompletePass);
        StringAssert.Contains(error.Message, "the inputs changed");
    }

    private static double Draw(Random random) => random.Next(20) switch
    {
        0 => double.NaN,
        1 => random.Next(2) == 0 ? 0.0 : -0.0,
        2 => random.Next(2) == 0 ? double.PositiveInfinity : double.NegativeInfinity,
        3 => double.Epsilon * random.Next(-5, 6),
        4 => BitConverter.Int64BitsToDouble(0x3FF0_0000_0000_0000 + random.Next(8)),
        5 => -BitConverter.Int64BitsToDouble(0x3FF0_0000_0000_0000 + random.Next(8)),
        < 12 => random.Next(-8, 9) / 4.0,
        _ => (random.NextDouble() - 0.5) * Math.Pow(2, random.Next(-60, 60)),
    };
}
