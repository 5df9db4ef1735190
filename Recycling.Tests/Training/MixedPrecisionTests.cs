using System.Runtime.InteropServices;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Zoo;
using Recycling.Training;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// float16 and float64 exports train (scripts/training/make_precision_fixtures.py, torch 1.13): the MLP and the
/// BatchNorm CNN, 3 steps of SGD (momentum) or AdamW in file order through `recycle finetune`, then ONNX Runtime on the
/// written model. float16: fp32 masters, the forward on the masters rounded to float16; PyTorch 1.13 has no float16
/// CPU kernels, so its reference emulates them (float32 arithmetic, every stored value and gradient rounded to
/// float16): the held-out logits agree within 5e-3 of the largest after SGD, 1e-2 after AdamW (measured: 2e-4 to
/// 9e-4, and 6.8e-3 for AdamW on the BatchNorm CNN, whose normalised steps magnify the rounding of near-zero
/// gradients; one float16 unit is 4.9e-4 relative), the trained weights within 1e-2 of the largest of each tensor (a few float16 units: the
/// masters' updates differ by the rounding of the gradients; 2e-2 after AdamW, measured 1.2e-2 on a BatchNorm bias).
/// float64: PyTorch's own float64 run: weights within 1e-9 (measured 4e-13), BatchNorm running statistics and the
/// logits within 1e-6 (measured 1.2e-7 and 8.5e-8: ONNX stores BatchNorm's momentum and epsilon as float32
/// attributes, 1 − 0.9f = 0.0999999776, and ONNX Runtime's float64 logits are read back as float32).
/// Untrained, the logits are 37–230 % away from the trained reference: a run that trained nothing fails.
/// </summary>
[TestClass]
public sealed class MixedPrecisionTests
{
    private const double HalfLogitTolerance = 5e-3;
    private const double HalfWeightTolerance = 1e-2;
    private const double DoubleTolerance = 1e-9;

    private static string FixturePath(string file) => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", "precision", file);

    private static IReadOnlyDictionary<string, NpyArray> Reference(string name) => NpyFile.ReadNpz(FixturePath($"{name}.npz"));

    public static IEnumerable<object[]> Runs =>
    [
        ["mlp_float16", "sgd"],
        ["mlp_float16", "adamw"],
        ["cnn_bn_float16", "sgd:bntrain"],
        ["cnn_bn_float16", "adamw:bntrain"],
        ["cnn_bn_float16", "sgd:bnfrozen"],
        ["mlp_float64", "adamw"],
        ["cnn_bn_float64", "sgd:bntrain"],
        ["cnn_bn_float64", "adamw:bnfrozen"],
    ];

