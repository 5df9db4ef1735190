using System.Globalization;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// sce, nuslerp, multislerp, karcher, model_stock's filter_wise, ram, ramplus_tl and arcee_fusion merged chunk by chunk (<see cref="StreamedMethod"/>) equal, bit for bit, their
/// whole-tensor merges as they were before they streamed (<see cref="WholeTensorMerges"/>), at any chunk size: data on
/// a coarse grid (ties across chunks, task vectors of 0, entries where every model agrees), with and without NaN, ±0
/// and ±∞, one-element and empty tensors.
/// </summary>
[TestClass]
public sealed class StreamedMethodTests
{
    private const ulong TensorKey = 0x57EA;

    private static readonly int[] ChunkSizes = [1, 5, 64, 1000, 4099, int.MaxValue];

    public static IEnumerable<object[]> Cases =>
    [
        ["sce", new long[] { 20_011 }, "select_topk=0.3", true, "grid"],
        ["sce", new long[] { 97, 103 }, "select_topk=0.9", true, "specials"],
        ["sce", new long[] { 5003 }, "select_topk=1", true, "grid"],
        ["sce", new long[] { 5003 }, "select_topk=0", true, "grid"],
        ["sce", new long[] { 4099 }, "select_topk=0.5", true, "specials"],
        ["sce", new long[] { 1 }, "select_topk=0.5", true, "grid"],
        ["sce", new long[] { 1 }, "select_topk=1", true, "grid"],
        ["sce", new long[] { 0 }, "select_topk=0.5", true, "grid"],
        ["sce", new long[] { 20_011 }, "select_topk=0.3", true, "smooth"],
        ["sce", new long[] { 3001 }, "select_topk=1", true, "smooth"],
        ["nuslerp", new long[] { 20_011 }, "weight=1|3", false, "smooth"],
        ["nuslerp", new long[] { 20_011 }, "weight=1|3", true, "grid"],
        ["nuslerp", new long[] { 20_011 }, "weight=0.3|0.7", true, "smooth"],
        ["nuslerp", new long[] { 97, 103 }, "weight=1|2,nuslerp_flatten=0", true, "smooth"],
        ["nuslerp", new long[] { 11, 13, 17 }, "weight=1|2,nuslerp_flatten=0,nuslerp_row_wise=1", true, "smooth"],
        ["nuslerp", new long[] { 1031, 1 }, "weight=2|1,nuslerp_flatten=0", false, "smooth"],
        ["nuslerp", new long[] { 64, 65 }, "weight=1|1,nuslerp_flatten=0", true, "specials"],
        ["nuslerp", new long[] { 20_011 }, "weight=1|3", false, "spread"],
        ["nuslerp", new long[] { 1 }, "weight=1|2", true, "smooth"],
        ["nuslerp", new long[] { 0 }, "weight=1|2", true, "smooth"],
        ["multislerp", new long[] { 20_011 }, "weight=1|2|3", false, "smooth"],
        ["multislerp", new long[] { 97, 103 }, "weight=0.2|0.3|0.5", true, "smooth"],
        ["multislerp", new long[] { 4099 }, "weight=1|-0.5|2,normalize_weights=0,eps=1e-6", true, "smooth"],
        ["multislerp", new long[] { 3001 }, "weight=1|1|1", true, "specials"],
        ["multislerp", new long[] { 4099 }, "weight=1|2|3", true, "grid"],
        ["multislerp", new long[] { 20_011 }, "weight=1|2|3", true, "spread"],
        ["multislerp", new long[] { 1 }, "weight=1|2|3", false, "smooth"],
        ["model_stock", new long[] { 97, 103 }, "filter_wise=1", true, "smooth"],
        ["model_stock", new long[] { 3, 5, 1031 }, "filter_wise=1", true, "grid"],
        ["model_stock", new long[] { 4099 }, "filter_wise=1", true, "smooth"],
        ["model_stock", new long[] { 2003, 1 }, "filter_wise=1", true, "spread"],
        ["model_stock", new long[] { 61, 67 }, "filter_wise=1", true, "specials"],
        ["model_stock", new long[] { 1 }, "filter_wise=1", true, "smooth"],
        ["model_stock", new long[] { 0, 5 }, "filter_wise=1", true, "smooth"],
        ["ram", new long[] { 20_011 }, "epsilon=0.01", true, "grid"],
        ["ram", new long[] { 97, 103 }, "epsilon=0", true, "specials"],
        ["ram", new long[] { 1 }, "epsilon=1e-5", true, "smooth"],
        ["ramplus_tl", new long[] { 20_011 }, "epsilon=0.01", true, "grid"],
        ["ramplus_tl", new long[] { 4099 }, "epsilon=0.001,r=0.5,alpha=0.9", true, "smooth"],
        ["ramplus_tl", new long[] { 61, 67 }, "epsilon=0", true, "specials"],
        ["ramplus_tl", new long[] { 1 }, "epsilon=1e-5", true, "grid"],
        ["ramplus_tl", new long[] { 0 }, "epsilon=1e-5", true, "grid"],
        ["karcher", new long[] { 20_011 }, "max_iter=10,tol=1e-5", false, "smooth"],
        ["karcher", new long[] { 97, 103 }, "max_iter=10,tol=1e-5", true, "smooth"],
        ["karcher", new long[] { 4099 }, "max_iter=30,tol=1e-13", true, "smooth"],
        ["karcher", new long[] { 4099 }, "max_iter=0,tol=1e-5", false, "smooth"],
        ["karcher", new long[] { 3001 }, "max_iter=10,tol=1e-5", false, "specials"],
        ["karcher", new long[] { 4099 }, "max_iter=10,tol=1e-5", true, "grid"],
        ["karcher", new long[] { 20_011 }, "max_iter=10,tol=1e-5", false, "spread"],
        ["karcher", new long[] { 61, 67 }, "max_iter=50,tol=1e-12", true, "spread"],
        ["karcher", new long[] { 1 }, "max_iter=10,tol=1e-5", false, "smooth"],
        ["karcher", new long[] { 0 }, "max_iter=10,tol=1e-5", true, "smooth"],
        ["arcee_fusion", new long[] { 20_011 }, "", true, "smooth"],
        ["arcee_fusion", new long[] { 20_011 }, "", true, "grid"],
        ["arcee_fusion", new long[] { 97, 103 }, "", true, "smooth"],
        ["arcee_fusion", new long[] { 97, 103 }, "", true, "grid"],
        ["arcee_fusion", new long[] { 3, 5, 1031 }, "", true, "specials"],
        ["arcee_fusion", new long[] { 61, 67 }, "", true, "specials"],
        ["arcee_fusion", new long[] { 4099 }, "", true, "specials"],
        ["arcee_fusion", new long[] { 1031, 1 }, "", true, "smooth"],
        ["arcee_fusion", new long[] { 70_001 }, "", true, "specials"],
        ["arcee_fusion", new long[] { 2, 65_537 }, "", true, "grid"],
        ["arcee_fusion", new long[] { 70_001, 2 }, "", true, "grid"],
        ["arcee_fusion", new long[] { 66_001, 1 }, "", true, "specials"],
        ["arcee_fusion", new long[] { 65_536, 3 }, "", true, "smooth"],
        ["arcee_fusion", new long[] { 1 }, "", true, "smooth"],
        ["arcee_fusion", new long[] { }, "", true, "grid"],
        ["arcee_fusion", new long[] { 0 }, "", true, "smooth"],
        ["arcee_fusion", new long[] { 0, 5 }, "", true, "smooth"],
    ];

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void StreamedMergeEqualsTheWholeTensorMerge(string method, long[] shape, string parameters, bool withBase, string data)
    {
        int length = (int)shape.Aggregate(1L, (a, b) => a * b);
        int models = method switch { "nuslerp" => 2, "arcee_fusion" => 1, _ => 3 };
        var (inputs, baseline) = Data(length, models, seed: length + models, data);
        var options = Options(method, parameters, models);
        var tensor = new TensorInfo(TensorKey, "t", shape);
        float[] expected = WholeTensor(options, tensor, inputs, withBase ? baseline : null);
        foreach (int chunk in ChunkSizes)
        {
            float[] actual = Streamed(options, tensor, inputs, withBase ? baseline : null, chunk);
            Assert.AreEqual(-1, FloatBits.FirstDifference(expected, actual, anyNaN: true), $"{method} {string.Join('×', shape)} {parameters}, chunks of {chunk}");
        }
    }

