using System.Runtime.InteropServices;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Merging;

/// <summary>
/// The methods added from mergekit and PEFT beyond the reference cases (<see cref="ReferenceConfigTests"/>): the
/// selection they share checked against a sort, random methods reproducible, seed-dependent and independent of how
/// the engine chunks a tensor, and their refusals.
/// </summary>
[TestClass]
public sealed class MergekitMethodTests
{
    private const int Width = 1100; // 1,210,000 weights: more than one engine chunk

    [TestMethod]
    public void TopRangeKeepsThePositionsOfTheDescendingOrder()
    {
        var random = new Random(3);
        foreach (int n in new[] { 0, 1, 2, 7, 100, 1000 })
        {
            // Few distinct keys, so equal keys straddle every cut.
            uint[] keys = [.. Enumerable.Range(0, n).Select(_ => (uint)random.Next(0, 5) * 0x0001_0001u)];
            int[] order = [.. Enumerable.Range(0, n).OrderByDescending(e => keys[e]).ThenBy(e => e)];
            for (int from = 0; from <= n; from += Math.Max(1, n / 7))
            {
                for (int to = from; to <= n + 1; to += Math.Max(1, n / 5))
                {
                    var expected = new bool[n];
                    for (int q = from; q < Math.Min(to, n); q++)
                    {
                        expected[order[q]] = true;
                    }

                    CollectionAssert.AreEqual(expected, MergekitMasks.TopRange(keys, from, to), $"n {n}, [{from}, {to})");
                }
            }
        }
    }

    [TestMethod]
    public void TopKeepsWhatTheRegistrysMagnitudeTrimKeeps()
    {
        var random = new Random(8);
        float[] tau = [.. Enumerable.Range(0, 999).Select(_ => random.Next(-20, 21) / 8f)];
        foreach (long k in new long[] { 0, 1, 10, 500, 998, 999 })
        {
            float[] trimmed = (float[])tau.Clone();
            Sparsify.KeepLargest(trimmed, k);
            var keep = MergekitMasks.TopRange(MergekitMasks.MagnitudeKeys(tau), 0, k);
            // Zero entries may be kept by one and cleared by the other without a difference in value.
            for (int e = 0; e < tau.Length; e++)
            {
                Assert.AreEqual(trimmed[e], keep[e] ? tau[e] : 0f, $"k {k}, entry {e}");
            }

            Assert.AreEqual(k, keep.Count(x => x), $"k {k}");
        }
    }

    [TestMethod]
    public void BreadcrumbsDropsATensorWhoseOutlierCountRoundsToZeroAsMergekit()
    {
        float[] tau = [.. Enumerable.Range(1, 50).Select(i => (float)i)];
        Assert.IsFalse(MergekitMasks.Outliers(tau, 0.5, 0.01).Any(x => x), "⌊0.01·50⌋ = 0: mergekit's slice [n_bot:-0] is empty");
        var keep = MergekitMasks.Outliers(tau, 0.5, 0.1);
        // ⌊0.1·50⌋ = 5 largest dropped, ⌊0.5·50⌋ = 25 kept: values 21..45.
        CollectionAssert.AreEqual(Enumerable.Range(1, 50).Select(v => v >= 21 && v <= 45).ToArray(), keep);
    }

    [TestMethod]
    public void DellaKeepsLargerEntriesMoreOftenAndTheDensityOnAverage()
    {
        var random = new Random(4);
        const int rows = 200, columns = 500;
        float[] tau = [.. Enumerable.Range(0, rows * columns).Select(_ => (float)(random.NextDouble() - 0.5))];
        var probabilities = new double[tau.Length];
        var keep = MergekitMasks.Della(tau, [rows, columns], 0.4, 0.2, new DareMask(9, 77, 0).KeyFor(1), probabilities);
        Assert.AreEqual(0.4, keep.Average(x => x ? 1.0 : 0.0), 0.01);
        Assert.AreEqual(0.2, probabilities.Min(), 1e-12);
        Assert.AreEqual(0.6, probabilities.Max(), 1e-12);
        // Within each row, keep probability rises with |τ|: the kept fraction of the larger half is about 0.5, of the smaller 0.3.
        double large = 0, small = 0;
        for (int r = 0; r < rows; r++)
        {
            var row = Enumerable.Range(r * columns, columns).OrderBy(e => Math.Abs(tau[e])).ToArray();
            small += row.Take(columns / 2).Count(e => keep[e]);
            large += row.Skip(columns / 2).Count(e => keep[e]);
        }

        Assert.AreEqual(0.3, small / (rows * columns / 2), 0.01);
        Assert.AreEqual(0.5, large / (rows * columns / 2), 0.01);
    }

