using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;
using Recycling.Training;
using Recycling.Training.Recipes;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Training;

/// <summary>
/// LibTorch failing inside training reaches the user as one line naming the model (and the run, in a recipe) with
/// LibTorch's first line, never its C++ stack. The failure is real: a model that reshapes its logits to [1, -1] runs
/// on one sample (the label check passes) but gives LibTorch's cross-entropy one row for a batch of 4 labels.
/// </summary>
[TestClass]
public sealed class LibTorchErrorTests
{
    private const string LibTorchLine = "Expected input batch_size (1) to match target batch_size (4)";

    [TestMethod]
    public void FinetuneReportsLibTorchsFirstLineAndTheModel()
    {
        using var scratch = new Scratch();
        var model = BatchBreakingModel(Path.Combine(scratch.Path, "one row.onnx"));
        var train = TinyZoo.WriteSplit(Path.Combine(scratch.Path, "train"), 16, seed: 1);
        var output = Path.Combine(scratch.Path, "out.onnx");
        var (code, _, stderr) = Run(["finetune", model, "--train", train, "--batch-size", "4", "--epochs", "1", "--optimizer", "adamw", "-o", output]);
        Assert.AreEqual(1, code, stderr);
        var line = stderr.TrimEnd('\n', '\r');
        Assert.DoesNotContain("\n", line, "one line");
        StringAssert.StartsWith(line, $"error: {MessageText.Path(model)}: LibTorch failed while fine-tuning: {LibTorchLine}");
        Assert.DoesNotContain("Exception raised from", line);
        Assert.IsFalse(File.Exists(output), "nothing written");
    }

    [TestMethod]
    public void ARecipeRunNamesItselfWhenLibTorchFails()
    {
        using var scratch = new Scratch();
        var model = BatchBreakingModel(Path.Combine(scratch.Path, "broken.onnx"));
        var train = TinyZoo.WriteSplit(Path.Combine(scratch.Path, "train"), 16, seed: 1);
        var spec = new RunSpec { Kind = "test", Label = "broken seed 0", Models = new Dictionary<string, string> { ["model"] = model } };
        var store = new RunStore(Path.Combine(scratch.Path, "store"), 1);
        var e = Assert.ThrowsExactly<RecyclingException>(() => store.RunAll([spec], (_, output) =>
        {
            FineTuner.Run(new FineTuneOptions { Model = model, Train = train, Output = output, BatchSize = 4, Settings = new TrainingSettings { Optimizer = OptimizerKind.AdamW } });
            return new Dictionary<string, double>();
        }));
        StringAssert.StartsWith(e.Message, $"run 'broken seed 0': {MessageText.Path(model)}: LibTorch failed while fine-tuning: {LibTorchLine}");
        Assert.DoesNotContain("\n", e.Message);
    }

    /// <summary>x [N, 3, 8, 8] → Flatten → MatMul W [192, 4] → Reshape [1, -1] → logits: [1, 4N].</summary>
    private static string BatchBreakingModel(string path)
    {
        var graph = new GraphProto { Name = "g" };
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "N" });
        shape.Dim.AddRange(new long[] { 3, 8, 8 }.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        graph.Input.Add(new ValueInfoProto { Name = "x", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } } });
        var random = new Random(5);
        var weight = new TensorProto { Name = "w", DataType = 1, Dims = { 192, 4 } };
        weight.FloatData.AddRange(Enumerable.Range(0, 192 * 4).Select(_ => (float)((random.NextDouble() - 0.5) * 0.1)));
        graph.Initializer.Add(weight);
        graph.Initializer.Add(new TensorProto { Name = "one_row", DataType = 7, Dims = { 2 }, Int64Data = { 1, -1 } });
        graph.Node.Add(new NodeProto { OpType = "Flatten", Name = "flatten", Input = { "x" }, Output = { "flat" }, Attribute = { new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 1 } } });
        graph.Node.Add(new NodeProto { OpType = "MatMul", Name = "matmul", Input = { "flat", "w" }, Output = { "scores" } });
        graph.Node.Add(new NodeProto { OpType = "Reshape", Name = "reshape", Input = { "scores", "one_row" }, Output = { "logits" } });
        graph.Output.Add(new ValueInfoProto { Name = "logits" });
        var model = new ModelProto { IrVersion = 7, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 13 } } };
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }
}