    [TestMethod]
    public void SceWithoutVarianceKeepsNothingAtAnyChunkSize()
    {
        // Every model equal: every variance is 0, so int(k·nz) = 0 and the task vectors are all dropped.
        float[] baseline = [.. Enumerable.Range(0, 777).Select(e => e / 512f)];
        float[] model = [.. baseline.Select((b, e) => b + ((e % 5) - 2) / 64f)];
        var options = Options("sce", "select_topk=0.5", 3);
        var tensor = new TensorInfo(TensorKey, "t", [777]);
        float[] expected = WholeTensor(options, tensor, [model, model, model], baseline);
        CollectionAssert.AreEqual(baseline, expected, "the reference keeps the base");
        foreach (int chunk in ChunkSizes)
        {
            Assert.AreEqual(-1, FloatBits.FirstDifference(expected, Streamed(options, tensor, [model, model, model], baseline, chunk), anyNaN: true), $"chunks of {chunk}");
        }
    }

    [TestMethod]
    public void ArceeFusionKeepsImportancesTiedAtTheThresholdAtAnyChunkSize()
    {
        // Every row the same: one KL, importances a·{0, 0, 0, 0, 1, 1, 1.5, 3} (a = KL/256), so the quartiles are 0, 0
        // and a, the threshold 1.5·a exactly (scaling by 1/256 is exact), and a quarter of the entries tie with it.
        float[] steps = [0, 0, 0, 0, 1, 1, 1.5f, 3];
        const int rows = 500;
        float[] baseline = [.. Enumerable.Range(0, rows * steps.Length).Select(e => ((e % steps.Length) - 3) / 64f)];
        float[] model = [.. baseline.Select((b, e) => b + (steps[e % steps.Length] / 256))];
        var options = Options("arcee_fusion", "", 1);
        var tensor = new TensorInfo(TensorKey, "tied", [rows, steps.Length]);
        float[] expected = WholeTensor(options, tensor, [model], baseline);
        Assert.AreEqual(2 * rows, expected.Where((v, e) => v != baseline[e]).Count(), "the reference keeps the entries at and above the threshold");
        foreach (int chunk in ChunkSizes)
        {
            Assert.AreEqual(-1, FloatBits.FirstDifference(expected, Streamed(options, tensor, [model], baseline, chunk), anyNaN: true), $"chunks of {chunk}");
        }
    }

