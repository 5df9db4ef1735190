using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Training;
using Recycling.Tests.Cli;
using Recycling.Training.Recipes;
using static Recycling.Tests.Training.TinyZooFixture;

namespace Recycling.Tests.Training;

/// <summary>
/// ColD fusion on the tiny zoo (seconds): the BatchNorm CNN fixture as the base, contributors with 2-, 3- and 4-way
/// relabellings of the learnable synthetic task (so their heads differ in shape and are dropped), the 4-way task as
/// the held-out target.
/// </summary>
[TestClass]
public sealed class ColdFusionTests
{
    private static TinyZooFixture _fixture = null!;
    private static List<ColdFusionContributor> _contributors = null!;

    [ClassInitialize]
    public static void Build(TestContext context)
    {
        _ = context;
        _fixture = new TinyZooFixture("coldfusion", ingredients: 0);
        _contributors =
        [
            Task("two", seed: 11, classes: 2),
            Task("three", seed: 12, classes: 3),
            Task("four", seed: 13, classes: 4),
        ];
    }

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    /// <summary>A contributor whose data are the synthetic task's samples with labels folded into <paramref name="classes"/> classes.</summary>
    private static ColdFusionContributor Task(string name, int seed, int classes)
    {
        var prefix = TinyZoo.WriteSplit(Path.Combine(_fixture.Folder, name), 80, seed);
        var labels = NpyFile.Read(prefix + "_labels.npy").ToInt64Array();
        NpyFile.Write(prefix + "_labels.npy", NpyArray.From<long>([.. labels.Select(l => Math.Min(l, classes - 1))], labels.Length));
        return new ColdFusionContributor { Name = name, Train = prefix };
    }

    private static ColdFusionOptions Options(string folder, int rounds, IReadOnlyList<ColdFusionContributor>? contributors = null) => new()
    {
        Base = _fixture.Zoo.Base,
        Contributors = contributors ?? _contributors,
        Rounds = rounds,
        TargetTrain = _fixture.Zoo.Train,
        TargetValidation = _fixture.Zoo.ValidationPrefix,
        Folder = Path.Combine(_fixture.Folder, folder),
        Training = TinyTraining,
        Seeds = [0],
        Parallelism = 1,
    };

    private static Dictionary<string, float[]> Initializers(string model)
    {
        using var opened = OnnxModel.Open(model);
        return opened.Tensors.Where(t => t.Kind == TensorKind.Initializer && t.DataType == OnnxDataType.Float).ToDictionary(t => t.Name, t => t.ReadFloat32());
    }

    private static double MaxGap(float[] actual, double[] expected)
    {
        var scale = Math.Max(expected.Max(Math.Abs), 1e-12);
        return actual.Select((a, i) => Math.Abs(a - expected[i])).Max() / scale;
    }

