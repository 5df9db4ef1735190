using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Onnx.Proto;
using Recycling.Tests.Zoo;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Training;

/// <summary>
/// `recycle finetune` and `recycle fisher` end to end: the CLI trains an export in file order, writes it, and ONNX
/// Runtime on the written file lands on the logits PyTorch reached with the same steps (1e-4 relative for SGD, 1e-3
/// for AdamW); untrained tensors and the graph stay byte-identical; unsupported ops are named before training.
/// </summary>
[TestClass]
public sealed class FinetuneCommandTests
{
    private static string FixturePath(string file) => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", file);

    [TestMethod]
    [DataRow("mlp", "sgd", "train")]
    [DataRow("mlp", "adamw", "train")]
    [DataRow("cnn_bn", "sgd:bntrain", "train")]
    [DataRow("cnn_bn", "sgd:bnfrozen", "frozen")]
    [DataRow("cnn_bn", "adamw:bntrain", "train")]
    public void OneEpochInFileOrderLandsOnPyTorchLogits(string name, string run, string batchNorm)
    {
        using var scratch = new Scratch();
        var reference = NpyFile.ReadNpz(FixturePath($"{name}.npz"));
        var data = WriteSplit(scratch.Path, reference);
        var output = Path.Combine(scratch.Path, "out.onnx");
        var adamw = run.StartsWith("adamw", StringComparison.Ordinal);
        string[] optimizer = adamw ? ["--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.01"] : ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9"];
        var (code, stdout, stderr) = Run(["finetune", FixturePath($"{name}.onnx"), "-d", data, "--epochs", "1", "--batch-size", "4", "--no-shuffle",
            "--batchnorm", batchNorm, "-o", output, .. optimizer]);
        Assert.AreEqual(0, code, stderr + stdout);

        var heldout = new Dictionary<string, TorchSharp.torch.Tensor> { ["input"] = ToTorch(reference["heldout:input"]) };
        var logits = RunOrt(output, heldout)["logits"];
        Assert.IsLessThanOrEqualTo(adamw ? 1e-3 : 1e-4, RelativeGap(logits, reference[$"trained:{run}"].ToSingleArray()), $"{name} {run}");

        using var source = OnnxModel.Open(FixturePath($"{name}.onnx"));
        using var trained = OnnxModel.Open(output);
        Assert.AreEqual(source.Proto.Graph.Node.ToString(), trained.Proto.Graph.Node.ToString(), "the graph is unchanged");
        Assert.IsTrue(trained.Metadata.ContainsKey("recycling.finetune.parent_sha256"));
        foreach (var tensor in source.Tensors)
        {
            var after = trained.Tensors.Single(t => t.Path == tensor.Path);
            var changed = !tensor.ReadRawBytes().AsSpan().SequenceEqual(after.ReadRawBytes());
            var stat = tensor.Name.Contains("running", StringComparison.Ordinal);
            var weight = tensor.Kind == TensorKind.Initializer && tensor.DataType == OnnxDataType.Float;
            Assert.AreEqual(stat ? batchNorm == "train" : weight, changed, $"{tensor.Path} changed: {changed}");
        }
    }

    [TestMethod]
    public void FrozenTensorsKeepTheirBytesAndSeedsRepeat()
    {
        using var scratch = new Scratch();
        var data = WriteSplit(scratch.Path, NpyFile.ReadNpz(FixturePath("cnn_bn.npz")));
        string[] Args(string output) => ["finetune", FixturePath("cnn_bn.onnx"), "-d", data, "--epochs", "2", "--batch-size", "5", "--seed", "3",
            "--optimizer", "adam", "--lr", "0.01", "--freeze", "^conv", "-o", output, "--json"];
        var first = Path.Combine(scratch.Path, "a.onnx");
        var second = Path.Combine(scratch.Path, "b.onnx");
        Assert.AreEqual(0, Run(Args(first)).Code);
        Assert.AreEqual(0, Run(Args(second)).Code);
        using var source = OnnxModel.Open(FixturePath("cnn_bn.onnx"));
        using var a = OnnxModel.Open(first);
        using var b = OnnxModel.Open(second);
        foreach (var tensor in source.Tensors)
        {
            var bytesA = a.Tensors.Single(t => t.Path == tensor.Path).ReadRawBytes();
            CollectionAssert.AreEqual(bytesA, b.Tensors.Single(t => t.Path == tensor.Path).ReadRawBytes(), $"{tensor.Name}: same seed, same values");
            var trains = tensor.Kind == TensorKind.Initializer && !tensor.Name.StartsWith("conv", StringComparison.Ordinal);
            Assert.AreEqual(!trains, tensor.ReadRawBytes().AsSpan().SequenceEqual(bytesA), tensor.Path);
        }
    }

