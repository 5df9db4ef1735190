using Recycling.MLNet.Inference;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Tests.Cli;
using Recycling.Training.Ops;
using Recycling.Training.Recipes;
using static Recycling.Tests.Training.TinyZooFixture;

namespace Recycling.Tests.Training;

/// <summary>Model ratatouille and its DiWA baseline on the tiny zoo (two auxiliaries fine-tuned from the BatchNorm CNN fixture).</summary>
[TestClass]
public sealed class RatatouilleTests
{
    private static TinyZooFixture _fixture = null!;

    [ClassInitialize]
    public static void Build(TestContext context)
    {
        _ = context;
        _fixture = new TinyZooFixture("ratatouille", ingredients: 2);
    }

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static RatatouilleOptions Options(string folder, int runs = 3, params int[] seeds) => new(_fixture.Inputs(folder, seeds) with { Tests = [_fixture.Zoo.Train] }, _fixture.Zoo.Base, _fixture.Zoo.Ingredients)
    {
        Runs = runs,
        ProbeSteps = 3,
        ProbeBatchSize = 16,
    };

    /// <summary>
    /// Two seeds: run i of both methods has the same draw, ratatouille run 0 (from the base) is DiWA run 0 (one
    /// fine-tuning), the ratatouille runs start from the auxiliary bodies; every method has its five measures per seed,
    /// the summary is their mean and sample sd, the report folder is complete; a second call reuses every run and
    /// gives the same figures; a run whose record is lost (a kill) is the only one redone.
    /// </summary>
    [TestMethod]
    public void RunsTheRecipeAndResumes()
    {
        var options = Options("recipe", 3, 0, 1);
        var result = Ratatouille.Run(options);
        Assert.HasCount(2 * 2 * 3, result.Runs);
        foreach (var seed in new[] { 0, 1 })
        {
            var diwa = result.Runs.Where(r => r.Seed == seed && r.Method == Ratatouille.DiwaMethod).ToList();
            var rat = result.Runs.Where(r => r.Seed == seed && r.Method == Ratatouille.RatatouilleMethod).ToList();
            Assert.AreEqual(diwa[0].Run.Key, rat[0].Run.Key, "ratatouille's run from the base is DiWA's run 0");
            Assert.AreEqual(5, diwa.Concat(rat).Select(r => r.Run.Key).Distinct().Count());
            CollectionAssert.AreEqual(new[] { _fixture.Zoo.Base, _fixture.Zoo.Ingredients[0], _fixture.Zoo.Ingredients[1] }, rat.Select(r => r.Start).ToArray());
            Assert.IsTrue(diwa.All(r => r.Start == _fixture.Zoo.Base));
            CollectionAssert.AreEqual(Draw(diwa), Draw(rat), "run i of both methods uses draw i");
            Assert.AreEqual(3, Draw(diwa).Distinct().Count(), "the runs of one seed have different draws");
        }

        Assert.AreNotEqual(result.Runs[1].Run.Key, result.Runs.Single(r => r.Seed == 1 && r.Method == Ratatouille.DiwaMethod && r.Run.Label.EndsWith("run 1", StringComparison.Ordinal)).Run.Key, "seeds draw differently");

        var report = result.Report;
        CollectionAssert.AreEqual(new[] { "val", "tiny_train" }, report.Splits.ToArray());
        Assert.HasCount(2 * 3 * 5, report.Scores);
        foreach (var seed in new[] { 0, 1 })
        {
            foreach (var method in new[] { Ratatouille.RatatouilleMethod, Ratatouille.DiwaMethod })
            {
                var runs = result.Runs.Where(r => r.Seed == seed && r.Method == method).ToList();
                var val = runs.Select(r => r.Run.Figures["val"] * 100).ToList();
                Assert.AreEqual(val.Average(), Score(report, $"{method} mean individual", seed, "val"), 1e-9);
                Assert.AreEqual(val.Max(), Score(report, $"{method} best individual", seed, "val"), 1e-9);
                var soup = report.Soups.Single(s => s.Method == method && s.Seed == seed);
                Assert.HasCount(3, soup.Members);
                Assert.AreEqual(soup.ValAccuracy, Score(report, $"{method} greedy soup", seed, "val"), 1e-9);
                Assert.IsGreaterThanOrEqualTo(val.Max() - 1e-9, soup.ValAccuracy, "a greedy soup never scores below its first ingredient on val");
            }

            Assert.HasCount(5, report.Soups.Single(s => s.Method == Ratatouille.UnionMethod && s.Seed == seed).Members);
        }

        var mean = report.Summary.Single(s => s.Method == "DiWA uniform soup" && s.Split == "tiny_train");
        var values = new[] { Score(report, "DiWA uniform soup", 0, "tiny_train"), Score(report, "DiWA uniform soup", 1, "tiny_train") };
        Assert.AreEqual(values.Average(), mean.Mean, 1e-9);
        Assert.AreEqual(Math.Abs(values[0] - values[1]) / Math.Sqrt(2), mean.StandardDeviation, 1e-9);
        foreach (var file in new[] { "README.md", "summary.csv", "results.csv", "runs.csv", "ratatouille.json", "ratatouille.png", "ratatouille-soup_ingredients.png" })
        {
            Assert.IsTrue(File.Exists(Path.Combine(options.Folder, file)), file);
        }

        JsonSchemaCheck.Validate("recipe", File.ReadAllText(Path.Combine(options.Folder, "ratatouille.json"))).Dispose();

        var again = Ratatouille.Run(options);
        Assert.IsTrue(again.Runs.All(r => r.Run.Reused), "a second call reuses every run");
        CollectionAssert.AreEqual(report.Scores.Select(s => s.Accuracy["val"]).ToArray(), again.Report.Scores.Select(s => s.Accuracy["val"]).ToArray());

        var lost = result.Runs.Single(r => r.Seed == 1 && r.Method == Ratatouille.RatatouilleMethod && r.Start == _fixture.Zoo.Ingredients[1]).Run;
        File.Delete(Path.Combine(lost.Folder, RunStore.RecordFile));
        var resumed = Ratatouille.Run(options);
        CollectionAssert.AreEqual(new[] { lost.Key }, resumed.Runs.Where(r => !r.Run.Reused).Select(r => r.Run.Key).Distinct().ToArray());
    }