    /// <summary>
    /// A contributor whose learning rate is 1e-30 (the fine-tuner refuses 0) and whose BatchNorm statistics are frozen
    /// returns the body it was given; the shared model after the round is then, tensor by tensor, the average of that
    /// unchanged body and the other two contributors' bodies (computed here in double from the runs' files, 1e-6
    /// relative), the heads are dropped, and the round moved the body away from the base.
    /// </summary>
    [TestMethod]
    public void SharedModelIsTheAverageOfTheReturnedBodies()
    {
        var still = _contributors[0] with { Training = TinyTraining with { Optimizer = OptimizerKind.Sgd, LearningRate = 1e-30, WeightDecay = 0, BatchNorm = Recycling.Training.Ops.BatchNormMode.Frozen } };
        var result = ColdFusion.Run(Options("average", 1, [still, _contributors[1], _contributors[2]]));
        var round = result.Rounds.Single(r => r.Round == 1);
        Assert.HasCount(3, round.Contributions);
        var shared = Initializers(round.Model);
        var baseTensors = Initializers(_fixture.Zoo.Base);
        var runs = round.Contributions.Select(c => Initializers(c.Model)).ToList();
        Assert.DoesNotContain("head.weight", shared.Keys, "heads of different shapes are dropped");
        Assert.IsNotEmpty(shared);
        var moved = 0.0;
        foreach (var (name, tensor) in shared)
        {
            Assert.IsLessThan(1e-6, MaxGap(runs[0][name], [.. baseTensors[name].Select(v => (double)v)]), $"{name}: the lr-1e-30 contributor returns the base body");
            var average = Enumerable.Range(0, tensor.Length).Select(i => runs.Average(r => (double)r[name][i])).ToArray();
            Assert.IsLessThan(1e-6, MaxGap(tensor, average), $"{name}: the shared model is the average of the three returned bodies");
            var ofOthers = Enumerable.Range(0, tensor.Length).Select(i => (baseTensors[name][i] + (double)runs[1][name][i] + runs[2][name][i]) / 3).ToArray();
            Assert.IsLessThan(1e-6, MaxGap(tensor, ofOthers), $"{name}: = (base + the two moving contributors) / 3");
            moved = Math.Max(moved, MaxGap(tensor, [.. baseTensors[name].Select(v => (double)v)]));
        }

        Assert.IsGreaterThan(1e-3, moved, "the two moving contributors changed the body");
        Assert.AreEqual(_fixture.Zoo.Base, result.Rounds.Single(r => r.Round == 0).Model);
        Assert.IsTrue(result.Rounds.All(r => r.Probe["val"] is >= 0 and <= 1));
    }

    /// <summary>
    /// A recipe stopped after the first contributor of round 2 finished (an exception from the progress callback, as a
    /// kill between runs) resumes: round 1's runs and average and that contributor's round-2 run are reused, the rest of
    /// round 2 runs, and a third call reuses everything and reports the same scores. The report has one row per round.
    /// </summary>
    [TestMethod]
    public void ResumesAfterAnInterruptedRound()
    {
        var options = Options("resume", 2);
        Assert.ThrowsExactly<OperationCanceledException>(() => ColdFusion.Run(options, line =>
        {
            if (line.StartsWith("seed 0 round 2 ", StringComparison.Ordinal) && line.Contains(": done in ", StringComparison.Ordinal))
            {
                throw new OperationCanceledException("killed");
            }
        }));

        var resumed = ColdFusion.Run(options);
        var round1 = resumed.Rounds.Single(r => r.Round == 1);
        var round2 = resumed.Rounds.Single(r => r.Round == 2);
        Assert.IsTrue(round1.Contributions.All(c => c.Reused), "round 1 is reused");
        Assert.AreEqual(1, round2.Contributions.Count(c => c.Reused), "the finished round-2 run is reused");
        Assert.AreEqual(2, round2.Contributions.Count(c => !c.Reused));

        var again = ColdFusion.Run(options);
        Assert.IsTrue(again.Rounds.SelectMany(r => r.Contributions).All(c => c.Reused));
        for (var i = 0; i < again.Rounds.Count; i++)
        {
            Assert.AreEqual(resumed.Rounds[i].Model, again.Rounds[i].Model);
            CollectionAssert.AreEqual(resumed.Rounds[i].Probe.ToList(), again.Rounds[i].Probe.ToList());
        }

        var csv = File.ReadAllLines(Path.Combine(options.Folder, "results.csv"));
        Assert.HasCount(4, csv);
        StringAssert.StartsWith(csv[1], "cold-fusion,round 0: probe,0,");
        StringAssert.StartsWith(csv[3], "cold-fusion,round 2: probe,0,");
        using var json = JsonSchemaCheck.Validate("recipe", File.ReadAllText(Path.Combine(options.Folder, "cold-fusion.json")));
        Assert.AreEqual(3, json.RootElement.GetProperty("summary").GetArrayLength(), "one method per round, on val");
        Assert.AreEqual(2 * 3, json.RootElement.GetProperty("runs").GetArrayLength(), "every contributor run of rounds 1 and 2");
        Assert.IsGreaterThan(1000L, new FileInfo(Path.Combine(options.Folder, "cold-fusion.png")).Length);
    }

