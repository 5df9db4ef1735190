using System.Security.Cryptography;
using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Training;
using Recycling.Training.Foundation;
using Recycling.Training.Recipes;
using Recycling.Tests.Training;
using static TorchSharp.torch;

namespace Recycling.Tests.Foundation;

/// <summary>
/// The MiniLM foundation zoo (all-MiniLM-L6-v2 from the NuGet cache, on the shipped WordNet tasks), built small: the
/// mean-pooled sentence embedding equals a mean computed here from ONNX Runtime's last_hidden_state; a build of the
/// base and one DiWA target (16 texts each) is content-addressed, reused on rerun, redone identically when its record
/// is lost; ONNX Runtime reproduces the accuracies the training loop and the executor recorded, and the embeddings
/// stay frozen while the encoder trains; on the mini zoo ONNX Runtime scores the tokenised splits the study reads and
/// reproduces every target's recorded accuracies.
/// </summary>
[TestClass]
public sealed class MiniLmZooTests
{
    private static string _cache = "";

    private static FoundationZooSpec Spec => MiniLmZoo.Spec;

    private static ZooScale TwoRuns => Spec.Mini with { Name = "two-runs", Auxiliaries = 0 };

    [ClassInitialize]
    public static void Initialize(TestContext context) => _cache = Directory.CreateTempSubdirectory("recycling-minilm-zoo-").FullName;

    [ClassCleanup]
    public static void Cleanup() => Directory.Delete(_cache, recursive: true);

    [TestMethod]
    public void MeanPoolingIsTheMaskedMeanOfTheLastHiddenState()
    {
        using var scratch = new Scratch();
        var pooled = Path.Combine(scratch.Path, "pooled.onnx");
        using (var source = OnnxModel.Open(TextModels.MiniLm.Model))
        {
            MeanPooling.Write(source, pooled);
        }

        var csv = TextModels.WriteCsv(scratch.Path, "s.csv", TextModels.Sentences.Take(3));
        using var model = OnnxModel.Open(pooled);
        using var program = OnnxProgram.Load(model);
        var data = TrainingData.For(model, new TextDataOptions { Vocab = TextModels.Vocabulary }).Load(csv);
        var feeder = BatchFeeder.For(program, model.Path, data);
        using var batch = feeder.Batch(data, [0, 1, 2]);
        var hidden = OnnxRuntimeRun.Output(model.Path, batch.Feeds, "last_hidden_state");
        var embedding = OnnxRuntimeRun.Output(model.Path, batch.Feeds, MeanPooling.Output);
        var mask = batch.Feeds["attention_mask"].data<long>().ToArray();
        var tokens = (int)batch.Feeds["input_ids"].shape[1];
        const int width = 384;
        Assert.HasCount(3 * width, embedding);
        Assert.IsLessThan(3 * tokens, mask.Sum(), "padded sentences test the mask");
        for (var s = 0; s < 3; s++)
        {
            var count = Enumerable.Range(0, tokens).Sum(t => mask[(s * tokens) + t]);
            for (var d = 0; d < width; d++)
            {
                double sum = 0;
                for (var t = 0; t < tokens; t++)
                {
                    sum += mask[(s * tokens) + t] * (double)hidden[(((s * tokens) + t) * width) + d];
                }

                Assert.AreEqual(sum / count, embedding[(s * width) + d], 1e-5, $"sentence {s}, dimension {d}");
            }
        }

        float[] ours;
        using (NewDisposeScope())
        using (no_grad())
        {
            ours = program.Forward(batch.Feeds, new Recycling.Training.Ops.OpContext(), [MeanPooling.Output])[MeanPooling.Output].data<float>().ToArray();
        }

        Assert.IsLessThanOrEqualTo(1e-5, TrainingSupport.RelativeGap(ours, embedding), "the executor runs the pooling as ONNX Runtime does");
    }

