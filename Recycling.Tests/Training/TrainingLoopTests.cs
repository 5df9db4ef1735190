using System.Security.Cryptography;
using System.Text.Json;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Zoo;
using Recycling.Training;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Training;

/// <summary>
/// The training loop against PyTorch (scripts/training/make_schedule_fixture.py, torch 1.13): learning-rate schedules
/// step for step, training with them and averaging the last epochs' weights land on PyTorch's held-out logits (1e-4
/// relative for SGD, 1e-3 for AdamW); --keep best writes exactly the weights of a run stopped at the best epoch; the
/// JSON log and the lineage metadata say what ran.
/// </summary>
[TestClass]
public sealed class TrainingLoopTests
{
    private static string FixturePath(string file) => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", file);

    private static readonly Lazy<IReadOnlyDictionary<string, NpyArray>> Schedules = new(() => NpyFile.ReadNpz(FixturePath("schedules.npz")));

    private static readonly Lazy<IReadOnlyDictionary<string, NpyArray>> Mlp = new(() => NpyFile.ReadNpz(FixturePath("mlp.npz")));

    [TestMethod]
    public void LearningRatesEqualPyTorchSchedulersStepForStep()
    {
        var curves = Schedules.Value.Where(p => p.Key.StartsWith("lr:", StringComparison.Ordinal)).ToList();
        Assert.IsGreaterThanOrEqualTo(6, curves.Count);
        foreach (var (key, curve) in curves)
        {
            var parts = key.Split(':');
            var schedule = Enum.Parse<LearningRateSchedule>(parts[1], ignoreCase: true);
            int warmup = int.Parse(parts[2][1..], System.Globalization.CultureInfo.InvariantCulture), total = int.Parse(parts[3][1..], System.Globalization.CultureInfo.InvariantCulture);
            var expected = curve.AsSpan<double>().ToArray();
            Assert.HasCount(total, expected);
            for (var t = 0; t < total; t++)
            {
                Assert.AreEqual(expected[t], 0.1 * LearningRates.Factor(schedule, warmup, total, t), 1e-12, $"{key} step {t}");
            }
        }
    }

    [TestMethod]
    [DataRow("sgd:cosine:w2", false)]
    [DataRow("sgd:cosine:w2", true)]
    [DataRow("adamw:linear:w3", false)]
    [DataRow("adamw:linear:w3", true)]
    public void ScheduledTrainingAndEpochAveragingLandOnPyTorchLogits(string run, bool average)
    {
        using var scratch = new Scratch();
        var data = WriteSplit(scratch.Path);
        var output = Path.Combine(scratch.Path, "out.onnx");
        var adamw = run.StartsWith("adamw", StringComparison.Ordinal);
        string[] settings = adamw
            ? ["--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.01", "--schedule", "linear", "--warmup-steps", "3"]
            : ["--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--schedule", "cosine", "--warmup-steps", "2"];
        var (code, stdout, stderr) = Run(["finetune", FixturePath("mlp.onnx"), "--train", data, "--epochs", "3", "--batch-size", "4", "--no-shuffle",
            "-o", output, "--json", .. settings, .. average ? new[] { "--average-epochs", "2" } : []]);
        Assert.AreEqual(0, code, stderr + stdout);
        using var json = JsonDocument.Parse(stdout);
        CollectionAssert.AreEqual(average ? new[] { 2, 3 } : [3], json.RootElement.GetProperty("keptEpochs").EnumerateArray().Select(e => e.GetInt32()).ToArray());

        var logits = RunOrt(output, new Dictionary<string, TorchSharp.torch.Tensor> { ["input"] = ToTorch(Mlp.Value["heldout:input"]) })["logits"];
        var expected = Schedules.Value[$"{(average ? "averaged" : "trained")}:{run}"].ToSingleArray();
        Assert.IsLessThanOrEqualTo(adamw ? 1e-3 : 1e-4, RelativeGap(logits, expected), run);
    }