    /// <summary>`recycle cold-fusion` on the tiny zoo with two seeds and --target-finetune: the Markdown table printed, the report written; bad tasks are one line and exit 1.</summary>
    [TestMethod]
    public void CommandWritesTheReport()
    {
        var folder = Path.Combine(_fixture.Folder, "cli");
        var tasks = _contributors.Take(2).Select(c => $"{c.Name}={c.Train}").ToList();
        string[] args = ["cold-fusion", _fixture.Zoo.Base, "--task", tasks[0], "--task", $"{tasks[1]},{_contributors[1].Train}", "--target-train", _fixture.Zoo.Train,
            "--target-val", _fixture.Zoo.ValidationPrefix, "--target-test", _fixture.Zoo.Train, "--rounds", "1", "-o", folder, "--seeds", "2", "--epochs", "1",
            "--batch-size", "16", "--at", FeatureAt, "--parallel", "2", "--target-finetune", "--target-epochs", "1"];
        var (code, stdout, stderr) = TrainingSupport.Run(args);
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "| round | probe val | Δ | probe tiny_train | Δ | fine-tuning val | Δ |");
        StringAssert.Contains(stdout, "| 1 | ");
        var csv = File.ReadAllLines(Path.Combine(folder, "results.csv"));
        Assert.HasCount(1 + 8, csv, "2 seeds × rounds 0 and 1, probed and fine-tuned");
        StringAssert.Contains(File.ReadAllText(Path.Combine(folder, "README.md")), "### Target score per round");
        using var json = JsonSchemaCheck.Validate("recipe", File.ReadAllText(Path.Combine(folder, "cold-fusion.json")));
        var runs = json.RootElement.GetProperty("runs").EnumerateArray().ToList();
        var contributions = runs.Where(r => r.GetProperty("method").GetString()!.StartsWith("contributor ", StringComparison.Ordinal)).ToList();
        Assert.HasCount(2 * 2, contributions, "2 seeds × 2 contributors in round 1");
        Assert.IsTrue(contributions.All(c => c.GetProperty("accuracy").EnumerateObject().Any() == (c.GetProperty("method").GetString() == $"contributor {_contributors[1].Name}")), "only the contributor with VAL is scored on it");
        Assert.HasCount(2 * 2, runs.Where(r => r.GetProperty("method").GetString()!.EndsWith("fine-tuned", StringComparison.Ordinal)), "the target fine-tunings");

        var (jsonCode, jsonOut, jsonError) = TrainingSupport.Run([.. args, "--json"]);
        Assert.AreEqual(0, jsonCode, jsonError);
        JsonSchemaCheck.Validate("recipe", jsonOut).Dispose();

        foreach (var (bad, message) in new[]
        {
            (new[] { "--task", tasks[0] }, "at least two contributors"),
            (new[] { "--task", tasks[0], "--task", "noequals" }, "--task noequals: use NAME=TRAIN"),
            (new[] { "--task", tasks[0], "--task", "x=a,b,c" }, "one comma at most"),
            (new[] { "--task", tasks[0], "--task", "x=" + Path.Combine(_fixture.Folder, "missing") }, "missing"),
        })
        {
            var (badCode, _, badError) = TrainingSupport.Run(["cold-fusion", _fixture.Zoo.Base, .. bad, "--target-train", _fixture.Zoo.Train, "--target-val", _fixture.Zoo.ValidationPrefix, "-o", Path.Combine(_fixture.Folder, "bad")]);
            Assert.AreEqual(1, badCode, badError);
            StringAssert.Contains(badError, message);
            Assert.AreEqual(1, badError.Trim().Split('\n').Length, badError);
        }
    }
}