    /// <summary>
    /// arcee_fusion's memory does not grow with the tensor: the whole-tensor merge allocated the inputs, the base and the
    /// importances twice (28 bytes an entry); streamed, a merge allocates under a byte an entry beyond its pooled chunk
    /// buffers, whether it keeps every row's scalars (600 rows) or only those of the rows chunks split (300,000 rows).
    /// </summary>
    [TestMethod]
    [DataRow(600L, 2000L)]
    [DataRow(300_000L, 4L)]
    public void ArceeFusionAllocatesLessThanAByteAnEntry(long rows, long row)
    {
        int length = (int)(rows * row);
        var (models, baseline) = Data(length, 1, seed: 5, "smooth");
        var options = Options("arcee_fusion", "", 1);
        var tensor = new TensorInfo(TensorKey, "large", [rows, row]);
        const int chunk = 1 << 16;
        using IMergeKernels kernels = MergeKernels.Create(MergeDevice.Cpu);
        var merger = new TensorMerger(options, 1, kernels, hasBase: true);
        var chunks = new ChunkedTestTensors([TestTensor.Create(models[0], OnnxDataType.Float)], TestTensor.Create(baseline, OnnxDataType.Float), chunk);
        var buffer = new float[chunk];
        merger.Merge(tensor, chunks, buffer, new OrderedSink(length)); // pools and JIT warmed
        var sink = new OrderedSink(length);
        long before = GC.GetAllocatedBytesForCurrentThread();
        merger.Merge(tensor, chunks, buffer, sink);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.AreEqual(length, sink.Written);
        Assert.IsTrue(allocated < length, $"{allocated} bytes allocated merging {length} entries");
    }