    [TestMethod]
    public void KeepBestWritesTheBestEpochsWeightsAndTheLogSaysWhy()
    {
        using var scratch = new Scratch();
        var data = WriteSplit(scratch.Path);
        // Validation labels that the training moves away from (all but the first three shifted by one class), so that
        // at this large lr the accuracy peaks early: 25 %, 8.3 %, 16.7 %, 16.7 %, 16.7 % (best: epoch 1).
        var val = Path.Combine(scratch.Path, "val");
        var labels = Mlp.Value["labels"].ToInt64Array().Select((l, i) => i < 3 ? l : (l + 1) % 5).ToArray();
        NpyFile.Write(val + "_images.npy", Mlp.Value["input:input"]);
        NpyFile.Write(val + "_labels.npy", NpyArray.From<long>(labels, labels.Length));
        var log = Path.Combine(scratch.Path, "train.jsonl");
        var best = Path.Combine(scratch.Path, "best.onnx");
        string[] common = ["finetune", FixturePath("mlp.onnx"), "--train", data, "--val", val, "--batch-size", "4", "--no-shuffle", "--optimizer", "sgd", "--lr", "2", "--json"];
        var (code, stdout, stderr) = Run([.. common, "--epochs", "5", "--keep", "best", "--log", log, "-o", best]);
        Assert.AreEqual(0, code, stderr + stdout);
        using var json = JsonDocument.Parse(stdout);
        var epochs = json.RootElement.GetProperty("epochs").EnumerateArray().ToList();
        var accuracies = epochs.Select(e => e.GetProperty("validationAccuracy").GetDouble()).ToList();
        var bestEpoch = accuracies.LastIndexOf(accuracies.Max()) + 1;
        Assert.AreEqual(bestEpoch, json.RootElement.GetProperty("keptEpochs")[0].GetInt32());
        Assert.IsLessThan(5, bestEpoch, "the best epoch is not the last: " + string.Join(", ", accuracies));

        var lines = File.ReadAllLines(log);
        Assert.HasCount(5, lines);
        for (var i = 0; i < lines.Length; i++)
        {
            using var line = JsonDocument.Parse(lines[i]);
            Assert.AreEqual(i + 1, line.RootElement.GetProperty("epoch").GetInt32());
            Assert.AreEqual(accuracies[i], line.RootElement.GetProperty("validationAccuracy").GetDouble());
            Assert.AreEqual(2, line.RootElement.GetProperty("learningRate").GetDouble(), 1e-12);
        }

        // The same run stopped after the best epoch has the same weights, byte for byte.
        var stopped = Path.Combine(scratch.Path, "stopped.onnx");
        Assert.AreEqual(0, Run([.. common, "--epochs", bestEpoch.ToString(System.Globalization.CultureInfo.InvariantCulture), "-o", stopped]).Code);
        using var a = OnnxModel.Open(best);
        using var b = OnnxModel.Open(stopped);
        foreach (var tensor in a.Tensors)
        {
            CollectionAssert.AreEqual(b.Tensors.Single(t => t.Path == tensor.Path).ReadRawBytes(), tensor.ReadRawBytes(), tensor.Path);
        }
    }

