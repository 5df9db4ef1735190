using System.Runtime.InteropServices;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// DARE's recorded mask (<see cref="DareMask.Recorded"/>): the L1 pass records the draws, and the kernels that read
/// the bits merge exactly as the kernels that draw, on every SIMD path, element type and chunking; the CPU kernels do
/// read the bits (an arbitrary recorded mask gives the scalar formula's result for that mask); the L1 pass that forms
/// τ in registers sums and records what the pass over a written-out τ did; and dare_linear merges float16 inputs as
/// the same values in float32.
/// </summary>
[TestClass]
public sealed class RecordedDareMaskTests
{
    private const int Length = 9001;

    /// <summary>Calls cut at elements that are not multiples of 8, so recorded bytes straddle the calls.</summary>
    private static readonly (int Start, int Count)[] Calls = [(0, 1001), (1001, 4002), (5003, 3998)];

    /// <summary>Each model's mask as the L1 pass records it, over the whole tensor.</summary>
    private static byte[][] Record(TestTensor theta0, TestTensor[] models, DareMask mask) =>
        [.. models.Select((m, k) =>
        {
            var bits = new byte[(Length + 7) / 8];
            L1Lanes before = default, after = default;
            L1Lanes.AddDare(ref before, ref after, m.Values, theta0.Values, 0, mask.KeyFor(k), mask.DropThreshold, bits);
            return bits;
        })];

    private static float[] Merge(IMergeKernels kernels, TestTensor theta0, TestTensor[] models, DareMask mask, bool ties)
    {
        var output = new float[Length];
        uint threshold = BitConverter.SingleToUInt32Bits(0.01f);
        foreach ((int start, int count) in Calls)
        {
            TensorSource[] inputs = [.. models.Select(m => m.Slice(start, count))];
            var at = mask with { ElementOffset = start };
            if (ties)
            {
                kernels.Ties(inputs, theta0.Slice(start, count), [threshold, 0, threshold], 0.8f, at, output.AsSpan(start, count));
            }
            else
            {
                kernels.WeightedSum(inputs, [0.5f, -1.25f, 2f], theta0.Slice(start, count), at, output.AsSpan(start, count));
            }
        }

        return output;
    }

    private static void AssertBitIdentical(float[] expected, float[] actual, string what) =>
        Assert.IsTrue(MemoryMarshal.AsBytes(expected.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(actual.AsSpan())), what);

