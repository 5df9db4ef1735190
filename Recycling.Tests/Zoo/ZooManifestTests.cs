using Microsoft.ML.OnnxRuntime;
using Recycling.Onnx.Numpy;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Zoo;

/// <summary>models/zoo.json agrees with the files it lists: hashes, shapes, roles, outputs, Fisher coverage.</summary>
[TestClass]
public sealed class ZooManifestTests
{
    private const int FloatType = 1;
    private static readonly long[] TrainDomains = [0, 15, 30, 45, 60];

    public static IEnumerable<object[]> ModelNames => ZooManifest.Instance.Models.Select(m => new object[] { m.Name });

    private static ZooModel ModelNamed(string name) => ZooManifest.Instance.Models.Single(m => m.Name == name);

    [TestMethod]
    public void EveryListedFileExistsWithItsHash()
    {
        var zoo = ZooManifest.Instance;
        foreach (var m in zoo.Models)
        {
            Assert.AreEqual(m.Sha256, ZooManifest.Sha256Of(m.File), m.File);
            if (m.Fisher is not null)
            {
                Assert.AreEqual(m.FisherSha256, ZooManifest.Sha256Of(m.Fisher), m.Fisher);
            }
        }

        foreach (var d in zoo.Data.Values)
        {
            Assert.AreEqual(d.Sha256, ZooManifest.Sha256Of(d.File), d.File);
        }
    }

    [TestMethod]
    public void ModelsFolderStaysWithinTheSizeBudget()
    {
        var files = Directory.GetFiles(ZooPaths.ModelsDirectory, "*", SearchOption.AllDirectories);
        long total = files.Sum(f => new FileInfo(f).Length);

        Assert.IsLessThan(40L << 20, total, $"models/ holds {total} bytes");
        foreach (var f in files)
        {
            Assert.IsLessThan(20L << 20, new FileInfo(f).Length, f);
        }
    }

    [TestMethod]
    public void EachArchitectureHasTheRolesOfTheProtocol()
    {
        var models = ZooManifest.Instance.Models;
        foreach (var arch in new[] { "cnn", "vit" })
        {
            var mine = models.Where(m => m.Architecture == arch).ToList();
            var bases = mine.Where(m => m.Role == "base").ToList();
            Assert.HasCount(1, bases, arch);
            var aux = mine.Where(m => m.Role == "auxiliary").ToList();
            Assert.IsGreaterThanOrEqualTo(5, aux.Count, arch);
            Assert.IsTrue(aux.All(a => a.Init == bases[0].Name), $"{arch}: auxiliaries start from the base");
            Assert.IsGreaterThan(1, aux.Select(a => a.NumClasses).Distinct().Count(), $"{arch}: some auxiliary head has another class count");
            var targets = mine.Where(m => m.Role == "target").ToList();
            Assert.IsGreaterThanOrEqualTo(8, targets.Count(t => t.Init == bases[0].Name), $"{arch}: DiWA-style targets");
            Assert.IsGreaterThanOrEqualTo(8, targets.Count(t => aux.Any(a => a.Name == t.Init)), $"{arch}: ratatouille-style targets");
            Assert.IsTrue(targets.All(t => t.NumClasses == 10 && t.Fisher is not null), $"{arch}: targets are 10-way with a Fisher file");
        }
    }

    [TestMethod]
    public void ShippedSplitsHaveTheDocumentedShapesLabelsAndDomains()
    {
        var data = ZooManifest.Instance.Data;
        foreach (var split in new[] { "probe_train", "val", "ood_test" })
        {
            var images = NpyFile.Read(ZooManifest.PathOf(data[$"{split}_images"].File));
            var labels = NpyFile.Read(ZooManifest.PathOf(data[$"{split}_labels"].File));
            var domains = NpyFile.Read(ZooManifest.PathOf(data[$"{split}_domains"].File));
            long n = images.Shape[0];

            Assert.IsGreaterThanOrEqualTo(2000L, n, split);
            Assert.AreEqual(NpyDType.UInt8, images.DType);
            CollectionAssert.AreEqual(new[] { n, 1, 28, 28 }, images.Shape.ToArray(), split);
            CollectionAssert.AreEqual(data[$"{split}_images"].Shape, images.Shape.ToArray(), split);
            Assert.AreEqual(NpyDType.Int64, labels.DType);
            Assert.AreEqual(NpyDType.Int64, domains.DType);
            CollectionAssert.AreEqual(new[] { n }, labels.Shape.ToArray());
            CollectionAssert.AreEqual(new[] { n }, domains.Shape.ToArray());
            Assert.IsTrue(labels.AsSpan<long>().ToArray().All(l => l is >= 0 and < 10), split);
            Assert.AreEqual(10, labels.AsSpan<long>().ToArray().Distinct().Count(), $"{split} covers every class");
            var seen = domains.AsSpan<long>().ToArray().Distinct().Order().ToArray();
            CollectionAssert.AreEqual(split == "ood_test" ? new long[] { 75 } : TrainDomains, seen, split);
        }
    }

