using System.Text.RegularExpressions;
using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Zoo;
using Recycling.Training;
using Recycling.Training.Ops;
using TorchSharp;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Tests.Training;

/// <summary>
/// `--device` of the training commands. No CUDA build of LibTorch is referenced here (TorchSharp-cpu), so CUDA never
/// runs in these tests: what they prove is that cuda is refused in one line before any work, that auto falls back
/// to the CPU with a notice and the same bytes, that every tensor factory in Recycling.Training names its device
/// (a source scan), and that a program loaded on LibTorch's "meta" device (shapes without data, which the CPU build
/// has) keeps every value, gradient and optimizer update there.
/// </summary>
[TestClass]
public sealed class TrainingDeviceTests
{
    /// <summary>LibTorch's functions that make a tensor from nothing or from host values (the *_like ones follow their argument's device).</summary>
    private const string Factories = "tensor|as_tensor|from_array|frombuffer|scalar_tensor|zeros|ones|empty|full|eye|arange|linspace|logspace|rand|randn|randint|randperm|normal|empty_strided|sparse_coo_tensor|complex|polar|tril_indices|triu_indices";

    private static readonly Regex FactoryCall = new($@"(?<!\w)(?<name>{Factories})\s*\(", RegexOptions.CultureInvariant);

    private static string FixturePath(string file) => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", file);

    [TestMethod]
    public void EveryTensorFactoryInRecyclingTrainingNamesItsDevice()
    {
        var folder = Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Training");
        var files = Directory.EnumerateFiles(folder, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .ToList();
        Assert.IsTrue(files.Count > 40, "the scan must see the project's sources");
        var calls = 0;
        var problems = new List<string>();
        foreach (var file in files)
        {
            var found = CallsWithoutDevice(File.ReadAllText(file), out var seen);
            calls += seen;
            problems.AddRange(found.Select(p => $"{Path.GetRelativePath(folder, file)}: {p}"));
        }

        Assert.IsTrue(calls > 20, $"the scan must find the factory calls the engine makes (found {calls})");
        Assert.IsEmpty(problems, "tensor factories without a `device:` argument (they would make CPU tensors while the program is on a GPU):\n" + string.Join("\n", problems));
    }

    /// <summary>
    /// Every command that configures a training (an options type of Recycling.Training with a
    /// <see cref="TrainingDevice"/> property: fine-tuning, Fisher, learned soup, target runs) passes the device its
    /// --device chose: an initializer without <c>Device =</c> would train on the CPU whatever the user asked.
    /// </summary>
    [TestMethod]
    public void EveryCommandThatConfiguresATrainingPassesItsDevice()
    {
        var trained = typeof(TrainingDevice).Assembly.GetTypes()
            .Where(t => t.GetProperty("Device")?.PropertyType == typeof(TrainingDevice)).Select(t => t.Name).ToList();
        CollectionAssert.IsSubsetOf(new[] { "FineTuneOptions", "FisherOptions", "LearnedSoupOptions" }, trained);
        var folder = Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Cli");
        var configured = new List<string>();
        var problems = new List<string>();
        foreach (var file in Directory.EnumerateFiles(folder, "*.cs", SearchOption.AllDirectories).Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)))
        {
            foreach (var (type, line, initializer) in Initializers(File.ReadAllText(file), trained))
            {
                configured.Add(type);
                if (!Regex.IsMatch(initializer, @"\bDevice\s*="))
                {
                    problems.Add($"{Path.GetRelativePath(folder, file)}:{line}: new {type} {{ ... }} sets no Device");
                }
            }
        }

