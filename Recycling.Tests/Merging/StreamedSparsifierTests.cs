using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// Breadcrumbs (two counted cuts, <see cref="OutlierCuts"/>) and DELLA (fiber blocks, <see cref="FiberPrune"/>) merged
/// chunk by chunk equal, bit for bit, their whole-tensor rules (<see cref="Breadcrumbs.Crumbs"/>,
/// <see cref="Della.Magprune"/>, then <c>Combine.TaskVectors</c>) applied to the whole tensor at once, at any chunk size:
/// data on a coarse grid (thousands of ties at every cut, across chunks), with NaN, ±0 and ±∞ among the task vectors.
/// </summary>
[TestClass]
public sealed class StreamedSparsifierTests
{
    private const ulong TensorKey = 0xB2EAD;

    private static readonly int[] ChunkSizes = [1, 5, 64, 1000, 4099, int.MaxValue];

    public static IEnumerable<object[]> Cases =>
    [
        ["breadcrumbs", new long[] { 30_011 }, "density=0.9,gamma=0.01", null!],
        ["breadcrumbs", new long[] { 97, 103 }, "density=0.5,gamma=0.1,rescale=1", null!],
        ["breadcrumbs", new long[] { 7, 6, 5, 31 }, "density=0.3,gamma=0.05,rescale=2,normalize=1", new[] { 1.0, 0.5, 2.0 }],
        ["breadcrumbs", new long[] { 5, 13, 151 }, "density=1|0.6|0.2,gamma=0.2|0.01|0", new[] { 0.3, -0.5, 1.0 }],
        ["breadcrumbs", new long[] { 40 }, "density=0.5,gamma=0.01", null!], // int(γ·n) = 0 keeps nothing
        ["breadcrumbs", new long[] { 30_011 }, "density=0.2,gamma=0.7", null!], // the range runs to the end
        ["breadcrumbs_ties", new long[] { 211, 101 }, "density=0.9,gamma=0.01", null!],
        ["breadcrumbs_ties", new long[] { 3, 7, 977 }, "density=0.5,gamma=0.1,rescale=1,normalize=1", new[] { 1.0, -0.5, 2.0 }],
        ["della", new long[] { 20_011 }, "density=0.5,epsilon=0.1", null!], // one fiber: the whole vector
        ["della", new long[] { 97, 103 }, "density=0.4,epsilon=0.2", null!],
        ["della", new long[] { 5, 13, 17, 11 }, "density=0.5,epsilon=0.3,rescale=2", null!],
        ["della", new long[] { 30, 7, 150 }, "density=0.7|0|1,epsilon=0.2|0.1|0.1,rescale=0", new[] { 1.0, 0.5, 2.0 }],
        ["della", new long[] { 300, 1 }, "density=0.5,epsilon=0.1", null!], // fibers of one entry
        ["della", new long[] { 1, 4099 }, "density=0.6,epsilon=0.3", null!], // fibers of 4099 (the radix sort)
        ["della_linear", new long[] { 61, 257 }, "density=0.5,epsilon=0.1", new[] { 0.2, 0.3, 0.5 }],
        ["della_linear", new long[] { 9, 1031 }, "density=0.5,epsilon=0.4,rescale=2,normalize=1", null!],
    ];

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void StreamedMergeEqualsTheWholeTensorRule(string method, long[] shape, string parameters, double[]? weights)
    {
        int length = (int)shape.Aggregate(1L, (a, b) => a * b);
        var (models, baseline) = Data(length, 3, seed: length);
        var options = Options(method, parameters, weights);
        float[] expected = WholeTensorReference(options, shape, models, baseline);
        foreach (int chunk in ChunkSizes)
        {
            float[] actual = Merge(options, shape, models, baseline, (int)Math.Min(chunk, length));
            Assert.AreEqual(-1, FloatBits.FirstDifference(expected, actual, anyNaN: true), $"{method} {string.Join('×', shape)} {parameters}, chunks of {chunk}");
        }
    }

