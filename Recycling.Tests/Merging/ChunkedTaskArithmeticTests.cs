using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// The task-arithmetic family's chunked path (per-tensor TIES trim with per-model weights, magnitude_prune,
/// DARE-TIES with the L1 rescale, per-model weights) and the TIES kernel with entries tied at a per-tensor threshold
/// (<see cref="ThresholdTies"/>): merged over several chunks it equals, bit for bit, the
/// whole-tensor rules of <see cref="Sparsify"/> and <see cref="Combine"/> applied to the whole tensor at once. The data
/// are on a coarse grid, so thousands of task-vector entries tie at every threshold and the ties straddle chunks.
/// </summary>
[TestClass]
public sealed class ChunkedTaskArithmeticTests
{
    private const int Length = 1_000_003;

    /// <summary>Two TIES sample strides (a chunk must be a multiple of one): four chunks, the last partial.</summary>
    private const int Chunk = 2 * MagnitudeThreshold.SampleStride;
    private const ulong TensorKey = 0xC0FFEE;

    public static IEnumerable<object[]> Cases =>
    [
        ["ties", 0.3, RescaleModes.None, false, null!],
        ["ties", 0.3, RescaleModes.None, false, new[] { 1.0, 0.5, 2.0 }],
        ["ties", 0.7, RescaleModes.L1, true, null!],
        ["ties", 0.3, RescaleModes.None, true, null!], // the TIES kernel, its chunks cut where the kept ties end
        ["ties", 0.3, RescaleModes.None, true, new[] { 2.0, 2.0, 2.0 }],
        ["magnitude_prune", 0.4, RescaleModes.None, false, null!],
        ["magnitude_prune", 0.4, RescaleModes.Inverse, false, new[] { 0.2, 0.3, 0.5 }],
        ["dare_ties", 0.5, RescaleModes.L1, false, null!],
        ["dare_ties", 0.5, RescaleModes.L1, true, new[] { 1.0, -0.5, 2.0 }],
    ];

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void ChunkedMergeEqualsTheWholeTensorRules(string method, double density, double rescale, bool normalize, double[]? weights)
    {
        var random = new Random(17);
        // Base on a grid of 2⁻¹⁰, task vectors on a grid of 2⁻¹² (|τ| ≤ 8·2⁻¹²): every fp32 difference is exact.
        float[] baseline = [.. Enumerable.Range(0, Length).Select(_ => random.Next(-64, 65) / 1024f)];
        float[][] models = [.. Enumerable.Range(0, 3).Select(_ => baseline.Select(b => b + (random.Next(-8, 9) / 4096f)).ToArray())];
        var parameters = new Dictionary<string, double> { ["lambda"] = 0.9, ["density"] = density, ["rescale"] = rescale };
        if (MergeMethods.Find(method).Parameters.Any(p => p.Name == "seed"))
        {
            parameters["seed"] = 5;
        }

        parameters["normalize"] = normalize ? 1 : 0;
        var options = new MergeOptions { MethodName = method, Parameters = parameters, Weights = weights };
        double[] w = weights ?? [1, 1, 1];

        float[] expected = WholeTensorReference(MergeMethods.Find(method) as TaskArithmeticFamily ?? throw new AssertFailedException(method),
            models, baseline, w, density, rescale, normalize, 0.9, new DareMask(5, TensorId(), density >= 1 ? 0 : 1 - density));
        float[] whole = Merge(options, models, baseline, Length);
        float[] chunked = Merge(options, models, baseline, Chunk);

        Assert.AreEqual(-1, FloatBits.FirstDifference(expected, whole, anyNaN: false), "one chunk");
        Assert.AreEqual(-1, FloatBits.FirstDifference(expected, chunked, anyNaN: false), "several chunks");
    }

    private static ulong TensorId() => TensorKey;

    /// <summary>mergekit's GTA over the whole tensor, with the whole-tensor primitives the engine's generic path uses.</summary>
    private static float[] WholeTensorReference(TaskArithmeticFamily method, float[][] models, float[] baseline, double[] weights,
        double density, double rescale, bool normalize, double lambda, DareMask mask)
    {
        float[][] tau = [.. models.Select(m => m.Select((x, e) => x - baseline[e]).ToArray())];
        for (int k = 0; k < tau.Length; k++)
        {
            switch (method.Sparsification)
            {
                case Sparsification.Magnitude:
                    Sparsify.Magnitude(tau[k], density, rescale);
                    break;
                case Sparsification.Random:
                    Sparsify.Random(tau[k], density, rescale, mask, k);
                    break;
            }
        }

        var output = new float[baseline.Length];
        Combine.TaskVectors(tau, weights, baseline, method.Consensus, normalize, lambda, output);
        return output;
    }

    private static float[] Merge(MergeOptions options, float[][] models, float[] baseline, int chunk)
    {
        using IMergeKernels kernels = MergeKernels.Create(MergeDevice.Cpu);
        var merger = new TensorMerger(options, models.Length, kernels, hasBase: true);
        var inputs = models.Select(m => TestTensor.Create(m, OnnxDataType.Float)).ToArray();
        var b = TestTensor.Create(baseline, OnnxDataType.Float);
        var chunks = new ChunkedTestTensors(inputs, b, chunk);
        for (int pass = 0; merger.NeedsPrepass(pass); pass++)
        {
            merger.Prepass(pass, TensorId(), chunks);
            merger.CompletePrepass(pass);
        }

        var sink = new OrderedSink(baseline.Length);
        merger.Merge(new TensorInfo(TensorId(), "t", [baseline.Length]), chunks, new float[Math.Min(chunk, baseline.Length)], sink);
        return sink.Values;
    }
}