    [TestMethod]
    public void CSharpRunRecordsDataHashesAndEveryHyperparameter()
    {
        using var scratch = new Scratch();
        var data = WriteSplit(scratch.Path);
        var output = Path.Combine(scratch.Path, "out.onnx");
        var result = FineTuner.Run(new FineTuneOptions
        {
            Model = FixturePath("mlp.onnx"),
            Train = data,
            Validation = data,
            Output = output,
            Epochs = 3,
            BatchSize = 5,
            AverageEpochs = 5,
            Settings = new TrainingSettings { Schedule = LearningRateSchedule.Cosine, WarmupSteps = 1, LearningRate = 0.05 },
        });
        CollectionAssert.AreEqual(new[] { 1, 2, 3 }, result.KeptEpochs.ToArray(), "K beyond the epochs run averages them all");
        // 12 samples in batches of 5: 9 steps, 1 of warmup; the last (t = 8) at 0.05 · ½ (1 + cos(π 7/8)), lr 0 only after it.
        Assert.AreEqual(0.05 * 0.5 * (1 + Math.Cos(Math.PI * 7 / 8)), result.Epochs[^1].LearningRate, 1e-12);

        using var model = OnnxModel.Open(output);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(File.ReadAllBytes(data + "_images.npy"));
        sha.AppendData(File.ReadAllBytes(data + "_labels.npy"));
        var dataHash = Convert.ToHexStringLower(sha.GetHashAndReset());
        Assert.AreEqual(dataHash, model.Metadata["recycling.finetune.train_sha256"]);
        Assert.AreEqual(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(FixturePath("mlp.onnx")))), model.Metadata["recycling.finetune.parent_sha256"]);
        using var settings = JsonDocument.Parse(model.Metadata["recycling.finetune.settings"]);
        Assert.AreEqual("cosine", settings.RootElement.GetProperty("schedule").GetString());
        Assert.AreEqual(1, settings.RootElement.GetProperty("warmup_steps").GetInt32());
        Assert.AreEqual("last", settings.RootElement.GetProperty("keep").GetString());
        Assert.AreEqual(5, settings.RootElement.GetProperty("average_epochs").GetInt32());
        Assert.AreEqual(dataHash, settings.RootElement.GetProperty("validation_sha256").GetString());
        StringAssert.StartsWith(model.Metadata["recycling.finetune.tool"], "Recycling.Training ");
    }

    [TestMethod]
    public void ExternalDataOutputRunsInOnnxRuntime()
    {
        using var scratch = new Scratch();
        var data = WriteSplit(scratch.Path);
        var embedded = Path.Combine(scratch.Path, "embedded.onnx");
        var external = Path.Combine(scratch.Path, "external.onnx");
        string[] common = ["finetune", FixturePath("mlp.onnx"), "--train", data, "--no-shuffle", "--lr", "0.1"];
        Assert.AreEqual(0, Run([.. common, "-o", embedded]).Code);
        var (code, stdout, stderr) = Run([.. common, "--external-data", "-o", external]);
        Assert.AreEqual(0, code, stderr + stdout);
        Assert.IsGreaterThan(1, Directory.GetFiles(scratch.Path, "external.onnx*").Length, "a data file beside the model");
        Assert.IsLessThan(new FileInfo(embedded).Length, new FileInfo(external).Length);
        var feeds = new Dictionary<string, TorchSharp.torch.Tensor> { ["input"] = ToTorch(Mlp.Value["heldout:input"]) };
        CollectionAssert.AreEqual(RunOrt(embedded, feeds)["logits"], RunOrt(external, feeds)["logits"]);
    }

    [TestMethod]
    public void BadLoopOptionsEndInOneLineAndWriteNothing()
    {
        using var scratch = new Scratch();
        var data = WriteSplit(scratch.Path);
        var model = FixturePath("mlp.onnx");
        var output = Path.Combine(scratch.Path, "x.onnx");
        foreach (var (extra, message) in new (string[], string)[]
        {
            (["--keep", "best"], "--keep best needs validation data"),
            (["--keep", "best", "--val", data, "--average-epochs", "2"], "exclude each other"),
            (["--keep", "first"], "--keep first: use last or best"),
            (["--schedule", "step"], "--schedule step: use constant, cosine or linear"),
            (["--warmup-steps", "-1"], "warmup steps (-1)"),
            (["--average-epochs", "0"], "averaged epochs (0)"),
            (["--log", model], "mlp.onnx"),
            (["--log", data + "_labels.npy"], "_labels.npy"),
        })
        {
            var before = File.ReadAllBytes(data + "_labels.npy");
            var (code, _, stderr) = Run(["finetune", model, "--train", data, "-o", output, .. extra]);
            Assert.AreEqual(1, code, string.Join(" ", extra));
            Assert.AreEqual(1, stderr.Trim().Split('\n').Length, stderr);
            StringAssert.Contains(stderr, message);
            Assert.IsFalse(File.Exists(output));
            CollectionAssert.AreEqual(before, File.ReadAllBytes(data + "_labels.npy"));
        }
    }

    /// <summary>The MLP fixture's training inputs and labels as a split prefix.</summary>
    private static string WriteSplit(string folder)
    {
        var prefix = Path.Combine(folder, "train");
        NpyFile.Write(prefix + "_images.npy", Mlp.Value["input:input"]);
        NpyFile.Write(prefix + "_labels.npy", Mlp.Value["labels"]);
        return prefix;
    }
}