    [TestMethod]
    [DynamicData(nameof(KernelCases.NamesAndTypes), typeof(KernelCases))]
    public void ReadingTheRecordedMaskMergesAsDrawingIt(string kernel, OnnxDataType type)
    {
        (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(5, 3, Length, type);
        var mask = new DareMask(11, 0xD0A7, 0.7);
        byte[][] recorded = Record(theta0, models, mask);
        KernelCases.Use(kernel, k =>
        {
            foreach (bool ties in new[] { false, true })
            {
                float[] drawn = Merge(k, theta0, models, mask, ties);
                float[] read = Merge(k, theta0, models, mask with { Recorded = recorded }, ties);
                AssertBitIdentical(drawn, read, $"{kernel} {type} {(ties ? "ties" : "weighted sum")}");
                Assert.IsTrue(drawn.Zip(theta0.Values).Any(p => p.First != p.Second), "the merge moved the base");
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(KernelCases.CpuPathsOnly), typeof(KernelCases))]
    public void CpuKernelsApplyTheBitsTheyAreGiven(string kernel)
    {
        (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(6, 3, Length, OnnxDataType.Float);
        var mask = new DareMask(2, 77, 0.4);
        var random = new Random(3);
        byte[][] arbitrary = [.. models.Select(_ =>
        {
            var bits = new byte[(Length + 7) / 8];
            random.NextBytes(bits);
            return bits;
        })];
        float[] weights = [0.5f, -1.25f, 2f];
        // The kernels' formula, in their order of fp32 operations, with the arbitrary mask's factors.
        var expected = new float[Length];
        for (int e = 0; e < Length; e++)
        {
            float b = theta0.Values[e];
            float acc = 0;
            for (int m = 0; m < models.Length; m++)
            {
                float scale = (arbitrary[m][e >> 3] & (1 << (e & 7))) != 0 ? mask.Scale : 0f;
                float term = weights[m] * ((models[m].Values[e] - b) * scale);
                acc = m == 0 ? term : acc + term;
            }

            expected[e] = b + acc;
        }

        KernelCases.Use(kernel, k => AssertBitIdentical(expected, Merge(k, theta0, models, mask with { Recorded = arbitrary }, ties: false), kernel));
    }

    [TestMethod]
    public void ARecordedMaskOfTheWrongShapeIsRefused()
    {
        (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(7, 3, 64, OnnxDataType.Float);
        var mask = new DareMask(1, 1, 0.5);
        using var kernels = new CpuMergeKernels();
        var output = new float[64];
        TensorSource[] inputs = TestTensor.Sources(models);
        byte[][] enough = [new byte[8], new byte[8], new byte[8]];
        var tooShort = mask with { Recorded = [new byte[8], new byte[7], new byte[8]] };
        var tooFew = mask with { Recorded = [new byte[8], new byte[8]] };
        var pastTheEnd = mask with { Recorded = enough, ElementOffset = 1 };
        foreach (var bad in new[] { tooShort, tooFew, pastTheEnd })
        {
            Assert.ThrowsExactly<ArgumentException>(() => kernels.WeightedSum(inputs, [1f, 1f, 1f], theta0.Source, bad, output));
            Assert.ThrowsExactly<ArgumentException>(() => kernels.Ties(inputs, theta0.Source, [0, 0, 0], 1f, bad, output));
        }

        kernels.WeightedSum(inputs, [1f, 1f, 1f], theta0.Source, mask with { Recorded = enough }, output);
    }

    [TestMethod]
    [DataRow(0L, new[] { 1037 })]
    [DataRow(3L, new[] { 13, 500, 524 })]
    [DataRow(8L, new[] { 7, 1, 2048, 2043 })]
    public void ScalesFromBitsAreTheDrawsScales(long first, int[] counts)
    {
        var mask = new DareMask(9, 12345, 0.35);
        ulong key = mask.KeyFor(1);
        int total = counts.Sum();
        var bits = new byte[(first + total + 7) / 8];
        L1Lanes before = default, after = default;
        L1Lanes.AddDare(ref before, ref after, new float[first + total], 0, key, mask.DropThreshold, bits);
        long element = first;
        foreach (int count in counts)
        {
            var scales = new float[count];
            unsafe
            {
                fixed (byte* b = bits)
                fixed (float* s = scales)
                {
                    DareMask.ScalesFromBits(b, element, count, mask.Scale, s);
                }
            }

            for (int i = 0; i < count; i++)
            {
                Assert.AreEqual(DareMask.Keeps(key, element + i, mask.DropThreshold) ? mask.Scale : 0f, scales[i], $"element {element + i}");
            }

            element += count;
        }
    }

    [TestMethod]
    [DataRow(new[] { 1037 })]
    [DataRow(new[] { 13, 500, 524 })]
    [DataRow(new[] { 5, 3, 2048, 2043 })]
    public void TheL1PassFromInputAndBaseEqualsThePassOverTau(int[] chunks)
    {
        int length = chunks.Sum();
        var random = new Random(length);
        float[] special = [0f, -0f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1e-45f, 3e38f, -3e38f];
        float[] Values() => [.. Enumerable.Range(0, length).Select(_ => random.Next(10) == 0 ? special[random.Next(special.Length)] : (float)(random.NextDouble() - 0.5))];
        float[] x = Values(), b = Values();
        float[] tau = [.. x.Zip(b, (v, w) => v - w)];
        var mask = new DareMask(4, 8, 0.5);
        ulong key = mask.KeyFor(0);
        L1Lanes before = default, after = default, fusedBefore = default, fusedAfter = default;
        var bits = new byte[(length + 7) / 8];
        var fusedBits = new byte[(length + 7) / 8];
        int offset = 0;
        foreach (int count in chunks)
        {
            L1Lanes.AddDare(ref before, ref after, tau.AsSpan(offset, count), offset, key, mask.DropThreshold, bits);
            L1Lanes.AddDare(ref fusedBefore, ref fusedAfter, x.AsSpan(offset, count), b.AsSpan(offset, count), offset, key, mask.DropThreshold, fusedBits);
            offset += count;
        }

        Assert.AreEqual(BitConverter.DoubleToInt64Bits(before.Total), BitConverter.DoubleToInt64Bits(fusedBefore.Total));
        Assert.AreEqual(BitConverter.DoubleToInt64Bits(after.Total), BitConverter.DoubleToInt64Bits(fusedAfter.Total));
        CollectionAssert.AreEqual(bits, fusedBits);
    }

    [TestMethod]
    [DataRow("dare_linear", 1000)]
    [DataRow("dare_linear", 4096)]
    [DataRow("dare_average", 777)]
    public void DareWithTheL1RescaleMergesFloat16AsItsFloat32Values(string method, int chunk)
    {
        const int length = 5003;
        (TestTensor half0, TestTensor[] halves) = TestData.FineTunings(8, 3, length, OnnxDataType.Float16);
        TestTensor single0 = TestTensor.Create(half0.Values, OnnxDataType.Float);
        TestTensor[] singles = [.. halves.Select(h => TestTensor.Create(h.Values, OnnxDataType.Float))];
        var options = new MergeOptions
        {
            MethodName = method,
            Parameters = new Dictionary<string, double> { ["density"] = 0.6, ["seed"] = 3 },
            Weights = [0.7, 1.1, -0.4],
        };
        float[] fromHalf = MergeTensor(options, half0, halves, chunk);
        float[] fromSingle = MergeTensor(options, single0, singles, chunk);
        AssertBitIdentical(fromSingle, fromHalf, $"{method}, chunks of {chunk}");
        Assert.IsTrue(fromSingle.Zip(single0.Values).Count(p => p.First != p.Second) > length / 2, "the merge moved the base");
    }

    private static float[] MergeTensor(MergeOptions options, TestTensor baseline, TestTensor[] models, int chunk)
    {
        using IMergeKernels kernels = new CpuMergeKernels();
        var merger = new TensorMerger(options, models.Length, kernels, hasBase: true);
        var chunks = new ChunkedTestTensors(models, baseline, chunk);
        var id = TensorId.FromKey("w");
        for (int pass = 0; merger.NeedsPrepass(pass); pass++)
        {
            merger.Prepass(pass, id, chunks);
            merger.CompletePrepass(pass);
        }

        var sink = new OrderedSink(baseline.Length);
        merger.Merge(new TensorInfo(id, "w", [baseline.Length]), chunks, new float[Math.Min(chunk, baseline.Length)], sink);
        return sink.Values;
    }
}