    [TestMethod]
    [DynamicData(nameof(Runs))]
    public void FinetuneLandsOnTheReferenceAndWritesTheStoredTypes(string name, string run)
    {
        using var scratch = new Scratch();
        var reference = Reference(name);
        var half = name.EndsWith("float16", StringComparison.Ordinal);
        var output = Path.Combine(scratch.Path, "out.onnx");
        var (code, stdout, stderr) = Run(["finetune", FixturePath($"{name}.onnx"), "--train", WriteData(scratch.Path, reference), "--epochs", "1", "--batch-size", "4",
            "--no-shuffle", "--no-checkpoint", "-o", output, "--batchnorm", run.EndsWith("bnfrozen", StringComparison.Ordinal) ? "frozen" : "train",
            .. run.StartsWith("sgd", StringComparison.Ordinal) ? new[] { "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9" } : ["--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.01"]]);
        Assert.AreEqual(0, code, stderr + stdout);

        // The written model stores every tensor in its parent's type, and ONNX Runtime runs it.
        using (var parent = OnnxModel.Open(FixturePath($"{name}.onnx")))
        using (var written = OnnxModel.Open(output))
        {
            CollectionAssert.AreEqual(parent.Tensors.Select(t => (t.Path, t.DataType)).ToList(), written.Tensors.Select(t => (t.Path, t.DataType)).ToList());
        }

        // ONNX Runtime 1.31 has no float64 Conv on the CPU (nor for the parent): the CNN's float64 logits from the executor.
        var ortRuns = !name.StartsWith("cnn_bn_float64", StringComparison.Ordinal);
        Assert.AreEqual(!ortRuns, (stdout + stderr).Contains("the written model was not checked by ONNX Runtime", StringComparison.Ordinal), stderr);
        var logits = ortRuns ? OrtLogits(output, reference["heldout"], half ? ScalarType.Float16 : ScalarType.Float64) : ExecutorLogits(output, reference["heldout"]);
        var expected = reference[$"trained:{run}"].AsSpan<double>().ToArray();
        var initial = reference["initial"].AsSpan<double>().ToArray();
        var tolerance = half ? HalfLogitTolerance * (run.StartsWith("adamw", StringComparison.Ordinal) ? 2 : 1) : 1e-6;
        Assert.IsLessThanOrEqualTo(tolerance, Gap(logits, expected), $"{name} {run}: held-out logits");
        Assert.IsGreaterThan(20 * tolerance, Gap(initial.Select(v => (float)v).ToArray(), expected), "the reference moved: the check can tell a trained model from its parent");

        using var model = OnnxModel.Open(output);
        // Not compared: float16 convolution weights that feed a train-mode BatchNorm under AdamW. The output does not
        // depend on their scale, so their true gradient has components near zero, whose float16 rounding Adam's
        // normalised step turns into full ±lr steps (measured 12 % apart on conv2.weight; the logits still agree).
        var illConditioned = half && run == "adamw:bntrain";
        foreach (var tensor in model.Tensors.Where(t => reference.ContainsKey($"weight:{run}:{t.Name}") && !(illConditioned && t.Name.StartsWith("conv", StringComparison.Ordinal))))
        {
            var theirs = reference[$"weight:{run}:{tensor.Name}"];
            var gap = half
                ? Gap(tensor.ReadFloat32(), [.. theirs.AsSpan<Half>().ToArray().Select(v => (double)v)])
                : Gap(MemoryMarshal.Cast<byte, double>(tensor.ReadRawBytes()).ToArray(), theirs.AsSpan<double>().ToArray());
            var bound = half ? HalfWeightTolerance * (run.StartsWith("adamw", StringComparison.Ordinal) ? 2 : 1)
                : tensor.Name.Contains("running", StringComparison.Ordinal) ? 1e-6 : DoubleTolerance;
            Assert.IsLessThanOrEqualTo(bound, gap, $"{name} {run}: {tensor.Name}");
        }
    }

    [TestMethod]
    public void RunAndAlignTakeTheTrainedHalfModel()
    {
        using var scratch = new Scratch();
        var output = Path.Combine(scratch.Path, "out.onnx");
        var parent = FixturePath("cnn_bn_float16.onnx");
        Assert.AreEqual(0, Run(["finetune", parent, "--train", WriteData(scratch.Path, Reference("cnn_bn_float16")), "--batch-size", "4", "--no-checkpoint", "-o", output]).Code);
        var (code, stdout, stderr) = Run(["align", parent, output]);
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "identical up to weights");
        StringAssert.Contains(stdout, "conv1.weight  Float16 [6,3,3,3]");