    [TestMethod]
    public void MultislerpOfAntipodalInputsFailsBeforeWritingAnything()
    {
        float[] x = [.. Enumerable.Range(0, 300).Select(e => (e % 7) - 3f)];
        float[] minusX = [.. x.Select(v => -v)];
        var options = Options("multislerp", "weight=1|1", 2);
        var tensor = new TensorInfo(TensorKey, "odd", [300]);
        var reference = Assert.ThrowsExactly<RecyclingException>(() => WholeTensor(options, tensor, [x, minusX], null));
        foreach (int chunk in ChunkSizes)
        {
            var sink = new OrderedSink(300);
            var error = Assert.ThrowsExactly<RecyclingException>(() => Streamed(options, tensor, [x, minusX], null, chunk, sink));
            Assert.AreEqual(reference.Message, error.Message);
            Assert.AreEqual(0, sink.Written, "nothing written before the error");
        }
    }

    private static MergeOptions Options(string method, string parameters, int models)
    {
        var global = new Dictionary<string, double>();
        var perModel = Enumerable.Range(0, models).Select(_ => new Dictionary<string, double>()).ToList();
        foreach (string pair in parameters.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] parts = pair.Split('=');
            string[] values = parts[1].Split('|');
            if (values.Length == 1)
            {
                global[parts[0]] = double.Parse(values[0], CultureInfo.InvariantCulture);
                continue;
            }

            for (int k = 0; k < values.Length; k++)
            {
                perModel[k][parts[0]] = double.Parse(values[k], CultureInfo.InvariantCulture);
            }
        }