    [TestMethod]
    [DynamicData(nameof(ModelNames))]
    public void ExportHasTheInputAndBothOutputs(string name)
    {
        var model = ModelNamed(name);
        using var session = new InferenceSession(ZooManifest.PathOf(model.File));

        var input = session.InputMetadata.Single();
        Assert.AreEqual("input", input.Key);
        Assert.AreEqual(typeof(float), input.Value.ElementType);
        CollectionAssert.AreEqual(new[] { -1, 1, 28, 28 }, input.Value.Dimensions, "dynamic batch axis");
        CollectionAssert.AreEquivalent(new[] { "logits", "features" }, session.OutputMetadata.Keys.ToArray());
        CollectionAssert.AreEqual(new[] { -1, model.NumClasses }, session.OutputMetadata["logits"].Dimensions);
        CollectionAssert.AreEqual(new[] { -1, FeatureWidth(model.Architecture) }, session.OutputMetadata["features"].Dimensions);
    }

    [TestMethod]
    [DynamicData(nameof(ModelNames))]
    public void FisherCoversEveryFloatInitializerWithItsShape(string name)
    {
        var model = ModelNamed(name);
        if (model.Fisher is null)
        {
            Assert.AreNotEqual("target", model.Role, "every target has a Fisher file");
            return;
        }

        var graph = ModelProto.Parser.ParseFrom(File.ReadAllBytes(ZooManifest.PathOf(model.File))).Graph;
        var initializers = graph.Initializer.Where(t => t.DataType == FloatType).ToDictionary(t => t.Name, t => t.Dims.ToArray());
        var fisher = NpyFile.ReadNpz(ZooManifest.PathOf(model.Fisher));

        CollectionAssert.AreEquivalent(initializers.Keys.ToArray(), fisher.Keys.ToArray(), name);
        foreach (var (key, dims) in initializers)
        {
            Assert.AreEqual(NpyDType.Float32, fisher[key].DType, key);
            CollectionAssert.AreEqual(dims, fisher[key].Shape.ToArray(), key);
            var values = fisher[key].AsSpan<float>().ToArray();
            Assert.IsTrue(values.All(v => float.IsFinite(v) && v >= 0), $"{key}: Fisher entries are finite and non-negative");
            Assert.IsTrue(values.Any(v => v > 0), $"{key}: Fisher is not all zero");
        }
    }

    [TestMethod]
    public void ViTExportsCarryTheExporterAnonymousAndDeduplicatedTensors()
    {
        var vitBase = ZooManifest.Instance.Models.Single(m => m.Architecture == "vit" && m.Role == "base");
        var vitTarget = ZooManifest.Instance.Models.First(m => m.Architecture == "vit" && m.Role == "target");
        var baseGraph = ModelProto.Parser.ParseFrom(File.ReadAllBytes(ZooManifest.PathOf(vitBase.File))).Graph;
        var targetGraph = ModelProto.Parser.ParseFrom(File.ReadAllBytes(ZooManifest.PathOf(vitTarget.File))).Graph;

        Assert.IsTrue(targetGraph.Initializer.Any(t => t.Name.StartsWith("onnx::MatMul_", StringComparison.Ordinal)));
        Assert.IsTrue(baseGraph.Node.Any(n => n.OpType == "Identity"), "base LayerNorms (ones/zeros) are deduplicated");
        Assert.IsLessThan(targetGraph.Initializer.Count, baseGraph.Initializer.Count);
    }

    private static int FeatureWidth(string architecture) => architecture == "cnn" ? 64 : 48;
}