    /// <summary>
    /// Known structure: with learning rates of 1e-12 (fine-tuning and short probe) and frozen BatchNorm every run stays
    /// at its start, so (a) every auxiliary start carries the shared head (equal to the base run's head to 1e-6) on its
    /// own body, and (b) the DiWA runs are one model three times: every DiWA soup ties, so the greedy soup keeps all
    /// three with ≥ and only the first with >, and the uniform soup, the ensemble and each run score the same.
    /// </summary>
    [TestMethod]
    public void SharedHeadAndForcedGreedySoups()
    {
        var options = Options("frozen") with
        {
            ProbeLearningRate = 1e-12,
            Training = new TargetTraining { Epochs = 1, BatchSize = 16, LearningRate = 1e-12, FeatureAt = FeatureAt, BatchNorm = BatchNormMode.Frozen },
            WeightDecays = [0],
        };
        var result = Ratatouille.Run(options);
        var shared = Ratatouille.ReadHead(result.SharedHead);
        Assert.AreEqual(FeatureAt, shared.At);
        foreach (var run in result.Runs.Where(r => r.Method == Ratatouille.RatatouilleMethod))
        {
            var head = Ratatouille.ReadHead(run.Run.Model);
            Assert.IsLessThan(1e-6, TrainingSupport.RelativeGap(head.Weight, shared.Weight), run.Run.Label);
            Assert.IsLessThan(1e-6, TrainingSupport.RelativeGap(head.Bias, shared.Bias), run.Run.Label);
            using var model = OnnxModel.Open(run.Run.Model);
            using var start = OnnxModel.Open(run.Start);
            var body = start.Tensors.Where(t => t.Kind == TensorKind.Initializer && t.DataType == OnnxDataType.Float && model.Tensors.Any(m => m.Kind == TensorKind.Initializer && m.Name == t.Name)).ToList();
            Assert.IsNotEmpty(body);
            foreach (var tensor in body.Where(t => !t.Name.StartsWith("head", StringComparison.Ordinal)))
            {
                Assert.IsLessThan(1e-6, MaxDifference(model.Tensors.First(m => m.Kind == TensorKind.Initializer && m.Name == tensor.Name).ReadFloat32(), tensor.ReadFloat32()), $"{run.Run.Label}: {tensor.Name} is the start's body");
            }
        }

        var diwa = result.Runs.Where(r => r.Method == Ratatouille.DiwaMethod).ToList();
        var logits = diwa.Select(r => Logits(r.Run.Model)).ToList();
        Assert.IsTrue(logits.All(l => TrainingSupport.RelativeGap(l, logits[0]) < 1e-5), "the DiWA runs stay at the start");
        var ties = result.Report.Soups.Single(s => s.Method == Ratatouille.DiwaMethod);
        Assert.AreEqual(">=", ties.Rule);
        Assert.HasCount(3, ties.Accepted);
        var individual = diwa[0].Run.Figures["val"] * 100;
        foreach (var measure in new[] { "best individual", "mean individual", "ensemble", "uniform soup", "greedy soup" })
        {
            Assert.AreEqual(individual, Score(result.Report, $"DiWA {measure}", 0, "val"), 1e-9, measure);
        }

        var strict = Ratatouille.Run(options with { Rule = GreedyRule.Strict });
        Assert.IsTrue(strict.Runs.All(r => r.Run.Reused), "the rule is not part of any run");
        var first = strict.Report.Soups.Single(s => s.Method == Ratatouille.DiwaMethod);
        Assert.AreEqual(">", first.Rule);
        CollectionAssert.AreEqual(new[] { first.Order[0] }, first.Accepted.ToArray());
    }

