using Recycling.MLNet.Data;
using Recycling.MLNet.Study;
using Recycling.Onnx.Numpy;
using Recycling.Training.Foundation;

namespace Recycling.Tests.Foundation;

/// <summary>
/// The ResNet18 foundation zoo (CNTK's ImageNet export from the NuGet cache, fine-tuned on the shipped Fashion-MNIST
/// tasks): the data generator reproduces the shipped arrays, a build is content-addressed and reused, and the
/// recycling study runs on a mini zoo with ONNX Runtime reproducing the training loop's accuracies. The builds use
/// 16 images per split (one step per run), so the numbers test the plumbing, not the recipe's quality.
/// </summary>
[TestClass]
public sealed class ResNet18ZooTests
{
    private static string _cache = "";

    private static FoundationZooSpec Spec => ResNet18Zoo.Spec;

    [ClassInitialize]
    public static void Initialize(TestContext context) => _cache = FoundationZooFixture.NewCache(Spec);

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
        var first = FoundationZooFixture.AssertReusedAndResumed(Spec, _cache);
        var zoo = ModelZoo.Open(first.ZooJson);
        Assert.AreEqual("ReLU393_Output_0", zoo.FeatureOutput);
        Assert.AreEqual("[3,64,64]", $"[{string.Join(",", zoo.Split("val").SampleShape)}]", "splits are preprocessed at load");
        Assert.HasCount(1, zoo.Select("resnet18", "target"));
    }

    /// <summary>
    /// Three seed replicas of the two-run zoo: replica 0 is the one-seed build's run (reused), the others are target
    /// runs of their own (seeds 1000 and 2000, their own learning-rate draws, other weights), each in a zoo.json of its
    /// own whose recorded accuracies ONNX Runtime reproduces.
    /// </summary>
    [TestMethod]
    public void SeedReplicasAreTargetRunsOfTheirOwn()
    {
        var scale = FoundationZooFixture.TwoRuns(Spec) with { Name = "seeds" };
        var single = FoundationZooBuilder.Build(Spec, scale, _cache, parallelism: 1);
        var built = FoundationZooBuilder.Build(Spec, scale with { Seeds = 3 }, _cache, parallelism: 1);
        Assert.HasCount(3, built.SeedZooJsons);
        Assert.AreEqual(built.ZooJson, built.SeedZooJsons[0]);
        Assert.AreEqual(single.ZooJson, built.ZooJson);
        Assert.HasCount(4, built.Runs, "the base and one target per seed");
        Assert.IsTrue(built.Runs[0].Reused && built.Runs[1].Reused, "the base and seed 0's target are the one-seed build's runs");
        Assert.AreEqual(single.Runs[1].Key, built.Runs[1].Key);
        Assert.IsFalse(built.Runs[2].Reused || built.Runs[3].Reused);
        Assert.HasCount(3, built.Runs.Skip(1).Select(r => FoundationZooFixture.Hash(r.Model)).Distinct().ToList(), "each seed trains other weights");

        for (var r = 0; r < 3; r++)
        {
            var zoo = ModelZoo.Open(built.SeedZooJsons[r]);
            var target = zoo.Select("resnet18", "target").Single();
            Assert.AreEqual(built.Runs[1 + r].Model, target.Path);
            using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(built.SeedZooJsons[r]));
            var hyper = json.RootElement.GetProperty("models").EnumerateArray().Single(m => m.GetProperty("role").GetString() == "target").GetProperty("hyperparameters");
            var seed = 1000 * r;
            Assert.AreEqual(seed.ToString(System.Globalization.CultureInfo.InvariantCulture), hyper.GetProperty("seed").GetString());
            var (lr, _) = FoundationZooBuilder.Draw(Spec.TargetTraining, seed);
            Assert.AreEqual(lr, double.Parse(hyper.GetProperty("lr").GetString()!, System.Globalization.CultureInfo.InvariantCulture));
            Assert.IsTrue(lr >= Spec.TargetTraining.LearningRate * 0.995 && lr <= Spec.TargetTraining.LearningRateHigh * 1.005, $"lr {lr} in the range (3 significant digits)");
            FoundationZooFixture.AssertRecordedAccuraciesReproduced(zoo, "resnet18");
        }
    }

    [TestMethod]
    public void TheStudyRunsOnAMiniZoo()
    {
        var zoo = FoundationZooFixture.AssertMiniZooReproduced(Spec, _cache);
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
        StudyReport.Write(report, [study], zoo, study.Seconds);
        var readme = File.ReadAllText(Path.Combine(report, "README.md"));
        StringAssert.Contains(readme, "ratatouille uniform");
        StringAssert.Contains(readme, "OOD test: images rotated by 75° (in domain: 0–60°)");
    }
}
