using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Tests.MLNet;
using Recycling.Training.Recipes;

namespace Recycling.Tests.Training;

/// <summary>
/// Learned soups on real exports (the torch-merge CNN fixture, 3×16×16 inputs): with labels that are ft1's own
/// predictions and a "broken" ingredient (ft1 with a head bias that sends every sample to a class ft1 never
/// predicts), the optimum is ft1 alone; the written soup is checked against an independent merge of the same weights.
/// </summary>
[TestClass]
public sealed class LearnedSoupTests
{
    private static readonly string Fixture = Ft1Soup.Folder;

    private static string _folder = "";
    private static Dataset _val = null!;

    [ClassInitialize]
    public static void Build(TestContext context)
    {
        _ = context;
        _folder = Directory.CreateTempSubdirectory("recycling-learned-soup-").FullName;
        _val = Ft1Soup.LabelledByFt1("val", 256, seed: 5);
        Ft1Soup.WriteBroken(Path.Combine(_folder, "broken.onnx"), _val, 50f);
    }

    [ClassCleanup]
    public static void Cleanup() => Directory.Delete(_folder, recursive: true);

    /// <summary>Uniform start (α = 0) scores near 0% (the broken bias dominates); training moves ≥ 95% of the weight onto ft1 and recovers ft1's 100%.</summary>
    [TestMethod]
    public void OptimumIsTheOneGoodIngredient()
    {
        var broken = Path.Combine(_folder, "broken.onnx");
        var output = Path.Combine(_folder, "learned.onnx");
        using (var set = new ModelSet([Path.Combine(Fixture, "ft1.onnx"), broken]))
        {
            Assert.IsLessThan(20, set.EvaluateUniform([0, 1], _val).Accuracy, "the uniform soup must be bad for this test to mean anything");
        }

        var result = LearnedSoup.Run(new LearnedSoupOptions
        {
            Models = [Path.Combine(Fixture, "ft1.onnx"), broken],
            Validation = _val,
            Output = output,
            Epochs = 8,
            LearningRate = 0.2,
            BatchSize = 32,
        });
        Assert.IsGreaterThan(0.95, result.Weights[0], $"weights {string.Join(", ", result.Weights)}");
        Assert.AreEqual(1.0, result.Weights.Sum(), 1e-6);
        Assert.IsGreaterThan(0.99, result.Epochs[^1].ValidationAccuracy);
        Assert.IsLessThan(result.Epochs[0].TrainLoss, result.Epochs[^1].TrainLoss);
        Assert.IsNotNull(result.OnnxRuntimeGap);
        Assert.IsLessThan(1e-4, result.OnnxRuntimeGap.Value);

        using var scorer = OnnxScorer.Open(output, new ScoringOptions { Threads = 1 });
        var accuracy = Recycling.MLNet.Evaluation.ClassificationMetrics.FromLogits(scorer.Run(_val, "logits"), _val).Accuracy / 100;
        Assert.AreEqual(result.Epochs[^1].ValidationAccuracy, accuracy, 1.0 / _val.Count, "ONNX Runtime on the written soup");
    }

    /// <summary>The written soup of three real fine-tunings equals ModelMerger's weighted average with the learned weights (a second implementation), within 1e-5 relative on the logits.</summary>
    [TestMethod]
    public void WrittenSoupEqualsAWeightedMergeOfTheLearnedWeights()
    {
        var models = new[] { "ft1", "ft2", "ft3" }.Select(m => Path.Combine(Fixture, m + ".onnx")).ToList();
        var output = Path.Combine(_folder, "learned3.onnx");
        var result = LearnedSoup.Run(new LearnedSoupOptions { Models = models, Validation = _val, Output = output, Epochs = 2, LearningRate = 0.5 });
        Assert.AreEqual(3, result.Weights.Count);
        Assert.IsTrue(result.Weights.Any(w => Math.Abs(w - (1.0 / 3)) > 1e-3), "α must have moved for the comparison to test anything");

        using var set = new ModelSet(models);
        var reference = set.AverageScores(result.Weights, _val).Data;
        using var scorer = OnnxScorer.Open(output, new ScoringOptions { Threads = 1 });
        var ours = scorer.Run(_val, "logits").Data;
        Assert.IsLessThan(1e-5, TrainingSupport.RelativeGap(ours, reference));
    }

