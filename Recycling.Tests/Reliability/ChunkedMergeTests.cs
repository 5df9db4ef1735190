using System.Runtime.InteropServices;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Reliability;

/// <summary>
/// The merge engine streams every tensor in chunks of 1 Mi elements (so tensors of any size merge in bounded memory);
/// this pins that a tensor of two chunks merges to exactly what the kernels give on the whole tensor at once, for
/// every method whose result could depend on chunking: DARE's mask (keyed by element index), TIES's sample, threshold,
/// elected-sign majority and exact ties (patched after the last chunk), SLERP and model stock's per-tensor Gram.
/// The values are multiples of 1/1024, so task vectors are exact and TIES meets many exact ties; the task vectors lean
/// negative, so the tensor's majority is negative and the ties take their negative entries.
/// </summary>
[TestClass]
public sealed class ChunkedMergeTests
{
    private const int Width = 1100; // 1,210,000 weights: chunks of 1,048,576 and 161,424

    private static string _root = null!;
    private static string[] _models = null!;

    [ClassInitialize]
    public static void CreateInputs(TestContext context)
    {
        _root = Directory.CreateTempSubdirectory("recycling-chunked-").FullName;
        var random = new Random(5);
        var baseWeights = Values(Width * Width, random, () => random.Next(-512, 512));
        var baseBias = Values(Width, random, () => random.Next(-512, 512));
        _models =
        [
            Save("base", baseWeights, baseBias),
            .. Enumerable.Range(1, 2).Select(m => Save($"ft{m}",
                [.. baseWeights.Select(b => b + (random.Next(-4, 3) / 1024f))],
                [.. baseBias.Select(b => b + (random.Next(-4, 3) / 1024f))])),
        ];
    }

    [ClassCleanup]
    public static void RemoveInputs() => Directory.Delete(_root, recursive: true);

    public static IEnumerable<object[]> Methods =>
    [
        ["average", new MergeOptions { Method = MergeMethod.Average, Weights = [1, 3] }],
        ["task arithmetic", new MergeOptions { Method = MergeMethod.TaskArithmetic, Lambda = 0.7 }],
        ["ties global", new MergeOptions { Method = MergeMethod.Ties, Density = 0.3 }],
        ["ties per tensor", new MergeOptions { Method = MergeMethod.Ties, Density = 0.3, TrimScope = TiesTrimScope.PerTensor }],
        ["dare ties", new MergeOptions { Method = MergeMethod.Dare, DropRate = 0.5, Seed = 11, DareCombination = DareCombination.Ties }],
        ["dare average", new MergeOptions { Method = MergeMethod.Dare, DropRate = 0.5, Seed = 11, DareCombination = DareCombination.Average }],
        ["model stock", new MergeOptions { Method = MergeMethod.ModelStock }],
        ["slerp", new MergeOptions { Method = MergeMethod.Slerp, T = 0.3 }],
    ];

    [TestMethod]
    [DynamicData(nameof(Methods))]
    public void ATensorOfSeveralChunksMergesAsTheWholeTensorDoes(string name, MergeOptions options)
    {
        var chosen = _models[1..];
        var output = Path.Combine(_root, name.Replace(' ', '-') + ".onnx");
        options = options with { Device = MergeDevice.Cpu };
        ModelMerger.Merge(new MergeRequest { Inputs = chosen, Base = options.RequiresBase ? _models[0] : null, Output = output, Options = options });

        var expected = WholeTensorMerge(chosen, options);
        using var merged = OnnxModel.Open(output);
        foreach (var (tensorName, values) in expected)
        {
            var actual = merged.Tensors.Single(t => t.Name == tensorName).ReadFloat32();
            Assert.AreEqual(values.Length, actual.Length);
            var differing = Enumerable.Range(0, values.Length).Count(i => BitConverter.SingleToInt32Bits(values[i]) != BitConverter.SingleToInt32Bits(actual[i]));
            Assert.AreEqual(0, differing, $"{name}: {tensorName} differs at {differing} of {values.Length} elements from the whole-tensor merge");
        }

        File.Delete(output);
    }

