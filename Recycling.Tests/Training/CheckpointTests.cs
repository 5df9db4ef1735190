using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Onnx.Proto;
using Recycling.Tests.Reliability;
using Recycling.Tests.Zoo;
using Recycling.Training;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Training;

/// <summary>
/// Checkpoints of `recycle finetune`: a run killed with SIGKILL after its first checkpoint and rerun with the same
/// command writes the same bytes as a run that was never interrupted (LibTorch on the CPU is deterministic for one
/// thread count, and the checkpoint holds the exact state: weights, BatchNorm statistics, optimizer moments, random
/// generator, loop position, best and averaged weights), for SGD with momentum and a schedule and for AdamW, with
/// BatchNorm in train mode, epoch averaging and best-epoch keeping; a checkpoint of another run is not used, a damaged
/// one is one line; a non-finite loss stops the run naming the step.
/// </summary>
[TestClass]
public sealed class CheckpointTests
{
    private static string FixturePath(string file) => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", file);

    private static string Model => FixturePath("cnn_bn.onnx");

    [TestMethod]
    [DataRow("sgd")]
    [DataRow("adamw")]
    public void KilledCommandResumesToTheUninterruptedRunsBytes(string optimizer)
    {
        using var scratch = new Scratch();
        var train = WriteData(scratch.Path, "train", 480, seed: 1);
        var val = WriteData(scratch.Path, "val", 64, seed: 2);
        string[] settings = optimizer == "sgd"
            ? ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--nesterov", "--schedule", "cosine", "--warmup-steps", "4", "--average-epochs", "2"]
            : ["--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.01", "--schedule", "linear", "--keep", "best", "--test", val];
        string[] Args(string output) => ["finetune", Model, "-d", train, "--epochs", "3", "--batch-size", "16", "--seed", "5", "--batchnorm", "train",
            "--checkpoint-every", "3", "-o", output, .. settings];

        var reference = Path.Combine(scratch.Path, "reference.onnx");
        var (code, stdout, stderr, _) = RecycleProcess.Run(Args(reference));
        Assert.AreEqual(0, code, stderr + stdout);
        Assert.IsFalse(Directory.Exists(reference + ".ckpt"), "the checkpoint is removed after success");

        var output = Path.Combine(scratch.Path, "out.onnx");
        var checkpoint = Path.Combine(output + ".ckpt", Checkpoint.FileName);
        using (var process = RecycleProcess.Start(Args(output)))
        {
            var deadline = DateTime.UtcNow.AddMinutes(3);
            while (!File.Exists(checkpoint) && !process.HasExited && DateTime.UtcNow < deadline)
            {
                Thread.Sleep(5);
            }

            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }

        Assert.IsTrue(File.Exists(checkpoint), "a checkpoint was written before the kill");
        Assert.IsFalse(File.Exists(output), "the run was killed before it finished (make it longer if this fails)");

        (code, stdout, stderr, _) = RecycleProcess.Run(Args(output));
        Assert.AreEqual(0, code, stderr + stdout);
        var resumed = stdout.Split('\n').Single(l => l.StartsWith("resuming from checkpoint", StringComparison.Ordinal));
        var step = int.Parse(resumed.Split(" at step ")[1].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.IsTrue(step > 0 && step < 90, resumed);
        CollectionAssert.AreEqual(File.ReadAllBytes(reference), File.ReadAllBytes(output), $"{optimizer}: resumed at step {step}, the output differs from the uninterrupted run's");
        Assert.IsFalse(Directory.Exists(output + ".ckpt"), "the checkpoint is removed after success");
    }

    [TestMethod]
    public void InterruptedFineTunerResumesExactlyAndRefusesOtherRunsCheckpoints()
    {
        using var scratch = new Scratch();
        var train = WriteData(scratch.Path, "train", 96, seed: 3);
        FineTuneOptions Options(string output, double lr = 0.05) => new()
        {
            Model = Model,
            Train = train,
            Output = output,
            Epochs = 3,
            BatchSize = 8,
            Seed = 7,
            AverageEpochs = 2,
            Settings = new TrainingSettings { Optimizer = OptimizerKind.Sgd, LearningRate = lr, Momentum = 0.9, Schedule = LearningRateSchedule.Cosine },
            Checkpoint = new CheckpointSettings { EverySteps = 5 },
        };

        var reference = Path.Combine(scratch.Path, "reference.onnx");
        Assert.IsNull(FineTuner.Run(Options(reference)).ResumedAtStep);

        // Stopped by an exception at step 17 (epoch 2): the last checkpoint is step 15's.
        var output = Path.Combine(scratch.Path, "out.onnx");
        Assert.ThrowsExactly<OperationCanceledException>(() => FineTuner.Run(Options(output), status: new StopAt(17)));
        Assert.IsFalse(File.Exists(output));
        var checkpoint = Path.Combine(output + ".ckpt", Checkpoint.FileName);
        var saved = File.ReadAllBytes(checkpoint);

        // Another learning rate: the checkpoint is not used, and the line names the setting.
        var lines = new List<string>();
        Assert.ThrowsExactly<OperationCanceledException>(() => FineTuner.Run(Options(output, lr: 0.02), lines.Add, new StopAt(1)));
        Assert.IsTrue(lines.Any(l => l.Contains("not used", StringComparison.Ordinal) && l.Contains("settings.LearningRate: 0.05 then, 0.02 now", StringComparison.Ordinal)), string.Join('\n', lines));
        File.WriteAllBytes(checkpoint, saved);

        // A damaged checkpoint: one clear error, nothing written.
        var damaged = (byte[])saved.Clone();
        damaged[damaged.Length / 2] ^= 1;
        File.WriteAllBytes(checkpoint, damaged);
        var error = Assert.ThrowsExactly<RecyclingException>(() => FineTuner.Run(Options(output)));
        StringAssert.Contains(error.Message, "is damaged (its SHA-256 does not match its content)");
        File.WriteAllBytes(checkpoint, saved[..^40]);
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => FineTuner.Run(Options(output))).Message, "is damaged");
        Assert.IsFalse(File.Exists(output));
        File.WriteAllBytes(checkpoint, saved);