    [TestMethod]
    public void BreadcrumbsCutsEqualTheWholeTensorMaskOnManyTiesAndSpecials()
    {
        var random = new Random(23);
        foreach (int n in new[] { 1, 2, 9, 100, 5000 })
        {
            float[] tau = [.. Enumerable.Range(0, n).Select(_ => Special(random) ?? random.Next(-3, 4) / 4f)];
            foreach (var (density, gamma) in new[] { (0.9, 0.01), (0.5, 0.25), (0.0, 0.5), (0.99, 0.5), (0.3, 0.0), (0.5, 0.6) })
            {
                var keep = MergekitMasks.Outliers(tau, density, gamma);
                foreach (int chunk in new[] { 1, 3, n })
                {
                    var fresh = new OutlierCuts(n, density, gamma);
                    while (!fresh.IsComplete)
                    {
                        // Counting does not depend on chunk order: count the chunks backwards.
                        for (int start = (n - 1) / chunk * chunk; start >= 0; start -= chunk)
                        {
                            fresh.Count(tau.AsSpan(start, Math.Min(chunk, n - start)));
                        }

                        fresh.CompletePass();
                    }

                    float[] kept = (float[])tau.Clone();
                    for (int start = 0; start < n; start += chunk)
                    {
                        fresh.Keep(kept.AsSpan(start, Math.Min(chunk, n - start)));
                    }

                    for (int e = 0; e < n; e++)
                    {
                        Assert.AreEqual(BitConverter.SingleToUInt32Bits(keep[e] ? tau[e] : 0f), BitConverter.SingleToUInt32Bits(kept[e]),
                            $"n {n}, density {density}, gamma {gamma}, chunks of {chunk}, entry {e}");
                    }
                }
            }
        }
    }

    private static MergeOptions Options(string method, string parameters, double[]? weights)
    {
        var global = new Dictionary<string, double> { ["lambda"] = 0.9 };
        if (((TaskArithmeticFamily)MergeMethods.Find(method)).IsRandom)
        {
            global["seed"] = 11; // breadcrumbs' cuts take no seed
        }

        var perModel = new List<Dictionary<string, double>> { new(), new(), new() };
        foreach (string pair in parameters.Split(','))
        {
            string[] parts = pair.Split('=');
            string[] values = parts[1].Split('|');
            if (values.Length == 1)
            {
                global[parts[0]] = double.Parse(values[0], System.Globalization.CultureInfo.InvariantCulture);
                continue;
            }

            for (int k = 0; k < values.Length; k++)
            {
                perModel[k][parts[0]] = double.Parse(values[k], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        if (weights is not null)
        {
            for (int k = 0; k < 3; k++)
            {
                perModel[k]["weight"] = weights[k];
            }
        }

        return new MergeOptions { MethodName = method, Parameters = global, ModelParameters = perModel };
    }

    /// <summary>Base on a grid of 2⁻¹⁰, task vectors on a grid of 2⁻⁸ (few distinct magnitudes), a few NaN, ±0, ±∞.</summary>
    private static (float[][] Models, float[] Baseline) Data(int length, int models, int seed)
    {
        var random = new Random(seed);
        float[] baseline = [.. Enumerable.Range(0, length).Select(_ => random.Next(-64, 65) / 1024f)];
        float[][] inputs = [.. Enumerable.Range(0, models).Select(_ => baseline.Select(b => Special(random) ?? (b + (random.Next(-6, 7) / 256f))).ToArray())];
        return (inputs, baseline);
    }

    private static float? Special(Random random) => random.Next(400) switch
    {
        0 => float.NaN,
        1 => float.PositiveInfinity,
        2 => float.NegativeInfinity,
        3 => -0f,
        _ => null,
    };

    private static float[] WholeTensorReference(MergeOptions options, long[] shape, float[][] models, float[] baseline)
    {
        var arguments = options.Arguments(models.Length);
        var method = (TaskArithmeticFamily)arguments.Method;
        var tensor = new TensorInfo(TensorKey, "t", shape);
        var random = new DareMask(method.IsRandom ? (ulong)arguments["seed"] : 0, TensorKey, 0);
        float[][] tau = [.. models.Select(m => m.Select((x, e) => x - baseline[e]).ToArray())];
        for (int k = 0; k < tau.Length; k++)
        {
            if (method.Sparsification == Sparsification.Outliers)
            {
                Breadcrumbs.Crumbs(tau[k], k, arguments);
            }
            else
            {
                Della.Magprune(tau[k], tensor, k, arguments, random);
            }
        }

        var output = new float[baseline.Length];
        Combine.TaskVectors(tau, arguments.PerModel("weight"), baseline, method.Consensus, arguments.Flag("normalize"), arguments["lambda"], output);
        return output;
    }

    private static float[] Merge(MergeOptions options, long[] shape, float[][] models, float[] baseline, int chunk)
    {
        using IMergeKernels kernels = MergeKernels.Create(MergeDevice.Cpu);
        var merger = new TensorMerger(options, models.Length, kernels, hasBase: true);
        var chunks = new ChunkedTestTensors([.. models.Select(m => TestTensor.Create(m, OnnxDataType.Float))], TestTensor.Create(baseline, OnnxDataType.Float), chunk);
        Assert.IsFalse(merger.NeedsPrepass(0));
        var sink = new OrderedSink(baseline.Length);
        merger.Merge(new TensorInfo(TensorKey, "t", shape), chunks, new float[chunk], sink);
        Assert.AreEqual(baseline.Length, sink.Written, "every element written once, in order");
        return sink.Values;
    }
}