        return new MergeOptions { MethodName = method, Parameters = global, ModelParameters = perModel };
    }

    /// <summary>
    /// <c>grid</c>: base on a grid of 2⁻¹⁰, task vectors on a grid of 2⁻⁸ (many ties and zeros; sums of squares exact in
    /// fp64), every model equal to the base at 1 entry in 10, every model equal to each other at another 1 in 10;
    /// <c>specials</c>: the same with NaN, ±0, ±∞; <c>smooth</c>: continuous values near one base (nearly colinear
    /// models, as fine-tunes are); <c>spread</c>: models at unequal, wide angles from the base (karcher takes many steps).
    /// </summary>
    private static (float[][] Models, float[] Baseline) Data(int length, int models, int seed, string kind)
    {
        bool specials = kind == "specials";
        if (kind is "smooth" or "spread")
        {
            var noise = new Random(seed);
            float[] b = [.. Enumerable.Range(0, length).Select(_ => (noise.NextSingle() - 0.5f) / 8)];
            return ([.. Enumerable.Range(0, models).Select(i =>
            {
                float scale = kind == "smooth" ? 1 / 64f : (i + 1) * (i + 1) / 16f;
                return b.Select(x => x + ((noise.NextSingle() - 0.5f) * scale)).ToArray();
            })], b);
        }

        var random = new Random(seed);
        float[] baseline = [.. Enumerable.Range(0, length).Select(_ => random.Next(-64, 65) / 1024f)];
        float[][] inputs = [.. Enumerable.Range(0, models).Select(_ => new float[length])];
        for (int e = 0; e < length; e++)
        {
            int which = random.Next(10);
            float shared = baseline[e] + (random.Next(-6, 7) / 256f);
            for (int i = 0; i < models; i++)
            {
                float value = which == 0 ? baseline[e] : which == 1 ? shared : baseline[e] + (random.Next(-6, 7) / 256f);
                inputs[i][e] = specials ? Special(random) ?? value : value;
            }
        }

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

    private static WholeTensorMethod Reference(MergeOptions options, int models)
    {
        var arguments = options.Arguments(models);
        double[] w = arguments.Method.Parameters.Any(p => p.Name == "weight") ? arguments.PerModel("weight") : [];
        switch (arguments.Method.Name)
        {
            case "sce":
                return new WholeTensorMerges.Sce(arguments["select_topk"]);
            case "nuslerp":
                return new WholeTensorMerges.NuSlerp(Math.Abs(w[0] + w[1]) < 1e-6 ? 0.5 : w[1] / (w[0] + w[1]),
                    arguments.Flag("nuslerp_row_wise"), arguments.Flag("nuslerp_flatten"));
            case "multislerp":
                double sum = w.Sum();
                return new WholeTensorMerges.MultiSlerp(arguments.Flag("normalize_weights") ? [.. w.Select(x => x / sum)] : w, arguments["eps"]);
            case "ram":
                return new WholeTensorMerges.Ram(arguments["epsilon"], null);
            case "ramplus_tl":
                double r = arguments["r"], alpha = arguments["alpha"], epsilon = arguments["epsilon"];
                return new WholeTensorMerges.Ram(epsilon, (shared, only) =>
                    [.. shared.Select((s, i) => 1 + r * Math.Clamp(s / Math.Max(only[i], epsilon), 0, alpha))]);
            case "model_stock":
                return new WholeTensorMerges.ModelStockRowWise();
            case "arcee_fusion":
                return new WholeTensorMerges.ArceeFusion();
            default:
                return new WholeTensorMerges.Karcher((int)arguments["max_iter"], arguments["tol"]);
        }
    }

    private static float[] WholeTensor(MergeOptions options, TensorInfo tensor, float[][] models, float[]? baseline)
    {
        var inputs = models.Select(m => TestTensor.Create(m, OnnxDataType.Float)).ToArray();
        var b = baseline is null ? null : TestTensor.Create(baseline, OnnxDataType.Float);
        var sink = new OrderedSink(models[0].Length);
        Reference(options, models.Length).Merge(tensor, new WholeTensors(TestTensor.Sources(inputs), b?.Source, []),
            new float[Math.Max(1, models[0].Length)], sink);
        Assert.AreEqual(models[0].Length, sink.Written);
        return sink.Values;
    }

    private static float[] Streamed(MergeOptions options, TensorInfo tensor, float[][] models, float[]? baseline, int chunk, OrderedSink? sink = null)
    {
        int length = models[0].Length;
        chunk = Math.Max(1, Math.Min(chunk, length));
        using IMergeKernels kernels = MergeKernels.Create(MergeDevice.Cpu);
        var merger = new TensorMerger(options, models.Length, kernels, hasBase: baseline is not null);
        Assert.IsFalse(merger.NeedsPrepass(0));
        var chunks = new ChunkedTestTensors([.. models.Select(m => TestTensor.Create(m, OnnxDataType.Float))],
            baseline is null ? null : TestTensor.Create(baseline, OnnxDataType.Float), chunk);
        sink ??= new OrderedSink(length);
        merger.Merge(tensor, chunks, new float[chunk], sink);
        Assert.AreEqual(length, sink.Written, "every element written once, in order");
        return sink.Values;
    }
}