    /// <summary>`recycle ratatouille --json` fits the recipe schema and writes the report folder; `recycle fuse --json` too; bad input is one line and exit 1.</summary>
    [TestMethod]
    public void CommandsWriteTheReportAndRefuseBadInput()
    {
        var folder = Path.Combine(_fixture.Folder, "cli");
        string[] common = ["--base", _fixture.Zoo.Base, "-d", _fixture.Zoo.Train, "--val", _fixture.Zoo.ValidationPrefix, "--test", _fixture.Zoo.Train, "--seeds", "1", "--epochs", "1", "--batch-size", "16", "--at", FeatureAt, "--parallel", "1"];
        var (code, stdout, stderr) = TrainingSupport.Run(["ratatouille", _fixture.Zoo.Ingredients[0], _fixture.Zoo.Ingredients[1], .. common, "--runs", "2", "--probe-steps", "2", "-o", folder, "--json"]);
        Assert.AreEqual(0, code, stderr);
        using (var json = JsonSchemaCheck.Validate("recipe", stdout))
        {
            Assert.AreEqual("ratatouille", json.RootElement.GetProperty("recipe").GetString());
            Assert.AreEqual(3 * 5, json.RootElement.GetProperty("scores").GetArrayLength());
        }

        Assert.IsTrue(File.Exists(Path.Combine(folder, "README.md")));
        Assert.HasCount(5, Directory.GetDirectories(Path.Combine(folder, "runs")), "the shared head, one short probe (only auxiliary 0 starts a run) and three fine-tunings (ratatouille's base run is DiWA's run 0)");
        StringAssert.Contains(File.ReadAllText(Path.Combine(folder, "README.md")), "| ratatouille greedy soup | 1 |");

        (code, stdout, stderr) = TrainingSupport.Run(["ratatouille", _fixture.Zoo.Ingredients[0], _fixture.Zoo.Ingredients[1], .. common, "--runs", "2", "--probe-steps", "2", "-o", folder]);
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "reused");
        StringAssert.Contains(stdout, "DiWA uniform soup | 1 | ");