        lines.Clear();
        var result = FineTuner.Run(Options(output), lines.Add);
        Assert.AreEqual(15, result.ResumedAtStep);
        Assert.IsTrue(lines[0].StartsWith("resuming from checkpoint", StringComparison.Ordinal) && lines[0].Contains("at step 15 of 36 (epoch 2 of 3)", StringComparison.Ordinal), lines[0]);
        CollectionAssert.AreEqual(new[] { 1, 2, 3 }, result.Epochs.Select(e => e.Epoch).ToArray(), "the reports of epochs before the checkpoint are kept");
        CollectionAssert.AreEqual(File.ReadAllBytes(reference), File.ReadAllBytes(output));

        // --restart ignores a checkpoint; --keep-checkpoint leaves it.
        FineTuner.Run(Options(output) with { Checkpoint = new CheckpointSettings { EverySteps = 5, KeepAfterSuccess = true } });
        Assert.IsTrue(File.Exists(checkpoint));
        lines.Clear();
        Assert.IsNull(FineTuner.Run(Options(output) with { Checkpoint = new CheckpointSettings { Restart = true } }, lines.Add).ResumedAtStep);
        Assert.IsTrue(lines[0].Contains("ignored (--restart)", StringComparison.Ordinal), lines[0]);
        Assert.IsFalse(Directory.Exists(output + ".ckpt"));
        CollectionAssert.AreEqual(File.ReadAllBytes(reference), File.ReadAllBytes(output));
    }

    [TestMethod]
    public void BadCheckpointOptionsAreOneLine()
    {
        using var scratch = new Scratch();
        var train = WriteData(scratch.Path, "train", 16, seed: 4);
        var blocker = Path.Combine(scratch.Path, "out.onnx.ckpt");
        File.WriteAllText(blocker, "not a folder");
        var (code, stdout, stderr) = Run(["finetune", Model, "-d", train, "-o", Path.Combine(scratch.Path, "out.onnx")]);
        Assert.AreEqual(1, code, stdout);
        StringAssert.Contains(stderr, "is a file; checkpoints go into a folder");
        Assert.AreEqual("not a folder", File.ReadAllText(blocker));

        (code, stdout, stderr) = Run(["finetune", Model, "-d", train, "-o", Path.Combine(scratch.Path, "out.onnx"), "--no-checkpoint", "--restart"]);
        Assert.AreEqual(1, code, stdout);
        StringAssert.Contains(stderr, "--no-checkpoint excludes --checkpoint, --checkpoint-every, --restart and --keep-checkpoint");
        (code, stdout, stderr) = Run(["finetune", Model, "-d", train, "-o", Path.Combine(scratch.Path, "other.onnx"), "--no-checkpoint", "--checkpoint-every", "1", "--epochs", "2"]);
        Assert.AreEqual(1, code, stdout);
        (code, stdout, stderr) = Run(["finetune", Model, "-d", train, "-o", Path.Combine(scratch.Path, "other.onnx"), "--no-checkpoint"]);
        Assert.AreEqual(0, code, stderr);
        Assert.IsFalse(Directory.Exists(Path.Combine(scratch.Path, "other.onnx.ckpt")));
    }

    [TestMethod]
    public void NonFiniteLossesStopTheRunNamingTheStep()
    {
        using var scratch = new Scratch();
        var train = WriteData(scratch.Path, "train", 64, seed: 5);
        var output = Path.Combine(scratch.Path, "out.onnx");
        var (code, stdout, stderr) = Run(["finetune", Model, "-d", train, "-o", output, "--lr", "1e38", "--momentum", "0.9", "--epochs", "3", "--batch-size", "8"]);
        Assert.AreEqual(1, code, stdout);
        StringAssert.Matches(stderr, new System.Text.RegularExpressions.Regex(@"training diverged: the training loss of step \d+ \(epoch \d\) is (NaN|∞|-∞|Infinity).*lower --lr"));
        Assert.IsFalse(File.Exists(output));

        // Running variances below zero: training (batch statistics) is finite, eval-mode validation is NaN.
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Model));
        foreach (var initializer in proto.Graph.Initializer.Where(i => i.Name.EndsWith("running_var", StringComparison.Ordinal)))
        {
            var values = Enumerable.Repeat(-100f, (int)initializer.Dims.Aggregate(1L, (p, d) => p * d)).ToArray();
            initializer.FloatData.Clear();
            initializer.RawData = ByteString.CopyFrom(Bytes(values));
        }

        var negative = Path.Combine(scratch.Path, "negative_var.onnx");
        File.WriteAllBytes(negative, proto.ToByteArray());
        (code, stdout, stderr) = Run(["finetune", negative, "-d", train, "--test", train, "-o", output, "--epochs", "2", "--batch-size", "8", "--lr", "0.01"]);
        Assert.AreEqual(1, code, stdout);
        StringAssert.Contains(stderr, "training diverged: the validation loss after epoch 1 (step 8) is NaN");
        Assert.IsFalse(File.Exists(output));
    }

    /// <summary>Images [N,3,8,8] whose first channel carries the class (4 classes), and their labels.</summary>
    private static string WriteData(string folder, string name, int count, int seed)
    {
        var random = new Random(seed);
        var labels = new long[count];
        var images = new float[count * 3 * 8 * 8];
        for (var i = 0; i < count; i++)
        {
            labels[i] = random.Next(4);
            for (var j = 0; j < 3 * 64; j++)
            {
                images[(i * 192) + j] = (float)((random.NextDouble() * 2) - 1 + (j < 64 ? 0.3 * labels[i] : 0));
            }
        }

        var prefix = Path.Combine(folder, name);
        NpyFile.Write(prefix + "_images.npy", NpyArray.From<float>(images, count, 3, 8, 8));
        NpyFile.Write(prefix + "_labels.npy", NpyArray.From<long>(labels, count));
        return prefix;
    }

    /// <summary>Throws at the <paramref name="step"/>-th step's status line: a run stopped from outside after that step.</summary>
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