        CollectionAssert.IsSubsetOf(new[] { "FineTuneOptions", "FisherOptions", "LearnedSoupOptions" }, configured.Distinct().ToList(), "the scan must see finetune's, fisher's and soup's options");
        Assert.IsEmpty(problems, string.Join("\n", problems));
    }

    /// <summary>Object initializers (<c>new T { ... }</c> or <c>new T(...) { ... }</c>) of the named types in <paramref name="source"/>: the type, its line, the text in braces.</summary>
    private static IEnumerable<(string Type, int Line, string Initializer)> Initializers(string source, IReadOnlyList<string> types)
    {
        foreach (Match match in Regex.Matches(source, $@"\bnew\s+(?<type>{string.Join("|", types)})\b\s*(?:\((?>[^()]+|\((?<d>)|\)(?<-d>))*\))?\s*\{{", RegexOptions.None, TimeSpan.FromSeconds(10)))
        {
            var depth = 0;
            var close = match.Index + match.Length - 1;
            for (; close < source.Length; close++)
            {
                depth += source[close] switch { '{' => 1, '}' => -1, _ => 0 };
                if (depth == 0)
                {
                    break;
                }
            }

            yield return (match.Groups["type"].Value, source[..match.Index].Count(c => c == '\n') + 1, source[(match.Index + match.Length)..Math.Min(close, source.Length)]);
        }
    }

    [TestMethod]
    public void TheScanFindsFactoriesWithoutADeviceAndOnlyThose()
    {
        const string source = """
            var a = torch.zeros(3);                       // flagged
            var b = tensor(values, [2, 2]);               // flagged (using static)
            var c = torch.tensor(x, ScalarType.Int64, device: d);
            var e = arange(zero, stop, One, type, device: device);
            var f = torch.zeros_like(x);                  // follows x
            var g = node.Tensor("value");                 // an attribute, not a factory
            var h = x.normal_(0, 1);                      // in place on x
            // torch.ones(2) in a comment
            var s = "torch.ones(2) in a string";
            var i = TorchSharp.torch.ones(new long[] { 2 }, ScalarType.Float32,
                CPU);                                     // flagged: positional, not named
            """;
        var problems = CallsWithoutDevice(source, out var seen);
        Assert.AreEqual(5, seen);
        CollectionAssert.AreEqual(new[] { "line 1: zeros(3)", "line 2: tensor(values, [2, 2])", "line 10: ones(new long[] { 2 }, ScalarType.Float32, CPU)" }, problems);
    }

    [TestMethod]
    public void CudaIsRefusedInOneLineBeforeAnyWork()
    {
        if (cuda.is_available())
        {
            Assert.Inconclusive("CUDA is usable here: the refusal cannot be shown");
        }

        using var scratch = new Scratch();
        var output = Path.Combine(scratch.Path, "out.onnx");
        var missing = Path.Combine(scratch.Path, "no-such-data");
        string[][] commands =
        [
            ["finetune", FixturePath("mlp.onnx"), "-d", missing, "-o", output, "--device", "cuda"],
            ["fisher", FixturePath("mlp.onnx"), "-d", missing, "-o", Path.Combine(scratch.Path, "f.npz"), "--device", "CUDA"],
            ["fuse", FixturePath("mlp.onnx"), FixturePath("mlp.onnx"), "--base", FixturePath("mlp.onnx"), "-d", missing, "--val", missing, "-o", Path.Combine(scratch.Path, "fused"), "--device", "cuda"],
            ["soup", FixturePath("mlp.onnx"), FixturePath("mlp.onnx"), "--learned", "-d", missing, "-o", Path.Combine(scratch.Path, "soup.onnx"), "--device", "cuda"],
        ];
        foreach (var args in commands)
        {
            var (code, stdout, stderr) = Run(args);
            Assert.AreEqual(1, code, args[0] + ": " + stderr + stdout);
            var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            Assert.HasCount(1, lines, args[0] + ": " + stderr);
            StringAssert.Contains(lines[0], "--device cuda: CUDA is not usable here", args[0]);
            StringAssert.Contains(lines[0], "--device auto runs on the CPU instead", args[0]);
            Assert.DoesNotContain("   at ", stderr, "no stack trace");
        }

        Assert.IsEmpty(Directory.EnumerateFileSystemEntries(scratch.Path), "nothing written, no folder made");
        var (badCode, _, badErr) = Run(["finetune", FixturePath("mlp.onnx"), "-d", missing, "-o", output, "--device", "tpu"]);
        Assert.AreEqual(1, badCode);
        StringAssert.Contains(badErr, "--device tpu: use cpu, cuda or auto");
    }

    [TestMethod]
    public void AutoFallsBackToTheCpuWithANoticeAndWritesTheSameBytes()
    {
        if (cuda.is_available())
        {
            Assert.Inconclusive("CUDA is usable here: auto does not fall back");
        }

        using var scratch = new Scratch();
        var reference = NpyFile.ReadNpz(FixturePath("cnn_bn.npz"));
        var data = Path.Combine(scratch.Path, "train");
        NpyFile.Write(data + "_images.npy", reference["input:input"]);
        NpyFile.Write(data + "_labels.npy", reference["labels"]);
        string[] common = ["finetune", FixturePath("cnn_bn.onnx"), "-d", data, "--epochs", "1", "--batch-size", "4", "--no-shuffle", "--optimizer", "sgd", "--lr", "0.05", "--no-checkpoint"];
        var cpuOut = Path.Combine(scratch.Path, "cpu.onnx");
        var autoOut = Path.Combine(scratch.Path, "auto.onnx");
        var (cpuCode, cpuStdout, cpuStderr) = Run([.. common, "-o", cpuOut]);
        Assert.AreEqual(0, cpuCode, cpuStderr + cpuStdout);
        Assert.DoesNotContain("notice", cpuStderr + cpuStdout);

        var (code, stdout, stderr) = Run([.. common, "-o", autoOut, "--device", "auto"]);
        Assert.AreEqual(0, code, stderr + stdout);
        var notices = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains("CUDA", StringComparison.Ordinal)).ToList();
        Assert.HasCount(1, notices, stderr);
        StringAssert.StartsWith(notices[0], "notice: CUDA is not usable here (");
        StringAssert.EndsWith(notices[0].TrimEnd(), "training on the CPU");
        CollectionAssert.AreEqual(File.ReadAllBytes(cpuOut), File.ReadAllBytes(autoOut), "auto on the CPU trains exactly as cpu");

        var fisher = Path.Combine(scratch.Path, "f.npz");
        var (fisherCode, fisherOut, fisherErr) = Run(["fisher", cpuOut, "-d", data, "-o", fisher, "--samples", "4", "--device", "auto"]);
        Assert.AreEqual(0, fisherCode, fisherErr + fisherOut);
        StringAssert.Contains(fisherErr, "notice: CUDA is not usable here");
        Assert.IsTrue(File.Exists(fisher));
    }

    [TestMethod]
    public void TheCSharpOptionsRefuseCudaBeforeReadingAnything()
    {
        if (cuda.is_available())
        {
            Assert.Inconclusive("CUDA is usable here");
        }

        var missing = Path.Combine(Path.GetTempPath(), "recycling-no-such-model.onnx");
        var e = Assert.ThrowsExactly<RecyclingException>(() => FineTuner.Run(new FineTuneOptions { Model = missing, Train = missing, Output = missing + ".out.onnx", Device = TrainingDevice.Cuda }));
        StringAssert.StartsWith(e.Message, "--device cuda: CUDA is not usable here");
        e = Assert.ThrowsExactly<RecyclingException>(() => FisherFile.Compute(new FisherOptions { Model = missing, Data = missing, Output = missing + ".npz", Device = TrainingDevice.Cuda }));
        StringAssert.StartsWith(e.Message, "--device cuda: CUDA is not usable here");
        var notices = new List<string>();
        Assert.AreEqual(TrainingDevice.Cpu, TrainingDevices.Choose(TrainingDevice.Auto, notices.Add));
        Assert.HasCount(1, notices);
        Assert.AreEqual(TrainingDevice.Cpu, TrainingDevices.Choose(TrainingDevice.Cpu, notices.Add));
        Assert.HasCount(1, notices, "cpu asks nothing and says nothing");
    }

    /// <summary>
    /// The meta device holds shapes and no data, so a CPU tensor made by mistake meets a meta one and LibTorch refuses
    /// the mix ("Expected all tensors to be on the same device") in elementwise ops, or the value it yields is not
    /// on meta. Every graph value, parameter, gradient and updated parameter must be on meta. What cannot run there:
    /// ops that read values back to the host (shape chains, Clip bounds given as inputs, Range, OneHot) and
    /// convolutions (LibTorch 2.10 has no meta kernel for them), so the whole-model fixture is the MLP; the
    /// single-node test below covers the ops that make tensors of their own.
    /// </summary>
    [TestMethod]
    [DataRow("mlp.onnx", BatchNormMode.Train)]
    public void OnTheMetaDeviceEveryValueGradientAndUpdateStaysThere(string fixture, BatchNormMode batchNorm)
    {
        var meta = new Device(DeviceType.META);
        using var model = OnnxModel.Open(FixturePath(fixture));
        using var program = OnnxProgram.Load(model, device: meta);
        Assert.AreEqual(DeviceType.META, program.Device.type);
        foreach (var (name, value) in program.Parameters.Select(p => (p.Key, (Tensor)p.Value)).Concat(program.Buffers.Select(b => (b.Key, b.Value))))
        {
            Assert.AreEqual(DeviceType.META, value.device_type, name);
        }

        var input = program.Inputs.Single();
        var sampleShape = input.Shape.Skip(1).Select(d => (int)d).ToArray();
        const int count = 4;
        var sampleSize = sampleShape.Aggregate(1, (p, d) => p * d);
        var data = new Dataset("random", [.. Enumerable.Range(0, count * sampleSize).Select(i => (float)Math.Sin(i))], sampleShape, [0, 1, 2, 1]);
        var feeder = BatchFeeder.For(program, model.Path, data);
        using var batch = feeder.Batch(data, [0, 1, 2, 3]);
        Assert.IsTrue(batch.Feeds.Values.Append(batch.Labels).All(t => t.device_type == DeviceType.META), "the batch is on the program's device");

        using var scope = NewDisposeScope();
        var names = model.Proto.Graph.Node.SelectMany(n => n.Output).Where(o => o.Length > 0).ToList();
        var values = program.Forward(batch.Feeds, new OpContext { Training = true, BatchNorm = batchNorm }, names);
        foreach (var (name, value) in values)
        {
            Assert.AreEqual(DeviceType.META, value.device_type, $"value '{name}'");
        }

        var logits = values[program.Outputs[0]];
        var loss = F.cross_entropy(logits.reshape(count, -1), batch.Labels);
        var trainable = program.Trainable.ToList();
        using var optimizer = new ParameterOptimizer(OptimizerKind.AdamW, trainable, weightDecay: 0.01);
        optimizer.ZeroGrad();
        loss.backward();
        foreach (var (name, parameter) in program.Parameters)
        {
            Assert.AreEqual(DeviceType.META, parameter.grad?.device_type, $"gradient of '{name}'");
        }

        optimizer.Step(0.01);
        Assert.IsTrue(trainable.All(p => p.device_type == DeviceType.META), "updated parameters stay on meta");
        Assert.IsTrue(program.Buffers.Values.All(b => b.device_type == DeviceType.META), "running statistics stay on meta");
    }

    /// <summary>Ops that make tensors of their own (shape values, attribute constants, masks, one-hot maxima) make them on the program's device.</summary>
    [TestMethod]
    [DataRow("Shape", 15, "", "x:2,3,4")]
    [DataRow("Shape", 15, "start=i:1", "x:2,3,4")]
    [DataRow("Size", 13, "", "x:2,3,4")]
    [DataRow("Constant", 13, "value_float=f:1.5", "-")]
    [DataRow("Constant", 13, "value_floats=fs:1,2.5", "-")]
    [DataRow("Constant", 13, "value_ints=is:1,2", "-")]
    [DataRow("Hardmax", 13, "", "x:2,3,4")]
    [DataRow("Dropout", 7, "ratio=f:0.5", "x:2,3,4")]
    [DataRow("MaxPool", 12, "kernel_shape=is:2,2", "x:1,2,4,4")]
    [DataRow("Gemm", 13, "transB=i:1", "x:2,3|w@2x3=f1,2,3,4,5,6|b=f0.5,-0.5")]
    public void SingleOpsMakeTheirTensorsOnTheProgramsDevice(string op, int opset, string attributes, string inputs)
    {
        var meta = new Device(DeviceType.META);
        var outputs = op == "Dropout" ? 2 : 1;
        using var node = SingleNodeModel.Create(op, opset, attributes, inputs, outputs);
        using var model = OnnxModel.Open(node.Path);
        using var program = OnnxProgram.Load(model, device: meta);
        using var scope = NewDisposeScope();
        var feeds = node.RandomInputs.ToDictionary(p => p.Key, p => randn(p.Value, device: meta));
        var values = program.Forward(feeds, new OpContext { Training = true });
        Assert.HasCount(outputs, values);
        foreach (var (name, value) in values)
        {
            Assert.AreEqual(DeviceType.META, value.device_type, $"{op}: output '{name}'");
        }
    }

    /// <summary>Factory calls in <paramref name="source"/> (comments and string literals removed) whose arguments name no device.</summary>
    private static List<string> CallsWithoutDevice(string source, out int seen)
    {
        var code = Regex.Replace(source, @"//[^\n]*|@""(?:[^""]|"""")*""|""(?:[^""\\\n]|\\.)*""", m => new string(' ', m.Length) + string.Concat(m.Value.Where(c => c == '\n')), RegexOptions.None, TimeSpan.FromSeconds(10));
        var problems = new List<string>();
        seen = 0;
        foreach (Match match in FactoryCall.Matches(code))
        {
            var before = code[..match.Index];
            if (before.EndsWith('.') && !before.EndsWith("torch.", StringComparison.Ordinal))
            {
                continue; // a method of some object (x.normal_ does not match; node.tensor would be skipped here)
            }

            var open = match.Index + match.Length - 1;
            var depth = 0;
            var close = open;
            for (; close < code.Length; close++)
            {
                depth += code[close] switch { '(' or '[' or '{' => 1, ')' or ']' or '}' => -1, _ => 0 };
                if (depth == 0)
                {
                    break;
                }
            }

            var arguments = code[(open + 1)..Math.Min(close, code.Length)];
            if (Regex.IsMatch(before, @"\b(?:Tensor|static|void|private|public|internal)\s+$"))
            {
                continue; // a declaration of a method with that name
            }

            seen++;
            if (!Regex.IsMatch(arguments, @"\bdevice\s*:"))
            {
                var line = before.Count(c => c == '\n') + 1;
                problems.Add($"line {line}: {match.Groups["name"].Value}({Regex.Replace(arguments, @"\s+", " ").Trim()})");
            }
        }

        return problems;
    }
}
