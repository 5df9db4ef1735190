using Google.Protobuf;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx.Numpy;
using Recycling.Onnx.Proto;
using Recycling.Tests.Zoo;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.MLNet;

/// <summary>
/// Exports with a fixed batch dimension are scored in batches: a torch export at batch 1 whose Reshape bakes the batch
/// in ([1, -1]) runs as a dynamic-batch copy and gives PyTorch's per-sample logits (1e-5) and the same scores as the
/// original fed one sample per call; a graph that mixes the samples of a batch (a mean over the batch axis) or cannot
/// take another batch (Flatten at axis 0) is detected on its first samples and run one sample per call instead.
/// </summary>
[TestClass]
public sealed class FixedBatchScoringTests
{
    private static string Fixture(string file) => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", file);

    [TestMethod]
    public void TorchExportAtBatchOneRunsInBatches()
    {
        var reference = NpyFile.ReadNpz(Fixture("heads.npz"));
        var expected = reference["fixed_logits"].ToSingleArray();
        var data = new Dataset("fixed", reference["fixed_input"].ToSingleArray(), [1, 8, 8], new int[32]);
        using var batched = OnnxScorer.Open(Fixture("fixed_batch.onnx"), new ScoringOptions { Threads = 2, BatchSize = 16 });
        var logits = batched.Run(data, "logits");
        Assert.IsNull(batched.FedBatch, "runs in batches of 16");
        Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(logits.Data, expected), "PyTorch, one sample at a time");
        Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(logits.Data, PerSample(Fixture("fixed_batch.onnx"), data, "logits")), "the original, one sample per call");

        // In memory (merged candidates) and with an internal value promoted (probe features) alike.
        using var fromBytes = OnnxScorer.FromBytes(File.ReadAllBytes(Fixture("fixed_batch.onnx")), "fixed", new ScoringOptions { Threads = 1, BatchSize = 5 }, ["/MaxPool_output_0"]);
        var both = fromBytes.Run(data, ["logits", "/MaxPool_output_0"]);
        Assert.IsNull(fromBytes.FedBatch);
        Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(both["logits"].Data, expected));
        Assert.AreEqual(64, both["/MaxPool_output_0"].Columns);
    }

    [TestMethod]
    public void GraphsThatCannotBatchRunOneSampleAtATime()
    {
        using var scratch = new Recycling.Tests.Training.Scratch();
        var random = new Random(3);
        var data = new Dataset("d", [.. Enumerable.Range(0, 7 * 4).Select(_ => random.NextSingle())], [4], new int[7]);
        foreach (var (name, nodes) in new (string, NodeProto[])[]
        {
            // y = x + (x − mean over the batch): x for a batch of one, other values for a batch of several.
            ("mixes", [
                new NodeProto { OpType = "ReduceMean", Input = { "x" }, Output = { "mean" }, Attribute = { Ints("axes", 0) } },
                new NodeProto { OpType = "Sub", Input = { "x", "mean" }, Output = { "centred" } },
                new NodeProto { OpType = "Add", Input = { "x", "centred" }, Output = { "y" } },
            ]),
            // [1, 4] for a batch of one, [1, 4·B] for B.
            ("flattens", [new NodeProto { OpType = "Flatten", Input = { "x" }, Output = { "y" }, Attribute = { new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 } } }]),
        })
        {
            var path = Path.Combine(scratch.Path, name + ".onnx");
            var graph = new GraphProto { Name = name, Input = { Value("x") }, Output = { Value("y") } };
            graph.Node.Add(nodes);
            File.WriteAllBytes(path, new ModelProto { IrVersion = 7, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 13 } } }.ToByteArray());
            using var scorer = OnnxScorer.Open(path, new ScoringOptions { Threads = 1, BatchSize = 4 });
            var y = scorer.Run(data, "y");
            Assert.AreEqual(1L, scorer.FedBatch, name);
            CollectionAssert.AreEqual(data.Values, y.Data, name);
        }
    }

    private static AttributeProto Ints(string name, params long[] values) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { values } };

    private static ValueInfoProto Value(string name) => new()
    {
        Name = name,
        Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = 1 }, new TensorShapeProto.Types.Dimension { DimValue = 4 } } } } },
    };

    /// <summary>The model run by ONNX Runtime one sample per call, fed here without the scorer.</summary>
    internal static float[] PerSample(string model, Dataset data, string output)
    {
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(model);
        var input = session.InputMetadata.Single();
        var result = new List<float>();
        for (var i = 0; i < data.Count; i++)
        {
            using var value = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(data.Sample(i).ToArray(), [.. input.Value.Dimensions.Select(d => (long)d)]);
            using var runOptions = new Microsoft.ML.OnnxRuntime.RunOptions();
            using var outputs = session.Run(runOptions, [input.Key], [value], [output]);
            result.AddRange(outputs[0].GetTensorDataAsSpan<float>().ToArray());
        }

        return [.. result];
    }
}
