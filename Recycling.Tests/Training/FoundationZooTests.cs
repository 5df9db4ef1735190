using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Study;
using Recycling.Onnx.Numpy;
using Recycling.Training.Foundation;

namespace Recycling.Tests.Training;

/// <summary>
/// The ResNet18 foundation zoo (CNTK's ImageNet export from the NuGet cache, fine-tuned on the shipped Fashion-MNIST
/// tasks): the data generator reproduces the shipped arrays, a build is content-addressed and reused, and the
/// recycling study runs on a mini zoo with ONNX Runtime reproducing the training loop's accuracies. The builds use
/// 16 images per split (one step per run), so the numbers test the plumbing, not the recipe's quality.
/// </summary>
[TestClass]
public sealed class FoundationZooTests
{
    private static string _cache = "";

    private static FoundationZooSpec Spec => ResNet18Zoo.Spec;

    /// <summary>The base and one DiWA target: the two runs every build starts with.</summary>
    private static ZooScale TwoRuns => Spec.Mini with { Name = "two-runs", Auxiliaries = 0 };

    [ClassInitialize]
    public static void Initialize(TestContext context) => _cache = Directory.CreateTempSubdirectory("recycling-foundation-").FullName;

    [ClassCleanup]
    public static void Cleanup() => Directory.Delete(_cache, recursive: true);

    [TestMethod]
    public void GeneratorReproducesTheShippedData()
    {
        var shipped = Spec.FindData(AppContext.BaseDirectory);
        var fresh = Path.Combine(_cache, "data");
        Spec.GenerateData(fresh, null);
        var names = FashionMnistTasks.SplitNames.ToList();
        Assert.HasCount(12, names);
        foreach (var split in names)
        {
            foreach (var part in new[] { "images", "labels", "domains" })
            {
                var a = NpyFile.Read(Path.Combine(shipped, $"{split}_{part}.npy.gz"));
                var b = NpyFile.Read(Path.Combine(fresh, $"{split}_{part}.npy.gz"));
                Assert.AreEqual(a.DType, b.DType, $"{split}_{part}");
                CollectionAssert.AreEqual(a.Shape.ToArray(), b.Shape.ToArray(), $"{split}_{part}");
                CollectionAssert.AreEqual(a.Data, b.Data, $"{split}_{part}: the generator no longer reproduces the shipped array");
            }
        }

        // The protocol: in-domain rotations cycle over 0..60, OOD is 75, auxiliary label spaces are the tasks'.
        var val = DatasetLoader.Load(Path.Combine(shipped, "val"));
        CollectionAssert.AreEquivalent(new[] { 0, 15, 30, 45, 60 }, val.Domains!.Distinct().ToArray());
        Assert.IsTrue(DatasetLoader.Load(Path.Combine(shipped, "ood_test")).Domains!.All(d => d == 75));
        foreach (var task in FashionMnistTasks.Auxiliaries)
        {
            var labels = DatasetLoader.Load(Path.Combine(shipped, $"aux_{task.Name}")).Labels;
            Assert.AreEqual(task.Classes, labels.Max() + 1, task.Name);
        }
    }

    /// <summary>The bilinear rotation against exact pixel moves: 0° is the identity, 90° (cos 90° is not exactly 0 in
    /// floating point, so the samples sit a hair off the grid) lands within one grey level of the exact quarter turn.</summary>
    [TestMethod]
    public void RotationAgreesWithExactQuarterTurns()
    {
        var image = new byte[28 * 28];
        for (var i = 0; i < image.Length; i++)
        {
            image[i] = (byte)((i * 37) % 256);
        }

        var turned = new byte[image.Length];
        FashionMnistTasks.Rotate(image, turned, 0);
        CollectionAssert.AreEqual(image, turned);
        FashionMnistTasks.Rotate(image, turned, 90);
        var quarter = new byte[image.Length];
        for (var y = 0; y < 28; y++)
        {
            for (var x = 0; x < 28; x++)
            {
                quarter[(y * 28) + x] = image[(x * 28) + 27 - y]; // torch.rot90(k=1): counter-clockwise
            }
        }

        Assert.IsTrue(turned.Zip(quarter).All(p => Math.Abs(p.First - p.Second) <= 1), "90° bilinear rotation equals the exact quarter turn");
    }