        // `recycle run` feeds float16 .npy inputs and writes float16 logits, those of the trained model.
        var heldout = Reference("cnn_bn_float16")["heldout"];
        var inputs = Path.Combine(scratch.Path, "heldout.npy");
        NpyFile.Write(inputs, NpyArray.From<Half>([.. heldout.ToSingleArray().Select(v => (Half)v)], [.. heldout.Shape]));
        var folder = Path.Combine(scratch.Path, "run");
        Assert.AreEqual(0, Run(["run", output, "-i", inputs, "-o", folder]).Code);
        var logits = NpyFile.Read(Path.Combine(folder, "logits.npy"));
        Assert.AreEqual(NpyDType.Float16, logits.DType);
        CollectionAssert.AreEqual(OrtLogits(output, heldout, ScalarType.Float16).Select(v => (float)v).ToArray(), logits.ToSingleArray());
    }

    [TestMethod]
    [DataRow("cnn_bn_float16")]
    [DataRow("cnn_bn_float64")]
    public void FisherEqualsTheReferenceAsFloat32(string name)
    {
        using var scratch = new Scratch();
        var reference = Reference(name);
        var npz = Path.Combine(scratch.Path, "f.npz");
        var (code, stdout, stderr) = Run(["fisher", FixturePath($"{name}.onnx"), "-d", WriteData(scratch.Path, reference), "--labels", "true", "-o", npz]);
        Assert.AreEqual(0, code, stderr + stdout);
        var fisher = NpyFile.ReadNpz(npz);
        var names = reference.Keys.Where(k => k.StartsWith("fisher:", StringComparison.Ordinal)).Select(k => k[7..]).Order().ToList();
        CollectionAssert.AreEqual(names, fisher.Keys.Order().ToList());
        foreach (var parameter in names)
        {
            Assert.AreEqual(NpyDType.Float32, fisher[parameter].DType);
            // float16: the per-sample gradients are float16 values squared (about 1e-3 each), summed in float64.
            var gap = RelativeGap(fisher[parameter].ToSingleArray(), reference[$"fisher:{parameter}"].ToSingleArray());
            Assert.IsLessThanOrEqualTo(name.EndsWith("float16", StringComparison.Ordinal) ? 1e-2 : 1e-5, gap, $"{name} {parameter}");
        }
    }

    [TestMethod]
    public void FrozenHalfTensorsKeepTheirBytesAndTheOthersTrain()
    {
        using var scratch = new Scratch();
        var output = Path.Combine(scratch.Path, "out.onnx");
        var parent = FixturePath("mlp_float16.onnx");
        var (code, stdout, stderr) = Run(["finetune", parent, "--train", WriteData(scratch.Path, Reference("mlp_float16")), "--batch-size", "4", "--no-checkpoint",
            "--freeze", "^fc1\\.", "--optimizer", "adamw", "--lr", "0.01", "-o", output]);
        Assert.AreEqual(0, code, stderr + stdout);
        using var a = OnnxModel.Open(parent);
        using var b = OnnxModel.Open(output);
        foreach (var tensor in a.Tensors)
        {
            var after = b.Tensors.Single(t => t.Path == tensor.Path).ReadRawBytes();
            if (tensor.Name.StartsWith("fc1.", StringComparison.Ordinal))
            {
                CollectionAssert.AreEqual(tensor.ReadRawBytes(), after, tensor.Name);
            }
            else
            {
                CollectionAssert.AreNotEqual(tensor.ReadRawBytes(), after, tensor.Name);
            }
        }
    }

    /// <summary>Stopped after step 5 of 9 and rerun: the same bytes as an uninterrupted run (float32 master and
    /// optimizer state, float16 BatchNorm statistics, the float64 sum of --average-epochs, all restored exactly).</summary>
    [TestMethod]
    [DataRow("cnn_bn_float16", OptimizerKind.AdamW)]
    [DataRow("cnn_bn_float64", OptimizerKind.Sgd)]
    public void ResumedRunWritesTheSameBytes(string name, OptimizerKind optimizer)
    {
        using var scratch = new Scratch();
        var train = WriteData(scratch.Path, Reference(name));
        FineTuneOptions Options(string output) => new()
        {
            Model = FixturePath($"{name}.onnx"),
            Train = train,
            Output = output,
            Epochs = 3,
            BatchSize = 4,
            Seed = 3,
            AverageEpochs = 2,
            Settings = new TrainingSettings { Optimizer = optimizer, LearningRate = 0.01, Momentum = optimizer == OptimizerKind.Sgd ? 0.9 : 0 },
            Checkpoint = new CheckpointSettings { EverySteps = 2 },
        };

        var reference = Path.Combine(scratch.Path, "reference.onnx");
        FineTuner.Run(Options(reference));
        var output = Path.Combine(scratch.Path, "out.onnx");
        Assert.ThrowsExactly<OperationCanceledException>(() => FineTuner.Run(Options(output), status: new StopAt(5)));
        Assert.AreEqual(4, FineTuner.Run(Options(output)).ResumedAtStep);
        CollectionAssert.AreEqual(File.ReadAllBytes(reference), File.ReadAllBytes(output));
    }

    [TestMethod]
    public void KeepBestAndAveragingWriteTheStoredType()
    {
        using var scratch = new Scratch();
        var reference = Reference("mlp_float16");
        var data = WriteData(scratch.Path, reference);
        string[] common = ["finetune", FixturePath("mlp_float16.onnx"), "--train", data, "--batch-size", "4", "--no-shuffle", "--no-checkpoint", "--lr", "0.2", "--epochs", "3"];
        var best = Path.Combine(scratch.Path, "best.onnx");
        var (code, stdout, stderr) = Run([.. common, "--test", data, "--keep", "best", "--json", "-o", best]);
        Assert.AreEqual(0, code, stderr + stdout);
        using var json = System.Text.Json.JsonDocument.Parse(stdout);
        var bestEpoch = json.RootElement.GetProperty("keptEpochs")[0].GetInt32();
        var stopped = Path.Combine(scratch.Path, "stopped.onnx");
        Assert.AreEqual(0, Run([.. common[..^2], "--epochs", bestEpoch.ToString(System.Globalization.CultureInfo.InvariantCulture), "-o", stopped]).Code);
        var averaged = Path.Combine(scratch.Path, "averaged.onnx");
        Assert.AreEqual(0, Run([.. common, "--average-epochs", "2", "-o", averaged]).Code);
        var last = Path.Combine(scratch.Path, "last.onnx");
        Assert.AreEqual(0, Run([.. common, "-o", last]).Code);

        using var a = OnnxModel.Open(best);
        using var b = OnnxModel.Open(stopped);
        using var c = OnnxModel.Open(averaged);
        using var d = OnnxModel.Open(last);
        foreach (var tensor in a.Tensors)
        {
            Assert.AreEqual(OnnxDataType.Float16, tensor.DataType);
            CollectionAssert.AreEqual(b.Tensors.Single(t => t.Path == tensor.Path).ReadRawBytes(), tensor.ReadRawBytes(), tensor.Path);
            Assert.AreEqual(OnnxDataType.Float16, c.Tensors.Single(t => t.Path == tensor.Path).DataType);
        }

        Assert.IsTrue(c.Tensors.Any(t => !t.ReadRawBytes().SequenceEqual(d.Tensors.Single(u => u.Path == t.Path).ReadRawBytes())), "the average differs from the last epoch");
    }

    /// <summary>
    /// The BERT-style encoder converted to float16 (Gather, the fused LayerNorm and GELU, MatMul, Softmax, ReduceMean
    /// in float16 LibTorch kernels): its logits equal ONNX Runtime's on the same file within 1e-2 of the largest, and
    /// PyTorch's float32 logits and gradients (make_training_fixtures.py) within 3e-2: float16 weights and activations
    /// (2^-11 relative each) through two residual blocks. Every master gets a float32 gradient.
    /// </summary>
    [TestMethod]
    public void HalfEncoderForwardAndGradientsMatchFloat32()
    {
        var reference = NpyFile.ReadNpz(Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", "encoder_opset13.npz"));
        using var model = OnnxModel.Open(FixturePath("encoder_float16.onnx"));
        using var program = OnnxProgram.Load(model);
        Assert.IsTrue(program.Parameters.Values.All(p => p.dtype == ScalarType.Float32));
        Assert.IsTrue(program.Parameters.Keys.All(k => program.StoredTypes[k] == ScalarType.Float16));
        using var scope = NewDisposeScope();
        var feeds = new Dictionary<string, Tensor>
        {
            ["input_ids"] = ToTorch(reference["input:input_ids"]).slice(0, 0, 4, 1),
            ["attention_mask"] = ToTorch(reference["input:attention_mask"]).slice(0, 0, 4, 1),
        };
        var logits = program.Forward(feeds, new Recycling.Training.Ops.OpContext())["logits"];
        Assert.AreEqual(ScalarType.Float16, logits.dtype);
        var ours = logits.to(ScalarType.Float32).data<float>().ToArray();
        Assert.IsLessThanOrEqualTo(1e-2, RelativeGap(ours, OnnxRuntimeRun.Output(FixturePath("encoder_float16.onnx"), feeds, "logits")), "ONNX Runtime");
        Assert.IsLessThanOrEqualTo(3e-2, RelativeGap(ours, reference["logits"].ToSingleArray()), "PyTorch float32");

        TorchSharp.torch.nn.functional.cross_entropy(logits.to(ScalarType.Float32), ToTorch(reference["labels"]).slice(0, 0, 4, 1)).backward();
        foreach (var (name, parameter) in program.Parameters)
        {
            Assert.AreEqual(ScalarType.Float32, parameter.grad!.dtype, name);
            Assert.IsLessThanOrEqualTo(3e-2, RelativeGap(parameter.grad.data<float>().ToArray(), reference[$"grad:{name}"].ToSingleArray()), $"gradient of {name}");
        }
    }

    /// <summary>Masters are written rounded to nearest even (ties to the even bit pattern); a finite master beyond the
    /// stored range is an error naming the tensor, never an infinity written.</summary>
    [TestMethod]
    public void StoredValuesRoundToNearestEvenAndOverflowIsRefused()
    {
        using var scope = NewDisposeScope();
        // float16 (10 mantissa bits): 1 + 2^-11 is a tie → 1 (0x3C00); 1 + 3·2^-11 is a tie → 1 + 2^-9 (0x3C02); 1 + 2^-11 + 2^-20 rounds up (0x3C01).
        var half = tensor(new[] { 1 + Math.Pow(2, -11), 1 + (3 * Math.Pow(2, -11)), 1 + Math.Pow(2, -11) + Math.Pow(2, -20) }.Select(v => (float)v).ToArray());
        CollectionAssert.AreEqual(new ushort[] { 0x3C00, 0x3C02, 0x3C01 }, MemoryMarshal.Cast<byte, ushort>(MixedPrecision.Bytes(half, ScalarType.Float16, "w")).ToArray());
        // bfloat16 (7 mantissa bits): 1 + 2^-8 → 1 (0x3F80); 1 + 3·2^-8 → 1 + 2^-6 (0x3F82).
        var brain = tensor(new[] { 1 + Math.Pow(2, -8), 1 + (3 * Math.Pow(2, -8)) }.Select(v => (float)v).ToArray());
        CollectionAssert.AreEqual(new ushort[] { 0x3F80, 0x3F82 }, MemoryMarshal.Cast<byte, ushort>(MixedPrecision.Bytes(brain, ScalarType.BFloat16, "w")).ToArray());

        var error = Assert.ThrowsExactly<RecyclingException>(() => MixedPrecision.Bytes(tensor(new[] { 1f, 65520f, -70000f, float.NaN }), ScalarType.Float16, "fc.weight"));
        StringAssert.Contains(error.Message, "'fc.weight': 2 trained value(s) exceed");
        Assert.HasCount(2, MemoryMarshal.Cast<byte, ushort>(MixedPrecision.Bytes(tensor(new[] { 65504f, 65519f }), ScalarType.Float16, "w")).ToArray().Where(b => b == 0x7BFF).ToArray());
    }

    private static string WriteData(string folder, IReadOnlyDictionary<string, NpyArray> reference)
    {
        var prefix = Path.Combine(folder, "train");
        NpyFile.Write(prefix + "_images.npy", reference["input"]);
        NpyFile.Write(prefix + "_labels.npy", reference["labels"]);
        return prefix;
    }

    private static double[] OrtLogits(string path, NpyArray inputs, ScalarType type)
    {
        using var scope = NewDisposeScope();
        var feed = tensor(inputs.ToSingleArray(), [.. inputs.Shape]).to(type);
        return [.. OnnxRuntimeRun.Output(path, new Dictionary<string, Tensor> { ["input"] = feed }, "logits").Select(v => (double)v)];
    }

    private static double[] ExecutorLogits(string path, NpyArray inputs)
    {
        using var model = OnnxModel.Open(path);
        using var program = OnnxProgram.Load(model);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var feed = tensor(inputs.ToSingleArray(), [.. inputs.Shape]).to(ScalarType.Float64);
        return program.Forward(new Dictionary<string, Tensor> { ["input"] = feed }, new Recycling.Training.Ops.OpContext())["logits"].data<double>().ToArray();
    }

    /// <summary>max |a − b| / max |b|, in float64.</summary>
    private static double Gap(IReadOnlyList<float> ours, IReadOnlyList<double> theirs) => Gap([.. ours.Select(v => (double)v)], theirs);

    private static double Gap(IReadOnlyList<double> ours, IReadOnlyList<double> theirs)
    {
        Assert.HasCount(theirs.Count, ours);
        double gap = 0, scale = 1e-300;
        for (var i = 0; i < ours.Count; i++)
        {
            gap = Math.Max(gap, Math.Abs(ours[i] - theirs[i]));
            scale = Math.Max(scale, Math.Abs(theirs[i]));
        }

        return gap / scale;
    }

    private sealed class StopAt(int step) : IProgress<string>
    {
        private int _seen;

        public void Report(string value)
        {
            if (++_seen == step)
            {
                throw new OperationCanceledException($"stopped after step {step}");
            }
        }
    }
}
