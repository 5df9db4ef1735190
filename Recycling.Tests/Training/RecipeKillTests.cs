using Recycling.Onnx;
using Recycling.Tests.Reliability;
using Recycling.Training.Recipes;

namespace Recycling.Tests.Training;

/// <summary>
/// `recycle fuse` run as a child process on the tiny zoo, SIGKILLed as soon as its first run folder is complete, then
/// rerun with the same command: the finished runs are reused (their records and models untouched, not retrained),
/// the others are done, and every run's model and figures equal those of a recipe that was never interrupted, byte
/// for byte (each run uses the same LibTorch thread count whatever was left to do).
/// </summary>
[TestClass]
public sealed class RecipeKillTests
{
    [TestMethod]
    public void KilledFuseResumesWithoutRetrainingAndMatchesAnUninterruptedRecipe()
    {
        using var scratch = new Scratch();
        var zoo = TinyZoo.Create(Path.Combine(scratch.Path, "zoo"), ingredients: 2);
        string[] Args(string folder) => ["fuse", zoo.Ingredients[0], zoo.Ingredients[1], "--base", zoo.Base, "-d", zoo.Train, "--val", zoo.ValidationPrefix,
            "-o", folder, "--seeds", "2", "--epochs", "2", "--batch-size", "16", "--at", "/Flatten_output_0", "--parallel", "2", "--no-intertraining"];

        var reference = Path.Combine(scratch.Path, "reference");
        var (code, stdout, stderr, _) = RecycleProcess.Run(Args(reference), minutes: 10);
        Assert.AreEqual(0, code, stderr + stdout);
        var expected = Runs(reference);
        Assert.HasCount(4, expected);

        var killed = Path.Combine(scratch.Path, "killed");
        using (var process = RecycleProcess.Start(Args(killed)))
        {
            var deadline = DateTime.UtcNow.AddMinutes(10);
            while (Records(killed).Length == 0 && !process.HasExited && DateTime.UtcNow < deadline)
            {
                Thread.Sleep(5);
            }

            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }

        var finished = Records(killed).ToDictionary(r => r, File.ReadAllBytes);
        Assert.IsNotEmpty(finished, "a run finished before the kill");
        Assert.IsLessThan(4, finished.Count, "the recipe was killed before its last run (make it longer if this fails)");
        var finishedModels = finished.Keys.ToDictionary(r => r, r => File.ReadAllBytes(Path.Combine(Path.GetDirectoryName(r)!, RunStore.ModelFile)));

        (code, stdout, stderr, _) = RecycleProcess.Run(Args(killed), minutes: 10);
        Assert.AreEqual(0, code, stderr + stdout);
        Assert.AreEqual(finished.Count, stdout.Split('\n').Count(l => l.Contains(": reused ", StringComparison.Ordinal)), stdout);
        foreach (var (record, bytes) in finished)
        {
            CollectionAssert.AreEqual(bytes, File.ReadAllBytes(record), $"{record}: a finished run was not retrained (its record is untouched)");
            CollectionAssert.AreEqual(finishedModels[record], File.ReadAllBytes(Path.Combine(Path.GetDirectoryName(record)!, RunStore.ModelFile)));
        }

        var actual = Runs(killed);
        CollectionAssert.AreEquivalent(expected.Keys.ToList(), actual.Keys.ToList(), "the same content keys");
        foreach (var (key, (model, figures)) in expected)
        {
            CollectionAssert.AreEqual(model, actual[key].Model, $"run {key}: the model differs from the uninterrupted recipe's");
            Assert.AreEqual(figures, actual[key].Figures, $"run {key}");
        }

        Assert.IsEmpty(Directory.GetDirectories(Path.Combine(killed, "runs"), "*.ckpt", SearchOption.AllDirectories), "no checkpoint is left");
    }

    /// <summary>
    /// A run redone alone after its recipe failed computes the bytes it computes among all the recipe's runs: the
    /// LibTorch thread count is set by the recipe's size, not by how many runs are left.
    /// </summary>
    [TestMethod]
    public void ARunRedoneAloneEqualsItsBytesInTheWholeRecipe()
    {
        using var scratch = new Scratch();
        var zoo = TinyZoo.Create(Path.Combine(scratch.Path, "zoo"), ingredients: 0);
        var training = new TargetTraining { Epochs = 1, BatchSize = 16, LearningRate = 1e-2, FeatureAt = "/Flatten_output_0" };
        List<RunSpec> specs = [.. Enumerable.Range(0, 2).Select(seed => TargetRuns.Spec($"seed {seed}", zoo.Base, zoo.Train, zoo.ValidationPrefix, [], training, seed))];
        var whole = new RunStore(Path.Combine(scratch.Path, "whole"), 2).RunAll(specs, TargetRuns.Execute);

        var store = new RunStore(Path.Combine(scratch.Path, "resumed"), 2);
        Assert.ThrowsExactly<RecyclingException>(() => store.RunAll(specs, (spec, output) =>
            spec.Label == "seed 1" ? throw new RecyclingException("killed") : TargetRuns.Execute(spec, output)));
        var resumed = store.RunAll(specs, TargetRuns.Execute);
        Assert.IsTrue(resumed[0].Reused);
        Assert.IsFalse(resumed[1].Reused);
        for (var i = 0; i < specs.Count; i++)
        {
            CollectionAssert.AreEqual(File.ReadAllBytes(whole[i].Model), File.ReadAllBytes(resumed[i].Model), specs[i].Label);
        }
    }

    private static string[] Records(string folder)
    {
        var runs = Path.Combine(folder, "runs");
        return Directory.Exists(runs) ? Directory.GetFiles(runs, RunStore.RecordFile, SearchOption.AllDirectories) : [];
    }

    /// <summary>Each run's model bytes and its figures (as JSON), by content key.</summary>
    private static Dictionary<string, (byte[] Model, string Figures)> Runs(string folder) =>
        Records(folder).ToDictionary(
            r => Path.GetFileName(Path.GetDirectoryName(r)!),
            r =>
            {
                using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(r));
                return (File.ReadAllBytes(Path.Combine(Path.GetDirectoryName(r)!, RunStore.ModelFile)), json.RootElement.GetProperty("figures").GetRawText());
            });
}
