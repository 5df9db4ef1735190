using System.Security.Cryptography;
using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.Training.Foundation;
using Recycling.Training.Recipes;

namespace Recycling.Tests.Foundation;

/// <summary>
/// What the foundation-zoo test classes share: a scratch cache per class (the real foundation model is fetched into
/// it from the NuGet cache), the two-run scale, and the checks every zoo's build must pass.
/// </summary>
internal static class FoundationZooFixture
{
    public static string NewCache(FoundationZooSpec spec) => Directory.CreateTempSubdirectory($"recycling-{spec.Name}-zoo-").FullName;

    /// <summary>The base and one DiWA target: the two runs every build starts with.</summary>
    public static ZooScale TwoRuns(FoundationZooSpec spec) => spec.Mini with { Name = "two-runs", Auxiliaries = 0 };

    /// <summary>
    /// Builds <see cref="TwoRuns"/>, again (every run reused, same weights), then once more after deleting the
    /// target's run.json (a run killed before it finished): the target is redone with byte-identical weights.
    /// Returns the first build.
    /// </summary>
    public static BuiltZoo AssertReusedAndResumed(FoundationZooSpec spec, string cache)
    {
        var scale = TwoRuns(spec);
        var first = FoundationZooBuilder.Build(spec, scale, cache, parallelism: 1);
        Assert.HasCount(2, first.Runs);
        var second = FoundationZooBuilder.Build(spec, scale, cache, parallelism: 1);
        Assert.IsTrue(second.Runs.All(r => r.Reused), "every run of the second build is reused");
        CollectionAssert.AreEqual(first.Runs.Select(r => r.Key).ToArray(), second.Runs.Select(r => r.Key).ToArray());
        CollectionAssert.AreEqual(first.Runs.Select(r => Hash(r.Model)).ToArray(), second.Runs.Select(r => Hash(r.Model)).ToArray());

        var target = first.Runs[1];
        var hash = Hash(target.Model);
        File.Delete(Path.Combine(target.Folder, RunStore.RecordFile));
        var third = FoundationZooBuilder.Build(spec, scale, cache, parallelism: 1);
        Assert.IsTrue(third.Runs[0].Reused);
        Assert.IsFalse(third.Runs[1].Reused);
        Assert.AreEqual(hash, Hash(third.Runs[1].Model), "the redone run writes the same weights");
        return first;
    }

    /// <summary>
    /// Builds the mini zoo and checks, through the study's own path (<see cref="ModelZoo"/>, <see cref="OnnxScorer"/>),
    /// that ONNX Runtime reproduces every target's recorded val (the training loop) and OOD (the TorchSharp executor)
    /// accuracy within 0.1 points, and that every target has its Fisher. Returns the zoo.
    /// </summary>
    public static ModelZoo AssertMiniZooReproduced(FoundationZooSpec spec, string cache)
    {
        var built = FoundationZooBuilder.Build(spec, spec.Mini, cache);
        var zoo = ModelZoo.Open(built.ZooJson);
        Assert.AreEqual(spec.OodDescription, zoo.OodDescription, "zoo.json says what the OOD split is");
        Assert.HasCount(spec.Mini.Auxiliaries, zoo.Select(spec.Name, "auxiliary"));
        Assert.HasCount(spec.Mini.DiwaRuns + spec.Mini.Auxiliaries, zoo.Select(spec.Name, "target"));
        AssertRecordedAccuraciesReproduced(zoo, spec.Name);
        return zoo;
    }

    /// <summary>ONNX Runtime, through <see cref="OnnxScorer"/> on the zoo's splits, reproduces every target's recorded val and OOD accuracy within 0.1 points; every target has its Fisher.</summary>
    public static void AssertRecordedAccuraciesReproduced(ModelZoo zoo, string architecture)
    {
        foreach (var t in zoo.Select(architecture, "target"))
        {
            foreach (var (split, recorded) in new[] { ("val", t.ValAccuracy), ("ood_test", t.OodAccuracy) })
            {
                var data = zoo.Split(split);
                using var scorer = OnnxScorer.Open(t.Path);
                var accuracy = ClassificationMetrics.FromLogits(scorer.Run(data, "logits"), data).Accuracy;
                Assert.AreEqual(recorded, accuracy, 0.1, $"{t.Name} on {split}");
            }

            Assert.IsTrue(File.Exists(Path.Combine(Path.GetDirectoryName(t.Path)!, FoundationZooBuilder.FisherFileName)), $"{t.Name} has its Fisher");
        }
    }

    public static string Hash(string path) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));
}