    /// <summary>
    /// By layer, on three fine-tunings of a CNN that keeps its BatchNorm nodes: each written initializer is Σᵢ wₗᵢ θᵢ
    /// with its layer's weights (computed here in double from the files), the running statistics included.
    /// </summary>
    [TestMethod]
    public void ByLayerWritesEachLayersOwnMix()
    {
        var zoo = TinyZoo.Create(Path.Combine(_folder, "tiny"), ingredients: 3);
        var output = Path.Combine(_folder, "bylayer.onnx");
        var result = LearnedSoup.Run(new LearnedSoupOptions { Models = zoo.Ingredients, Validation = zoo.Validation, Output = output, ByLayer = true, Epochs = 3, LearningRate = 0.5 });
        Assert.IsGreaterThan(1, result.Layers.Count);
        Assert.IsTrue(result.Layers.Select(l => l.Weights[0]).Distinct().Count() > 1, "layers must learn different weights");
        var bn1 = result.Layers.Single(l => l.Initializers.Contains("bn1.running_var"));
        CollectionAssert.AreEquivalent(new[] { "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var" }, bn1.Initializers.ToArray());

        var opened = zoo.Ingredients.Select(m => OnnxModel.Open(m)).ToList();
        try
        {
            using var written = OnnxModel.Open(output);
            var checkedCount = 0;
            foreach (var layer in result.Layers)
            {
                foreach (var name in layer.Initializers)
                {
                    var actual = written.Tensors.Single(t => t.Name == name && t.Kind == TensorKind.Initializer).ReadFloat32();
                    var sources = opened.Select(m => m.Tensors.Single(t => t.Name == name && t.Kind == TensorKind.Initializer).ReadFloat32()).ToList();
                    for (var k = 0; k < actual.Length; k++)
                    {
                        var expected = sources.Select((s, i) => layer.Weights[i] * s[k]).Sum();
                        Assert.AreEqual(expected, actual[k], 1e-6 + (1e-5 * Math.Abs(expected)), $"{name}[{k}] in layer {layer.Layer}");
                    }

                    checkedCount++;
                }
            }

            Assert.AreEqual(result.MixedTensors, checkedCount);
        }
        finally
        {
            opened.ForEach(m => m.Dispose());
        }
    }

    /// <summary>`recycle soup --learned --json`: the learned weights favour ft1, the comparison holds the uniform, greedy and learned soups, and the learned soup's result is ONNX Runtime's on the written file.</summary>
    [TestMethod]
    public void CliComparesLearnedWithUniformAndGreedy()
    {
        var prefix = Path.Combine(_folder, "cli_val");
        Recycling.Onnx.Numpy.NpyFile.Write(prefix + "_images.npy", Recycling.Onnx.Numpy.NpyArray.From<float>(_val.Values, _val.Count, 3, 16, 16));
        Recycling.Onnx.Numpy.NpyFile.Write(prefix + "_labels.npy", Recycling.Onnx.Numpy.NpyArray.From<long>([.. _val.Labels.Select(l => (long)l)], _val.Count));
        var output = Path.Combine(_folder, "cli_learned.onnx");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var exit = Recycling.Cli.RecycleCli.Run(["soup", Path.Combine(Fixture, "ft1.onnx"), Path.Combine(_folder, "broken.onnx"), "-d", prefix, "--learned", "--epochs", "8", "--lr", "0.2", "-o", output, "--json"], stdout, stderr);
        Assert.AreEqual(0, exit, stderr.ToString());
        using var json = System.Text.Json.JsonDocument.Parse(stdout.ToString());
        var learned = json.RootElement.GetProperty("learned");
        Assert.IsGreaterThan(0.95, learned.GetProperty("weights").GetProperty("ft1").GetDouble());
        var compare = learned.GetProperty("compare").EnumerateArray().ToDictionary(e => e.GetProperty("soup").GetString()!, e => e.GetProperty("accuracy").GetDouble());
        CollectionAssert.AreEquivalent(new[] { "uniform", "greedy (>)", "learned" }, compare.Keys.ToArray());
        Assert.AreEqual(100, compare["greedy (>)"], 1e-9, "greedy keeps ft1 alone");
        Assert.IsGreaterThan(99, compare["learned"]);
        Assert.IsLessThan(20, compare["uniform"]);
        Assert.AreEqual(output, json.RootElement.GetProperty("output").GetString());

        var misuse = Recycling.Cli.RecycleCli.Run(["soup", Path.Combine(Fixture, "ft1.onnx"), Path.Combine(_folder, "broken.onnx"), "-d", prefix, "--by-layer"], new StringWriter(), stderr = new StringWriter());
        Assert.AreEqual(1, misuse);
        StringAssert.Contains(stderr.ToString(), "add --learned");
    }

    [TestMethod]
    public void RefusesOneIngredientAndOverwritingAnInput()
    {
        var ft1 = Path.Combine(Fixture, "ft1.onnx");
        var one = Assert.ThrowsExactly<RecyclingException>(() => LearnedSoup.Run(new LearnedSoupOptions { Models = [ft1], Validation = _val }));
        StringAssert.Contains(one.Message, "at least two");
        var copy = Path.Combine(_folder, "copy.onnx");
        File.Copy(ft1, copy, overwrite: true);
        var before = File.ReadAllBytes(copy);
        var overwrite = Assert.ThrowsExactly<RecyclingException>(() => LearnedSoup.Run(new LearnedSoupOptions { Models = [ft1, copy], Validation = _val, Output = copy }));
        StringAssert.Contains(overwrite.Message, "overwrite");
        CollectionAssert.AreEqual(before, File.ReadAllBytes(copy));
    }
}