    [TestMethod]
    public void TiesExactTiesAcrossChunksTakeTheNegativeMajority()
    {
        // The premise of the TIES cases above: ties exist in every chunk and the weight's majority is negative.
        using var models = new DisposableList(_models.Select(OnnxModel.Open));
        var weights = models.Items.Select(m => m.Tensors.Single(t => t.Name == "w").ReadFloat32()).ToArray();
        long ties = 0, tally = 0;
        for (var i = 0; i < weights[0].Length; i++)
        {
            float t1 = weights[1][i] - weights[0][i], t2 = weights[2][i] - weights[0][i];
            var sum = t1 + t2;
            tally += Math.Sign(sum);
            ties += sum == 0 && t1 != 0 && i >= 1 << 20 ? 1 : 0;
        }

        Assert.IsTrue(tally < 0, $"tally {tally}");
        Assert.IsTrue(ties > 1000, $"{ties} exact ties in the last chunk");
    }

    /// <summary>The same merge by <see cref="TensorMerger"/> on whole tensors in memory, tensor by tensor.</summary>
    private static Dictionary<string, float[]> WholeTensorMerge(string[] inputs, MergeOptions options)
    {
        using var models = new DisposableList(inputs.Select(OnnxModel.Open));
        using var baseModel = options.RequiresBase ? OnnxModel.Open(_models[0]) : null;
        using var kernels = MergeKernels.Create(MergeDevice.Cpu);
        var merger = new TensorMerger(options, inputs.Length, kernels);
        var names = new[] { "w", "b" };
        var plan = Recycling.Onnx.Alignment.Aligner.Align(models.Items, baseModel);
        ulong IdOf(string name) => TensorId.FromKey(plan.Parameters.Single(p => p.Tensors[0].Name == name).Key);
        var values = names.ToDictionary(n => n, n => models.Items.Select(m => m.Tensors.Single(t => t.Name == n).ReadFloat32()).ToArray());
        var bases = names.ToDictionary(n => n, n => baseModel?.Tensors.Single(t => t.Name == n).ReadFloat32());
        var handles = new List<GCHandle>();
        try
        {
            unsafe TensorSource Pin(float[] array)
            {
                var handle = GCHandle.Alloc(array, GCHandleType.Pinned);
                handles.Add(handle);
                return new TensorSource((void*)handle.AddrOfPinnedObject(), array.Length, OnnxDataType.Float);
            }

            var sources = names.ToDictionary(n => n, n => (Inputs: values[n].Select(Pin).ToArray(), Base: bases[n] is { } b ? Pin(b) : (TensorSource?)null));
            for (var pass = 0; merger.NeedsPrepass(pass); pass++)
            {
                foreach (var n in names)
                {
                    merger.Prepass(pass, IdOf(n), sources[n].Inputs, sources[n].Base, []);
                }

                merger.CompletePrepass(pass);
            }

            return names.ToDictionary(n => n, n =>
            {
                var output = new float[values[n][0].Length];
                merger.Merge(IdOf(n), sources[n].Inputs, sources[n].Base, [], output);
                return output;
            });
        }
        finally
        {
            handles.ForEach(h => h.Free());
        }
    }

    private static float[] Values(int count, Random random, Func<int> next)
    {
        var values = new float[count];
        for (var i = 0; i < count; i++)
        {
            values[i] = next() / 1024f;
        }

        return values;
    }

    private static string Save(string name, float[] weights, float[] bias)
    {
        var graph = new GraphProto
        {
            Name = "gemm",
            Initializer = { ModelProtos.FloatTensor("w", weights, Width, Width), ModelProtos.FloatTensor("b", bias, Width) },
            Node = { new NodeProto { OpType = "Gemm", Name = "fc", Input = { "x", "w", "b" }, Output = { "y" }, Attribute = { new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 } } } },
        };
        graph.Input.Add(ModelProtos.FloatRow("x", Width));
        graph.Output.Add(ModelProtos.FloatRow("y", Width));
        var model = new ModelProto { IrVersion = 8, ProducerName = "chunked-merge-test", OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
        var path = Path.Combine(_root, name + ".onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private sealed class DisposableList(IEnumerable<OnnxModel> models) : IDisposable
    {
        public List<OnnxModel> Items { get; } = [.. models];

        public void Dispose() => Items.ForEach(m => m.Dispose());
    }
}
