using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// mergekit's rules for the methods we had (issue #17's "Why" list), each against an independent reference
/// (<see cref="ReferenceMerges"/>, written from mergekit's torch code), on every kernel backend: the dedicated kernels
/// where their fast paths apply, the generic path otherwise.
/// </summary>
[TestClass]
public sealed class MergekitRulesTests
{
    public static IEnumerable<object[]> Kernels => KernelCases.Names.Select(n => new object[] { n });

    private static float[] Merge(IMergeKernels kernels, MergeOptions options, TestTensor? theta0, TestTensor[] models, ulong id = 5, IReadOnlyList<long>? shape = null)
    {
        var merger = new TensorMerger(options, models.Length, kernels, theta0 is not null);
        var output = new float[models[0].Length];
        var sink = new Collect(output);
        var tensor = new TensorInfo(id, "t", shape ?? [models[0].Length]);
        merger.Merge(tensor, new WholeTensors(TestTensor.Sources(models), theta0?.Source, []), output, sink);
        return output;
    }

    private sealed class Collect(float[] output) : TensorMerger.ITensorSink
    {
        public void Write(long offset, ReadOnlySpan<float> values) => values.CopyTo(output.AsSpan((int)offset));

        public void Patch(long index, float value) => output[index] = value;
    }

    private static void AssertClose(float[] expected, float[] actual, double relative, string what)
    {
        double scale = expected.Max(v => Math.Abs((double)v));
        for (int j = 0; j < expected.Length; j++)
        {
            TestData.AssertClose(expected[j], actual[j], relative * scale, $"{what} [{j}]");
        }
    }