    [TestMethod]
    public void ABuildIsReusedOnRerun()
    {
        var first = FoundationZooBuilder.Build(Spec, TwoRuns, _cache, parallelism: 1);
        Assert.HasCount(2, first.Runs);
        var second = FoundationZooBuilder.Build(Spec, TwoRuns, _cache, parallelism: 1);
        Assert.IsTrue(second.Runs.All(r => r.Reused), "every run of the second build is reused");
        CollectionAssert.AreEqual(first.Runs.Select(r => r.Key).ToArray(), second.Runs.Select(r => r.Key).ToArray());
        CollectionAssert.AreEqual(first.Runs.Select(r => FileHash(r.Model)).ToArray(), second.Runs.Select(r => FileHash(r.Model)).ToArray());

        // A run whose record is gone (killed before it finished) is redone, and comes out the same (deterministic).
        var target = first.Runs[1];
        var hash = FileHash(target.Model);
        File.Delete(Path.Combine(target.Folder, Recycling.Training.Recipes.RunStore.RecordFile));
        var third = FoundationZooBuilder.Build(Spec, TwoRuns, _cache, parallelism: 1);
        Assert.IsTrue(third.Runs[0].Reused);
        Assert.IsFalse(third.Runs[1].Reused);
        Assert.AreEqual(hash, FileHash(third.Runs[1].Model), "the redone run writes the same weights");

        var zoo = ModelZoo.Open(third.ZooJson);
        Assert.AreEqual("ReLU393_Output_0", zoo.FeatureOutput);
        Assert.AreEqual("[3,64,64]", $"[{string.Join(",", zoo.Split("val").SampleShape)}]", "splits are preprocessed at load");
        Assert.HasCount(1, zoo.Select("resnet18", "target"));
    }

    [TestMethod]
    public void TheStudyRunsOnAMiniZoo()
    {
        var built = FoundationZooBuilder.Build(Spec, Spec.Mini, _cache);
        var zoo = ModelZoo.Open(built.ZooJson);
        Assert.HasCount(Spec.Mini.Auxiliaries, zoo.Select("resnet18", "auxiliary"));
        var targets = zoo.Select("resnet18", "target");
        Assert.HasCount(Spec.Mini.DiwaRuns + Spec.Mini.Auxiliaries, targets);

        // ONNX Runtime reproduces the accuracies the training loop (val) and the TorchSharp executor (OOD) reported.
        foreach (var t in targets)
        {
            foreach (var (split, recorded) in new[] { ("val", t.ValAccuracy), ("ood_test", t.OodAccuracy) })
            {
                var data = zoo.Split(split);
                using var scorer = OnnxScorer.Open(t.Path);
                var accuracy = ClassificationMetrics.FromLogits(scorer.Run(data, "logits"), data).Accuracy;
                Assert.AreEqual(recorded, accuracy, 0.1, $"{t.Name} on {split}");
            }
        }

        var options = new StudyOptions { InterpolationPoints = 3, TaskArithmeticLambdas = [0.5], TiesLambdas = [1.0], DareLambdas = [0.05] };
        var study = RecyclingStudy.Run(zoo, "resnet18", options);
        var methods = study.Rows.Select(r => r.Method).ToList();
        foreach (var expected in new[] { "best individual (by val)", "uniform soup (DiWA)", "ratatouille uniform", "fusing + LP", "base + LP", "task arithmetic", "TIES (top 20%, global trim)" })
        {
            CollectionAssert.Contains(methods, expected);
        }

        Assert.IsTrue(study.Rows.All(r => r.Val is >= 0 and <= 100 && r.Ood is >= 0 and <= 100), "accuracies are percentages");
        Assert.HasCount(1 + Spec.Mini.Auxiliaries + 1, study.Ranking, "base, auxiliaries and the fused body are ranked");
        Assert.IsTrue(study.Notes.Any(n => n.Contains("the training loop", StringComparison.Ordinal)), string.Join("\n", study.Notes));
        var report = Path.Combine(_cache, "report");
        StudyReport.Write(report, [study], zoo.FilePath, study.Seconds);
        StringAssert.Contains(File.ReadAllText(Path.Combine(report, "README.md")), "ratatouille uniform");
    }

    private static string FileHash(string path) => Recycling.Training.FineTuner.Sha256(path);
}