    [TestMethod]
    public void UnsupportedOpsAreNamedBeforeTraining()
    {
        using var scratch = new Scratch();
        var model = Path.Combine(scratch.Path, "det.onnx");
        var graph = new GraphProto { Name = "g" };
        graph.Input.Add(FloatInput("x", 2, 3, 3));
        graph.Output.Add(FloatInput("y", 2));
        graph.Node.Add(new NodeProto { OpType = "Det", Name = "the_det", Input = { "x" }, Output = { "y" } });
        graph.Node.Add(new NodeProto { OpType = "Frobnicate", Domain = "com.example", Name = "custom", Input = { "y" }, Output = { "z" } });
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 13 }, new OperatorSetIdProto { Domain = "com.example", Version = 1 } } };
        File.WriteAllBytes(model, proto.ToByteArray());

        var (code, stdout, _) = Run(["finetune", "--check", model]);
        Assert.AreEqual(1, code);
        StringAssert.Contains(stdout, "Det (domain ai.onnx, opset 13) at node 'the_det' (#0): not supported");
        StringAssert.Contains(stdout, "Frobnicate (domain com.example, opset 1) at node 'custom' (#1): not supported");

        var (trainCode, _, stderr) = Run(["finetune", model, "-d", Path.Combine(ZooPaths.ModelsDirectory, "data", "val"), "-o", Path.Combine(scratch.Path, "o.onnx")]);
        Assert.AreEqual(1, trainCode);
        StringAssert.Contains(stderr, "Det (domain ai.onnx, opset 13)");
        Assert.IsFalse(File.Exists(Path.Combine(scratch.Path, "o.onnx")));
    }

    [TestMethod]
    public void BadArgumentsEndInOneLine()
    {
        using var scratch = new Scratch();
        var data = WriteSplit(scratch.Path, NpyFile.ReadNpz(FixturePath("mlp.npz")));
        var model = FixturePath("mlp.onnx");
        foreach (var args in new[]
        {
            new[] { "finetune", model, "-d", data, "-o", model },
            ["finetune", model, "-d", data, "-o", Path.Combine(scratch.Path, "x.onnx"), "--optimizer", "lion"],
            ["finetune", model, "-d", data, "-o", Path.Combine(scratch.Path, "x.onnx"), "--lr", "-1"],
            ["finetune", model, "-d", data, "-o", Path.Combine(scratch.Path, "x.onnx"), "--freeze", "("],
            ["finetune", model, "-d", data, "-o", Path.Combine(scratch.Path, "x.onnx"), "--lr", "1e38", "--momentum", "0.9", "--epochs", "3", "--batch-size", "2", "--json"],
            ["finetune", model, "-d", Path.Combine(scratch.Path, "missing"), "-o", Path.Combine(scratch.Path, "x.onnx")],
            ["finetune", Path.Combine(ZooPaths.ModelsDirectory, "cnn_base.onnx"), "-d", data, "-o", Path.Combine(scratch.Path, "x.onnx")],
        })
        {
            var before = File.ReadAllBytes(model);
            var (code, _, stderr) = Run(args);
            Assert.AreEqual(1, code, string.Join(" ", args));
            Assert.AreEqual(1, stderr.Trim().Split('\n').Length, stderr);
            CollectionAssert.AreEqual(before, File.ReadAllBytes(model));
            Assert.IsFalse(File.Exists(Path.Combine(scratch.Path, "x.onnx")));
        }
    }

    [TestMethod]
    public void FisherFileEqualsPyTorchAndFeedsFisherMerging()
    {
        using var scratch = new Scratch();
        var reference = NpyFile.ReadNpz(FixturePath("mlp.npz"));
        var data = WriteSplit(scratch.Path, reference);
        var fisher = Path.Combine(scratch.Path, "mlp.fisher.npz");
        var (code, stdout, stderr) = Run(["fisher", FixturePath("mlp.onnx"), "-d", data, "--labels", "true", "-o", fisher]);
        Assert.AreEqual(0, code, stderr + stdout);
        var ours = NpyFile.ReadNpz(fisher);
        foreach (var key in reference.Keys.Where(k => k.StartsWith("fisher:", StringComparison.Ordinal)))
        {
            Assert.IsLessThanOrEqualTo(1e-4, RelativeGap(ours[key[7..]].ToSingleArray(), reference[key].ToSingleArray()), key);
            CollectionAssert.AreEqual(reference[key].Shape.ToArray(), ours[key[7..]].Shape.ToArray(), key);
        }

        // A second model (fine-tuned) with its own sampled-label Fisher, then Fisher merging of the two.
        var tuned = Path.Combine(scratch.Path, "tuned.onnx");
        Assert.AreEqual(0, Run(["finetune", FixturePath("mlp.onnx"), "-d", data, "--lr", "0.1", "-o", tuned]).Code);
        var tunedFisher = Path.Combine(scratch.Path, "tuned.fisher.npz");
        Assert.AreEqual(0, Run(["fisher", tuned, "-d", data, "--seed", "5", "-o", tunedFisher]).Code);
        var merged = Path.Combine(scratch.Path, "merged.onnx");
        (code, stdout, stderr) = Run(["merge", FixturePath("mlp.onnx"), tuned, "--method", "fisher", "--fisher", fisher, tunedFisher, "-o", merged]);
        Assert.AreEqual(0, code, stderr + stdout);
        Assert.HasCount(1, RunOrt(merged, new Dictionary<string, TorchSharp.torch.Tensor> { ["input"] = ToTorch(reference["heldout:input"]) }));
    }

    /// <summary>The fixture's training inputs and labels as a split prefix (PREFIX_images.npy, PREFIX_labels.npy).</summary>
    private static string WriteSplit(string folder, IReadOnlyDictionary<string, NpyArray> reference)
    {
        var prefix = Path.Combine(folder, "train");
        NpyFile.Write(prefix + "_images.npy", reference["input:input"]);
        NpyFile.Write(prefix + "_labels.npy", reference["labels"]);
        return prefix;
    }

    private static ValueInfoProto FloatInput(string name, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        }

        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } } };
    }
}