    public static IEnumerable<object[]> RandomMethods =>
    [
        ["della", new Dictionary<string, double> { ["density"] = 0.4, ["epsilon"] = 0.2 }],
        ["della_linear", new Dictionary<string, double> { ["density"] = 0.5, ["rescale"] = RescaleModes.Inverse }],
        ["breadcrumbs_ties", new Dictionary<string, double> { ["density"] = 0.5, ["gamma"] = 0.05 }],
        ["sce", new Dictionary<string, double> { ["select_topk"] = 0.3 }],
        ["arcee_fusion", new Dictionary<string, double>()],
        ["nuslerp", new Dictionary<string, double> { ["nuslerp_flatten"] = 0, ["nuslerp_row_wise"] = 1 }],
    ];

    [TestMethod]
    [DynamicData(nameof(RandomMethods))]
    public void ATensorOfSeveralChunksMergesAsTheWholeTensorAndReruns(string method, Dictionary<string, double> parameters)
    {
        var root = Directory.CreateTempSubdirectory("recycling-mergekit-").FullName;
        try
        {
            var random = new Random(12);
            float[] baseWeights = [.. Enumerable.Range(0, Width * Width).Select(_ => (float)(random.NextDouble() - 0.5))];
            string[] models = [.. Enumerable.Range(0, 3).Select(m => Save(root, $"m{m}", m == 0 ? baseWeights
                : [.. baseWeights.Select(b => b + (float)((random.NextDouble() - 0.5) * 0.01))]))];
            string[] inputs = method is "arcee_fusion" ? [models[1]] : models[1..];
            var options = new MergeOptions { MethodName = method, Parameters = parameters };
            string first = Path.Combine(root, "first.onnx"), second = Path.Combine(root, "second.onnx");
            foreach (var output in new[] { first, second })
            {
                ModelMerger.Merge(new MergeRequest { Inputs = inputs, Base = models[0], Output = output, Options = options, ExternalData = ExternalDataMode.Embedded });
            }

            using var a = OnnxModel.Open(first);
            using var b = OnnxModel.Open(second);
            float[] merged = a.Tensors.Single(t => t.Name == "w").ReadFloat32();
            CollectionAssert.AreEqual(merged, b.Tensors.Single(t => t.Name == "w").ReadFloat32(), "a rerun gives the same tensor");

            // The same tensor merged at once, as one chunk of its own shape.
            using var opened = new DisposableModels([.. inputs.Append(models[0]).Select(OnnxModel.Open)]);
            var plan = Recycling.Onnx.Alignment.Aligner.Align(opened.Items[..^1], opened.Items[^1]);
            var parameter = plan.Parameters.Single(p => p.Tensors[0].Name == "w");
            float[][] values = [.. opened.Items.Select(m => m.Tensors.Single(t => t.Name == "w").ReadFloat32())];
            var whole = WholeTensor(options, inputs.Length, new TensorInfo(TensorId.FromKey(parameter.Key), "w", [Width, Width]), values[..^1], values[^1]);
            int differing = Enumerable.Range(0, whole.Length).Count(i => BitConverter.SingleToInt32Bits(whole[i]) != BitConverter.SingleToInt32Bits(merged[i]));
            Assert.AreEqual(0, differing, $"{method}: {differing} of {whole.Length} entries differ from the whole-tensor merge");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [TestMethod]
    public void TheSeedChangesDellasMasksAndNothingElse()
    {
        var random = new Random(2);
        float[] b = [.. Enumerable.Range(0, 4000).Select(_ => (float)random.NextDouble())];
        float[][] x = [[.. b.Select(v => v + (float)random.NextDouble() * 0.1f)], [.. b.Select(v => v - (float)random.NextDouble() * 0.1f)]];
        var tensor = new TensorInfo(42, "t", [40, 100]);
        float[] Run(double seed) => WholeTensor(new MergeOptions { MethodName = "della", Parameters = new Dictionary<string, double> { ["density"] = 0.5, ["seed"] = seed } }, 2, tensor, x, b);
        CollectionAssert.AreEqual(Run(5), Run(5));
        Assert.IsTrue(Run(5).Zip(Run(6)).Count(p => p.First != p.Second) > 1000);
    }

    [TestMethod]
    public void MethodsRefuseWhatTheyCannotMerge()
    {
        string Refusal(string method, int inputs, Dictionary<string, double>? parameters = null) =>
            Assert.ThrowsExactly<RecyclingException>(() =>
                new MergeOptions { MethodName = method, Parameters = parameters }.Validate(inputs)).Message;

        StringAssert.Contains(Refusal("passthrough", 2), "passthrough");
        StringAssert.Contains(Refusal("nearswap", 2), "nearswap");
        StringAssert.Contains(Refusal("arcee_fusion", 2), "arcee_fusion");
        StringAssert.Contains(Refusal("nuslerp", 3), "nuslerp");
        StringAssert.Contains(Refusal("della", 2, new Dictionary<string, double> { ["density"] = 0.9, ["epsilon"] = 0.2 }), "epsilon");
        StringAssert.Contains(Refusal("breadcrumbs", 2, new Dictionary<string, double> { ["gamma"] = 1.5 }), "gamma");
        StringAssert.Contains(Refusal("karcher", 2, new Dictionary<string, double> { ["max_iter"] = 2.5 }), "max_iter");
    }

    private static float[] WholeTensor(MergeOptions options, int inputCount, TensorInfo tensor, float[][] inputs, float[] baseline)
    {
        using var kernels = MergeKernels.Create(MergeDevice.Cpu);
        var merger = new TensorMerger(options, inputCount, kernels, hasBase: true);
        var handles = new List<GCHandle>();
        try
        {
            unsafe TensorSource Pin(float[] array)
            {
                var handle = GCHandle.Alloc(array, GCHandleType.Pinned);
                handles.Add(handle);
                return new TensorSource((void*)handle.AddrOfPinnedObject(), array.Length, OnnxDataType.Float);
            }

            var output = new float[baseline.Length];
            var sink = new ArraySink(output);
            merger.Merge(tensor, new WholeTensors([.. inputs.Select(Pin)], Pin(baseline), []), new float[output.Length], sink);
            return output;
        }
        finally
        {
            handles.ForEach(h => h.Free());
        }
    }

    private sealed class ArraySink(float[] output) : TensorMerger.ITensorSink
    {
        public void Write(long offset, ReadOnlySpan<float> values) => values.CopyTo(output.AsSpan((int)offset));

        public void Patch(long index, float value) => output[index] = value;
    }

    private sealed class DisposableModels(OnnxModel[] models) : IDisposable
    {
        public OnnxModel[] Items { get; } = models;

        public void Dispose()
        {
            foreach (var model in Items)
            {
                model.Dispose();
            }
        }
    }

    private static string Save(string root, string name, float[] weights)
    {
        var graph = new GraphProto
        {
            Name = "matmul",
            Initializer =
            {
                new TensorProto { Name = "w", DataType = (int)OnnxDataType.Float, Dims = { Width, Width }, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(weights.AsSpan())) },
            },
            Node = { new NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "w" }, Output = { "y" } } },
        };
        graph.Input.Add(ModelProtos.FloatRow("x", Width));
        graph.Output.Add(ModelProtos.FloatRow("y", Width));
        var model = new ModelProto { IrVersion = 8, ProducerName = "mergekit-method-test", OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
        var path = Path.Combine(root, name + ".onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }
}
