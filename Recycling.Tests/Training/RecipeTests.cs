using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Training.Recipes;
using static Recycling.Tests.Training.TinyZooFixture;

namespace Recycling.Tests.Training;

/// <summary>Recipe runs on the tiny zoo (seconds each): content-addressed, resumable, concurrent, and fusing with a known outcome.</summary>
[TestClass]
public sealed class RecipeTests
{
    private static TinyZooFixture _fixture = null!;

    [ClassInitialize]
    public static void Build(TestContext context)
    {
        _ = context;
        _fixture = new TinyZooFixture("recipes", ingredients: 1);
    }

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static List<RunSpec> Specs(int count) =>
        [.. Enumerable.Range(0, count).Select(seed => TargetRuns.Spec($"base seed {seed}", _fixture.Zoo.Base, _fixture.Zoo.Train, _fixture.Zoo.ValidationPrefix, [], TinyTraining, seed))];

    /// <summary>The key depends on file contents and parameters, not on paths or labels.</summary>
    [TestMethod]
    public void KeysAreContentAddressed()
    {
        var store = new RunStore(Path.Combine(_fixture.Folder, "keys"), 1);
        var copy = Path.Combine(_fixture.Folder, "base-copy.onnx");
        File.Copy(_fixture.Zoo.Base, copy, overwrite: true);
        var spec = Specs(1)[0];
        Assert.AreEqual(store.Key(spec), store.Key(spec with { Label = "other", Models = new Dictionary<string, string> { ["model"] = copy } }));
        Assert.AreNotEqual(store.Key(spec), store.Key(TargetRuns.Spec("x", _fixture.Zoo.Base, _fixture.Zoo.Train, _fixture.Zoo.ValidationPrefix, [], TinyTraining with { LearningRate = 2e-2 }, 0)));
        Assert.AreNotEqual(store.Key(spec), store.Key(TargetRuns.Spec("x", _fixture.Zoo.Ingredients[0], _fixture.Zoo.Train, _fixture.Zoo.ValidationPrefix, [], TinyTraining, 0)));
    }

    /// <summary>
    /// A recipe that dies in its third run (after writing part of a model) is resumed: the runs that finished are
    /// reused byte for byte without executing again, the broken one is redone.
    /// </summary>
    [TestMethod]
    public void ResumesWithoutRedoingFinishedRuns()
    {
        var root = Path.Combine(_fixture.Folder, "resume");
        var specs = Specs(3);
        var store = new RunStore(root, 1);
        var executed = new List<string>();
        Assert.ThrowsExactly<RecyclingException>(() => store.RunAll(specs, (spec, output) =>
        {
            if (spec.Parameters["seed"] == "2")
            {
                File.WriteAllText(output, "half a model");
                throw new RecyclingException("killed");
            }

            lock (executed)
            {
                executed.Add(spec.Label);
            }

            return TargetRuns.Execute(spec, output);
        }));
        var finished = specs.Where(s => store.Finished(s) is not null).Select(s => s.Label).ToList();
        CollectionAssert.AreEquivalent(executed, finished);
        Assert.DoesNotContain("base seed 2", finished);
        var bytes = finished.ToDictionary(l => l, l => File.ReadAllBytes(store.Finished(specs.Single(s => s.Label == l))!.Model));

        var again = new List<string>();
        var records = new RunStore(root, 1).RunAll(specs, (spec, output) =>
        {
            again.Add(spec.Label);
            return TargetRuns.Execute(spec, output);
        });
        CollectionAssert.AreEquivalent(specs.Select(s => s.Label).Except(finished).ToList(), again);
        foreach (var record in records.Where(r => finished.Contains(r.Label)))
        {
            Assert.IsTrue(record.Reused);
            CollectionAssert.AreEqual(bytes[record.Label], File.ReadAllBytes(record.Model));
        }

        Assert.IsTrue(records.All(r => r.Figures["val"] is >= 0 and <= 1));
    }

    /// <summary>
    /// Two runs on two threads compute what the same runs compute one after the other: logits within 1e-4 relative.
    /// Not byte for byte: the runs divide LibTorch's intra-op threads among them, and a different thread count
    /// changes the order of float reductions.
    /// </summary>
    [TestMethod]
    public void ConcurrentRunsEqualSequentialRuns()
    {
        var specs = Specs(2);
        var sequential = new RunStore(Path.Combine(_fixture.Folder, "sequential"), 1).RunAll(specs, TargetRuns.Execute);
        var concurrent = new RunStore(Path.Combine(_fixture.Folder, "concurrent"), 2).RunAll(specs, TargetRuns.Execute);
        for (var i = 0; i < specs.Count; i++)
        {
            Assert.AreEqual(sequential[i].Key, concurrent[i].Key);
            Assert.IsLessThan(1e-4, TrainingSupport.RelativeGap(Logits(concurrent[i].Model), Logits(sequential[i].Model)), specs[i].Label);
        }

        Assert.IsGreaterThan(1e-3, TrainingSupport.RelativeGap(Logits(sequential[0].Model), Logits(sequential[1].Model)), "the two seeds must differ");
    }