    [TestMethod]
    public void ABuildIsReusedOnRerunAndOnnxRuntimeReproducesItsAccuracies()
    {
        var first = FoundationZooBuilder.Build(Spec, TwoRuns, _cache, parallelism: 1);
        Assert.HasCount(2, first.Runs);
        var second = FoundationZooBuilder.Build(Spec, TwoRuns, _cache, parallelism: 1);
        Assert.IsTrue(second.Runs.All(r => r.Reused), "every run of the second build is reused");
        CollectionAssert.AreEqual(first.Runs.Select(r => Hash(r.Model)).ToArray(), second.Runs.Select(r => Hash(r.Model)).ToArray());

        var target = first.Runs[1];
        var hash = Hash(target.Model);
        File.Delete(Path.Combine(target.Folder, RunStore.RecordFile));
        var third = FoundationZooBuilder.Build(Spec, TwoRuns, _cache, parallelism: 1);
        Assert.IsTrue(third.Runs[0].Reused);
        Assert.IsFalse(third.Runs[1].Reused);
        Assert.AreEqual(hash, Hash(third.Runs[1].Model), "the redone run writes the same weights");

        // The recorded accuracies (val: the training loop; OOD: the executor) through ONNX Runtime on the same texts.
        var data = Path.Combine(FoundationZooBuilder.Root(Spec, _cache), TwoRuns.Name, "data");
        foreach (var (split, figure) in new[] { ("val", "val"), ("ood_test", "ood") })
        {
            var accuracy = OrtAccuracy(target.Model, Path.Combine(data, $"{split}.tsv"));
            Assert.AreEqual(target.Figures[figure], accuracy, 0.1, $"{split}: recorded {target.Figures[figure]}, ONNX Runtime {accuracy}");
        }

        // The embeddings are the pretrained ones; the encoder and the head moved.
        using var tuned = OnnxModel.Open(target.Model);
        using var parent = OnnxModel.Open(first.Runs[0].Model);
        var changed = parent.Tensors.Where(t => t.DataType == OnnxDataType.Float)
            .Where(t => !t.ReadRawBytes().AsSpan().SequenceEqual(tuned.Tensors.Single(u => u.Path == t.Path).ReadRawBytes())).Select(t => t.Name).ToList();
        Assert.IsFalse(changed.Any(n => n.StartsWith("embeddings.", StringComparison.Ordinal)), string.Join(", ", changed));
        Assert.IsTrue(changed.Any(n => n.StartsWith("encoder.layer.5.", StringComparison.Ordinal)), "the top layer trains");
        Assert.IsTrue(changed.Contains("head.weight"));
        Assert.IsFalse(tuned.Proto.Graph.Node.Any(n => n.Output.Contains("924")), "the unused BERT pooler is cut away");
    }

    [TestMethod]
    public void OnnxRuntimeScoresTheMiniZoosTokenisedSplits()
    {
        var built = FoundationZooBuilder.Build(Spec, Spec.Mini, _cache);
        var zoo = ModelZoo.Open(built.ZooJson);
        Assert.AreEqual(MeanPooling.Output, zoo.FeatureOutput);
        Assert.AreEqual("[3,", $"[{zoo.Split("val").SampleShape[0]},", "splits are token ids, mask and types");
        var targets = zoo.Select("minilm", "target");
        Assert.HasCount(Spec.Mini.DiwaRuns + Spec.Mini.Auxiliaries, targets);
        foreach (var t in targets)
        {
            foreach (var (split, recorded) in new[] { ("val", t.ValAccuracy), ("ood_test", t.OodAccuracy) })
            {
                var data = zoo.Split(split);
                using var scorer = OnnxScorer.Open(t.Path);
                var accuracy = ClassificationMetrics.FromLogits(scorer.Run(data, "logits"), data).Accuracy;
                Assert.AreEqual(recorded, accuracy, 0.1, $"{t.Name} on {split}");
            }

            Assert.IsTrue(File.Exists(Path.Combine(Path.GetDirectoryName(t.Path)!, FoundationZooBuilder.FisherFileName)), "every target has its Fisher");
        }

        // RecyclingStudy.Run on this mini zoo stops at Fisher merging ("the Fisher tensors of model 1 have L2 norm 0":
        // a target's sampled Fisher on 4 texts is all zero); see docs/foundation-zoos.md, MiniLM, Not done.
    }

    /// <summary>Accuracy in % of the model's logits, computed by ONNX Runtime, on the tokenised split.</summary>
    private static double OrtAccuracy(string path, string split)
    {
        using var model = OnnxModel.Open(path);
        using var program = OnnxProgram.Load(model);
        var data = TrainingData.For(model, Spec.Text! with { Vocab = FoundationModels.Fetch("minilm", _cache).Vocabulary }).Load(split);
        var feeder = BatchFeeder.For(program, model.Path, data);
        using var batch = feeder.Batch(data, [.. Enumerable.Range(0, data.Count)]);
        var logits = OnnxRuntimeRun.Output(model.Path, batch.Feeds, "logits");
        var classes = logits.Length / data.Count;
        Assert.AreEqual(Spec.Classes, classes);
        var correct = Enumerable.Range(0, data.Count).Count(i => Array.IndexOf(logits, logits.AsSpan(i * classes, classes).ToArray().Max(), i * classes, classes) - (i * classes) == data.Labels[i]);
        return 100.0 * correct / data.Count;
    }

    private static string Hash(string path) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));
}