    [TestMethod]
    public void TiesKeepsExactlyTheFloorOfDensityTimesTheSize()
    {
        using var kernels = new CpuMergeKernels();
        // A 3-element bias at density 0.2: ⌊0.6⌋ = 0 entries survive (PEFT keeps 0; the paper's rule kept 2).
        TestTensor theta0 = TestTensor.Create([1f, 2f, 3f], OnnxDataType.Float);
        TestTensor[] models = [TestTensor.Create([1.5f, 1f, 3.25f], OnnxDataType.Float), TestTensor.Create([0.5f, 2.5f, 3f], OnnxDataType.Float)];
        var options = new MergeOptions { MethodName = "ties", Density = 0.2 };
        CollectionAssert.AreEqual(theta0.Values, Merge(kernels, options, theta0, models));

        // Ten entries at density 0.25: exactly 2 per model, ties at the cut resolved to the lower indices.
        float[] b = new float[10];
        TestTensor zero = TestTensor.Create(b, OnnxDataType.Float);
        TestTensor a = TestTensor.Create([0.1f, -0.5f, 0.5f, 0.5f, 0, 0, 0, 0, 0, 0.2f], OnnxDataType.Float);
        float[] merged = Merge(kernels, options, zero, [a]);
        CollectionAssert.AreEqual(new[] { 0f, -0.5f, 0.5f, 0, 0, 0, 0, 0, 0, 0 }, merged, string.Join(", ", merged));
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void TiesWithPerModelWeightsAndDensitiesMatchesMergekit(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            foreach (var type in new[] { OnnxDataType.Float, OnnxDataType.Float16 })
            {
                (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(11, 3, 4099, type);
                float[][] x = [.. models.Select(m => m.Values)];
                // Equal weights, one density: the TIES kernel (fp16's tied magnitudes send some tensors to the generic path).
                var plain = new MergeOptions { MethodName = "ties", Density = 0.3, Lambda = 0.8 };
                AssertClose(ReferenceMerges.Gta(x, theta0.Values, [0.3, 0.3, 0.3], [1, 1, 1], 0.8, consensus: true, normalize: true),
                    Merge(kernels, plain, theta0, models), 1e-6, $"{type} equal weights");

                // Per-model weights and densities, divisor Σ w·mask: the generic path.
                var weighted = new MergeOptions
                {
                    MethodName = "ties", Weights = [1.0, 0.6, 0.8], Lambda = 1.2,
                    ModelParameters = [new Dictionary<string, double> { ["density"] = 0.5 }, new Dictionary<string, double> { ["density"] = 0.3 }, new Dictionary<string, double> { ["density"] = 0.2 }],
                };
                AssertClose(ReferenceMerges.Gta(x, theta0.Values, [0.5, 0.3, 0.2], [1.0, 0.6, 0.8], 1.2, consensus: true, normalize: true),
                    Merge(kernels, weighted, theta0, models), 1e-6, $"{type} weighted");

                var raw = new MergeOptions { MethodName = "ties", Weights = [0.5, 0.5, 0.5], Density = 0.4, Lambda = 0.7, Parameters = new Dictionary<string, double> { ["normalize"] = 0 } };
                AssertClose(ReferenceMerges.Gta(x, theta0.Values, [0.4, 0.4, 0.4], [0.5, 0.5, 0.5], 0.7, consensus: true, normalize: false),
                    Merge(kernels, raw, theta0, models), 1e-6, $"{type} normalize false");
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void TaskArithmeticTakesPerModelWeights(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(12, 3, 3001, OnnxDataType.BFloat16);
            var options = new MergeOptions { MethodName = "task_arithmetic", Weights = [0.5, 0.3, 0.2], Lambda = 0.8 };
            AssertClose(ReferenceMerges.Gta([.. models.Select(m => m.Values)], theta0.Values, null, [0.5, 0.3, 0.2], 0.8, consensus: false, normalize: false),
                Merge(kernels, options, theta0, models), 1e-6, "task arithmetic");
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void DareRescalesToTheL1NormByDefaultAndByTheInverseDensityOnRequest(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(13, 3, 5003, OnnxDataType.Float);
            float[][] x = [.. models.Select(m => m.Values)];
            const ulong id = 0xABCDEF;
            foreach (var (rescale, value) in new[] { ("l1", RescaleModes.L1), ("inverse", RescaleModes.Inverse), ("none", RescaleModes.None) })
            {
                var parameters = new Dictionary<string, double> { ["rescale"] = value };

                // One density for all: the kernels' masked weighted sum (L1 factors measured first).
                var linear = new MergeOptions { MethodName = "dare_linear", Density = 0.3, Seed = 4, Weights = [0.6, 0.3, 0.5], Parameters = parameters };
                AssertClose(ReferenceMerges.DareGta(x, theta0.Values, [0.3, 0.3, 0.3], [0.6, 0.3, 0.5], 1, consensus: false, normalize: false, 4, id, rescale),
                    Merge(kernels, linear, theta0, models, id), 1e-6, $"dare_linear {rescale}");

                // Per-model densities: the generic path.
                var perModel = new MergeOptions
                {
                    MethodName = "dare_linear", Seed = 4, Weights = [0.6, 0.3, 0.5], Parameters = parameters,
                    ModelParameters = [new Dictionary<string, double> { ["density"] = 0.4 }, new Dictionary<string, double> { ["density"] = 0.6 }, new Dictionary<string, double> { ["density"] = 0.2 }],
                };
                AssertClose(ReferenceMerges.DareGta(x, theta0.Values, [0.4, 0.6, 0.2], [0.6, 0.3, 0.5], 1, consensus: false, normalize: false, 4, id, rescale),
                    Merge(kernels, perModel, theta0, models, id), 1e-6, $"dare_linear per model {rescale}");

                // DARE-TIES: sign election after the drop, no magnitude trim; mergekit's default normalize false.
                var ties = new MergeOptions { MethodName = "dare_ties", Density = 0.5, Seed = 4, Lambda = 0.9, Parameters = parameters };
                AssertClose(ReferenceMerges.DareGta(x, theta0.Values, [0.5, 0.5, 0.5], [1, 1, 1], 0.9, consensus: true, normalize: false, 4, id, rescale),
                    Merge(kernels, ties, theta0, models, id), 1e-6, $"dare_ties {rescale}");
                var normalised = ties with { Parameters = new Dictionary<string, double>(parameters) { ["normalize"] = 1 } };
                AssertClose(ReferenceMerges.DareGta(x, theta0.Values, [0.5, 0.5, 0.5], [1, 1, 1], 0.9, consensus: true, normalize: true, 4, id, rescale),
                    Merge(kernels, normalised, theta0, models, id), 1e-6, $"dare_ties normalize {rescale}");
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void SlerpGoesFromTheBaseToTheOtherModel(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(14, 2, 2049, OnnxDataType.Float, taskScale: 0.4);
            foreach (double t in new[] { 0.0, 0.3, 1.0 })
            {
                var options = new MergeOptions { MethodName = "slerp", T = t };
                float[] expected = [.. ReferenceMerges.Slerp(theta0.Values, models[0].Values, t).Select(v => (float)v)];
                AssertClose(expected, Merge(kernels, options, theta0, [models[0]]), 1e-6, $"base to model, t {t}");
                float[] between = [.. ReferenceMerges.Slerp(models[0].Values, models[1].Values, t).Select(v => (float)v)];
                AssertClose(between, Merge(kernels, options, null, models), 1e-6, $"two models, t {t}");
            }

            Assert.ThrowsExactly<RecyclingException>(() => new MergeOptions { MethodName = "slerp" }.Validate(2, hasBase: true));
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void ModelStockPerTensorAndPerVectorAlongTheLastAxis(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(15, 3, 6 * 5 * 7, OnnxDataType.Float);
            long[] shape = [6, 5, 7];
            AssertClose(ModelStockReference(theta0.Values, [.. models.Select(m => m.Values)], theta0.Length), Merge(kernels, new MergeOptions { MethodName = "model_stock" }, theta0, models, shape: shape), 1e-6, "per tensor");
            var rows = new MergeOptions { MethodName = "model_stock", Parameters = new Dictionary<string, double> { ["filter_wise"] = 1 } };
            AssertClose(ModelStockReference(theta0.Values, [.. models.Select(m => m.Values)], 7), Merge(kernels, rows, theta0, models, shape: shape), 1e-6, "filter_wise");
        });
    }

    /// <summary>mergekit's model stock over vectors of <paramref name="width"/> consecutive elements (the tensor's length: per tensor), fp64.</summary>
    private static float[] ModelStockReference(float[] b, float[][] x, int width)
    {
        int n = x.Length;
        var result = new float[b.Length];
        for (int start = 0; start < b.Length; start += width)
        {
            int count = Math.Min(width, b.Length - start);
            double cos = 0;
            int pairs = 0;
            for (int i = 0; i < n; i++)
            {
                for (int j = i + 1; j < n; j++)
                {
                    double dot = 0, ni = 0, nj = 0;
                    for (int e = start; e < start + count; e++)
                    {
                        double a = x[i][e] - b[e], c = x[j][e] - b[e];
                        (dot, ni, nj) = (dot + (a * c), ni + (a * a), nj + (c * c));
                    }

                    cos += Math.Clamp(dot / Math.Max(Math.Sqrt(ni) * Math.Sqrt(nj), 1e-6), -1, 1);
                    pairs++;
                }
            }

            cos /= pairs;
            double t = n * cos / (1 + ((n - 1) * cos));
            for (int e = start; e < start + count; e++)
            {
                result[e] = (float)((t * x.Average(m => (double)m[e])) + ((1 - t) * b[e]));
            }
        }

        return result;
    }
}