        var fuse = Path.Combine(_fixture.Folder, "fuse-cli");
        (code, stdout, stderr) = TrainingSupport.Run(["fuse", _fixture.Zoo.Ingredients[0], _fixture.Zoo.Ingredients[1], .. common, "-o", fuse, "--no-intertraining", "--json"]);
        Assert.AreEqual(0, code, stderr);
        using (var json = JsonSchemaCheck.Validate("recipe", stdout))
        {
            CollectionAssert.AreEqual(new[] { "fused", "base" }, json.RootElement.GetProperty("summary").EnumerateArray().Select(s => s.GetProperty("method").GetString()).Distinct().ToArray());
        }

        foreach (var file in new[] { "README.md", "summary.csv", "results.csv", "runs.csv", "fuse.json", "fuse.png" })
        {
            Assert.IsTrue(File.Exists(Path.Combine(fuse, file)), file);
        }

        (code, _, stderr) = TrainingSupport.Run(["ratatouille", _fixture.Zoo.Base, .. common, "-o", Path.Combine(_fixture.Folder, "bad")]);
        Assert.AreEqual(1, code);
        StringAssert.Contains(stderr, "must be different files");
        Assert.AreEqual(1, stderr.Trim().Split('\n').Length, stderr);
        (code, _, stderr) = TrainingSupport.Run(["ratatouille", _fixture.Zoo.Ingredients[0], .. common, "--rule", "gt", "-o", Path.Combine(_fixture.Folder, "bad")]);
        Assert.AreEqual(1, code);
        StringAssert.Contains(stderr, "--rule gt: use >= or >");
        (code, _, stderr) = TrainingSupport.Run(["ratatouille", _fixture.Zoo.Ingredients[0], .. common, "--runs", "1", "-o", Path.Combine(_fixture.Folder, "bad")]);
        Assert.AreEqual(1, code);
        StringAssert.Contains(stderr, "at least 2");

        // an auxiliary of another architecture is refused before any training
        var foreign = Path.Combine(Recycling.Tests.Zoo.ZooPaths.RepositoryRoot, "models", "cnn_aux_blur.onnx");
        (code, _, stderr) = TrainingSupport.Run(["ratatouille", foreign, .. common, "-o", Path.Combine(_fixture.Folder, "foreign")]);
        Assert.AreEqual(1, code);
        Assert.AreEqual(1, stderr.Trim().Split('\n').Length, stderr);
        StringAssert.StartsWith(stderr, "error: ");
        Assert.IsFalse(Directory.Exists(Path.Combine(_fixture.Folder, "foreign", "runs")), "nothing was trained");
    }

    private static double Score(RecipeReport report, string method, int seed, string split) => report.Scores.Single(s => s.Method == method && s.Seed == seed).Accuracy[split];

    /// <summary>The draw a run used, read back from its run.json (learning rate, weight decay, seed).</summary>
    private static string[] Draw(IEnumerable<RecipeRun> runs) =>
        [.. runs.Select(r =>
        {
            using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(r.Run.Folder, RunStore.RecordFile)));
            var p = json.RootElement.GetProperty("parameters");
            return $"{p.GetProperty("lr").GetString()}|{p.GetProperty("weight_decay").GetString()}|{p.GetProperty("seed").GetString()}";
        })];

    private static double MaxDifference(float[] a, float[] b)
    {
        Assert.HasCount(b.Length, a);
        return a.Zip(b).Max(p => Math.Abs(p.First - (double)p.Second));
    }

    private static float[] Logits(string model)
    {
        using var scorer = OnnxScorer.Open(model, new ScoringOptions { Threads = 1 });
        return scorer.Run(_fixture.Zoo.Validation, "logits").Data;
    }
}
