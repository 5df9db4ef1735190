using Recycling.Onnx;
using Recycling.Training;
using Recycling.Training.Foundation;
using Recycling.Training.Ops;
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

    [ClassInitialize]
    public static void Initialize(TestContext context) => _cache = FoundationZooFixture.NewCache(Spec);

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
        var first = FoundationZooFixture.AssertReusedAndResumed(Spec, _cache);
        var target = first.Runs[1];

        // The recorded accuracies (val: the training loop; OOD: the executor) through ONNX Runtime on the same texts.
        var data = Path.Combine(FoundationZooBuilder.Root(Spec, _cache), FoundationZooFixture.TwoRuns(Spec).Name, "data");
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
        var zoo = FoundationZooFixture.AssertMiniZooReproduced(Spec, _cache);
        Assert.AreEqual(MeanPooling.Output, zoo.FeatureOutput);
        Assert.AreEqual("[3,", $"[{zoo.Split("val").SampleShape[0]},", "splits are token ids, mask and types");
    }

    /// <summary>
    /// The fault behind the first full build's collapsed targets: all-MiniLM-L6-v2's final LayerNorm has dimensions
    /// whose gain and bias are about 1e-32 and 1e-9, so the pooled features there hardly vary; a probe on per-feature
    /// standardised features folded 1/std into those weights (head norm 2e31), and the second AdamW step of LP-FT,
    /// which moves those gains by the learning rate, sent the loss from 0.21 to 23,779. The head probe
    /// (<see cref="HeadProbe"/>) gives them no weight: the head stays small and the loss stays low.
    /// </summary>
    [TestMethod]
    public void TheProbeHeadIsBoundedAndLpFtAtTheTopLearningRateDoesNotDiverge()
    {
        using var scratch = new Scratch();
        var pooled = Path.Combine(scratch.Path, "pooled.onnx");
        using (var source = OnnxModel.Open(TextModels.MiniLm.Model))
        {
            MeanPooling.Write(source, pooled);
        }

        var files = TextZooData.Materialise(new Dictionary<string, int> { [Spec.TargetTrain] = 32 }, Spec.FindData(), scratch.Path);
        using var original = OnnxModel.Open(pooled);
        var train = TrainingData.For(original, Spec.Text! with { Vocab = TextModels.Vocabulary }).Load(files[Spec.TargetTrain]);
        using var prepared = PreparedModel.Prepare(original, new HeadSpec { Classes = Spec.Classes, At = Spec.Cut, Init = HeadInit.Probe }, train, null);
        using var program = OnnxProgram.Load(prepared.Model, new ParameterSelection { Freeze = new System.Text.RegularExpressions.Regex(Spec.TargetTraining.Freeze!) });
        var feeder = BatchFeeder.For(program, original.Path, train, null);
        var head = prepared.InitializeHead(program, feeder, train, HeadInit.Probe, seed: 0, Spec.ProbeL2);
        Assert.IsLessThan(100, head.Weight.Max(Math.Abs), "no feature gets an amplified weight (per-feature standardisation: 7e30)");

        var lr = Spec.TargetTraining.LearningRateHigh!.Value;
        using var trainer = new Trainer(program, HeadAttachment.Logits, new TrainingSettings { Optimizer = OptimizerKind.AdamW, LearningRate = lr, WeightDecay = 0.1, BatchNorm = BatchNormMode.Frozen });
        for (var step = 0; step < 3; step++)
        {
            using var batch = feeder.Batch(train, [.. Enumerable.Range((step % 2) * 16, 16)]);
            var loss = trainer.Step(batch, lr);
            Assert.IsLessThan(Math.Log(Spec.Classes), loss, $"step {step + 1}: the loss stays below a uniform guess's");
        }
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
}