    /// <summary>
    /// Fusing two copies of one auxiliary gives that auxiliary's body exactly, and intertraining picks the first copy
    /// (a tie), so the fused and intertraining runs of each seed compute the same logits; the base runs do not.
    /// </summary>
    [TestMethod]
    public void FusingOfTwoCopiesEqualsIntertraining()
    {
        var copy = Path.Combine(_fixture.Folder, "aux-copy.onnx");
        File.Copy(_fixture.Zoo.Ingredients[0], copy, overwrite: true);
        var options = new FusingOptions(_fixture.Inputs("fusing", 0, 1), _fixture.Zoo.Base, [_fixture.Zoo.Ingredients[0], copy]);
        var result = Fusing.Run(options);
        Assert.AreEqual(_fixture.Zoo.Ingredients[0], result.BestAuxiliary);
        Assert.HasCount(6, result.Runs);
        CollectionAssert.AreEquivalent(new[] { "fused", "base", "intertraining" }, result.Runs.Select(r => r.Method).Distinct().ToArray());
        foreach (var seed in new[] { 0, 1 })
        {
            var fused = Logits(result.Runs.Single(r => r.Method == "fused" && r.Seed == seed).Run.Model);
            var inter = Logits(result.Runs.Single(r => r.Method == "intertraining" && r.Seed == seed).Run.Model);
            var plain = Logits(result.Runs.Single(r => r.Method == "base" && r.Seed == seed).Run.Model);
            Assert.IsLessThan(1e-6, TrainingSupport.RelativeGap(fused, inter), $"seed {seed}");
            Assert.IsGreaterThan(1e-3, TrainingSupport.RelativeGap(plain, inter), $"seed {seed}: the base run must differ");
        }

        Assert.IsTrue(Fusing.Run(options).Runs.All(r => r.Run.Reused), "a second run reuses every fine-tuning");
    }

    /// <summary>`recycle fuse` on the tiny zoo: one seed, the summary table and runs.csv (one row per fine-tuning); a second call reuses every run.</summary>
    [TestMethod]
    public void FuseCommandWritesTheTableAndResumes()
    {
        var folder = Path.Combine(_fixture.Folder, "fuse-cli");
        var copy = Path.Combine(_fixture.Folder, "aux-copy-cli.onnx");
        File.Copy(_fixture.Zoo.Ingredients[0], copy, overwrite: true);
        string[] args = ["fuse", _fixture.Zoo.Ingredients[0], copy, "--base", _fixture.Zoo.Base, "-d", _fixture.Zoo.Train, "--val", _fixture.Zoo.ValidationPrefix, "-o", folder,
            "--seeds", "1", "--epochs", "1", "--batch-size", "16", "--at", FeatureAt, "--parallel", "1"];
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.AreEqual(0, Recycling.Cli.RecycleCli.Run(args, stdout, stderr), stderr.ToString());
        StringAssert.Contains(stdout.ToString(), "fused | 1 | ");
        var csv = File.ReadAllLines(Path.Combine(folder, "runs.csv"));
        Assert.HasCount(4, csv);
        Assert.IsTrue(csv.Skip(1).All(l => l.Contains(",False,", StringComparison.Ordinal)));

        stdout = new StringWriter();
        Assert.AreEqual(0, Recycling.Cli.RecycleCli.Run(args, stdout, stderr), stderr.ToString());
        Assert.IsTrue(File.ReadAllLines(Path.Combine(folder, "runs.csv")).Skip(1).All(l => l.Contains(",True,", StringComparison.Ordinal)));

        var error = new StringWriter();
        Assert.AreEqual(1, Recycling.Cli.RecycleCli.Run(["fuse", _fixture.Zoo.Ingredients[0], "--base", _fixture.Zoo.Base, "-d", _fixture.Zoo.Train, "--val", _fixture.Zoo.ValidationPrefix, "-o", Path.Combine(_fixture.Folder, "one")], new StringWriter(), error));
        StringAssert.Contains(error.ToString(), "at least two auxiliary models");
    }

    private static float[] Logits(string model)
    {
        using var scorer = OnnxScorer.Open(model, new ScoringOptions { Threads = 1 });
        return scorer.Run(_fixture.Zoo.Validation, "logits").Data;
    }
}
