using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Zoo;
using Recycling.Training;
using Recycling.Training.Ops;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Tests.Training;

/// <summary>
/// Gradients, Fisher and short training runs equal PyTorch's on the same exports and batches (fixtures made by
/// scripts/training/make_training_fixtures.py with torch 1.13). Tolerances, relative to the largest reference value:
/// gradients and Fisher 1e-4 (fp32 backward in another summation order), logits after 3 SGD steps 1e-4, after 3 AdamW steps 1e-3.
/// </summary>
[TestClass]
public sealed class PyTorchEquivalenceTests
{
    private const int BatchSize = 4;

    public static IEnumerable<object[]> Models => [["mlp"], ["cnn_bn"], ["encoder_opset13"], ["encoder_opset17"]];

    public static IEnumerable<object[]> Runs =>
    [
        ["mlp", "sgd", BatchNormMode.Train],
        ["mlp", "adamw", BatchNormMode.Train],
        ["cnn_bn", "sgd:bntrain", BatchNormMode.Train],
        ["cnn_bn", "sgd:bnfrozen", BatchNormMode.Frozen],
        ["cnn_bn", "adamw:bntrain", BatchNormMode.Train],
        ["cnn_bn", "adamw:bnfrozen", BatchNormMode.Frozen],
        ["encoder_opset13", "sgd", BatchNormMode.Train],
        ["encoder_opset17", "adamw", BatchNormMode.Train],
    ];

    private static string FixturePath(string file) => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", file);

    [TestMethod]
    [DynamicData(nameof(Models))]
    public void GradientsEqualPyTorch(string name)
    {
        var reference = NpyFile.ReadNpz(FixturePath($"{name}.npz"));
        using var model = OnnxModel.Open(FixturePath($"{name}.onnx"));
        using var program = OnnxProgram.Load(model);

        // Every parameter of the torch module is exactly one ONNX parameter (the tied embedding included), nothing else is.
        var expectedNames = reference.Keys.Where(k => k.StartsWith("grad:", StringComparison.Ordinal)).Select(k => k[5..]).Order().ToList();
        CollectionAssert.AreEqual(expectedNames, program.Parameters.Keys.Order().ToList(), name);

        using var scope = NewDisposeScope();
        using var batch = Slice(reference, "input:", 0, BatchSize, reference["labels"]);
        var logits = program.Forward(batch.Feeds, new OpContext())["logits"];
        Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(logits.data<float>().ToArray(), reference["logits"].ToSingleArray()), $"{name} logits");
        F.cross_entropy(logits, batch.Labels).backward();
        foreach (var (parameter, value) in program.Parameters)
        {
            var gap = RelativeGap(value.grad!.data<float>().ToArray(), reference[$"grad:{parameter}"].ToSingleArray());
            Assert.IsLessThanOrEqualTo(1e-4, gap, $"{name} gradient of {parameter}");
        }
    }

    [TestMethod]
    [DynamicData(nameof(Models))]
    public void FisherWithTrueLabelsEqualsPyTorch(string name)
    {
        var reference = NpyFile.ReadNpz(FixturePath($"{name}.npz"));
        using var model = OnnxModel.Open(FixturePath($"{name}.onnx"));
        using var program = OnnxProgram.Load(model);
        var labels = reference["labels"].ToInt64Array();
        var samples = Enumerable.Range(0, labels.Length).Select(i => Slice(reference, "input:", i, 1, reference["labels"])).ToList();
        var fisher = FisherEstimator.Compute(program, "logits", samples, FisherLabels.True, seed: 0);
        samples.ForEach(s => s.Dispose());
        foreach (var (parameter, values) in fisher)
        {
            var gap = RelativeGap(values, reference[$"fisher:{parameter}"].ToSingleArray());
            Assert.IsLessThanOrEqualTo(1e-4, gap, $"{name} Fisher of {parameter}");
        }

        Assert.HasCount(program.Parameters.Count, fisher);
    }

    [TestMethod]
    [DynamicData(nameof(Runs))]
    public void ThreeStepsLandOnPyTorchLogits(string name, string run, BatchNormMode batchNorm)
    {
        var reference = NpyFile.ReadNpz(FixturePath($"{name}.npz"));
        using var model = OnnxModel.Open(FixturePath($"{name}.onnx"));
        using var program = OnnxProgram.Load(model);
        var adamw = run.StartsWith("adamw", StringComparison.Ordinal);
        var settings = adamw
            ? new TrainingSettings { Optimizer = OptimizerKind.AdamW, LearningRate = 0.01, WeightDecay = 0.01, BatchNorm = batchNorm }
            : new TrainingSettings { Optimizer = OptimizerKind.Sgd, LearningRate = 0.05, Momentum = 0.9, BatchNorm = batchNorm };
        using (var trainer = new Trainer(program, "logits", settings))
        {
            for (var step = 0; step < 3; step++)
            {
                using var batch = Slice(reference, "input:", step * BatchSize, BatchSize, reference["labels"]);
                trainer.Step(batch);
            }
        }

        var heldout = reference.Keys.Where(k => k.StartsWith("heldout:", StringComparison.Ordinal)).ToDictionary(k => k[8..], k => ToTorch(reference[k]));
        using var noGrad = no_grad();
        var logits = program.Forward(heldout, new OpContext())["logits"].data<float>().ToArray();
        Assert.IsLessThanOrEqualTo(adamw ? 1e-3 : 1e-4, RelativeGap(logits, reference[$"trained:{run}"].ToSingleArray()), $"{name} {run}");
        foreach (var key in reference.Keys.Where(k => k.StartsWith($"stat:{run}:", StringComparison.Ordinal)))
        {
            var buffer = key[($"stat:{run}:".Length)..];
            Assert.IsLessThanOrEqualTo(1e-4, RelativeGap(program.Buffers[buffer].data<float>().ToArray(), reference[key].ToSingleArray()), $"{name} {run} {buffer}");
        }
    }

    private static Batch Slice(IReadOnlyDictionary<string, NpyArray> arrays, string prefix, int start, int count, NpyArray labels)
    {
        var feeds = arrays.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal))
            .ToDictionary(k => k[prefix.Length..], k => ToTorch(arrays[k]).narrow(0, start, count));
        return new Batch(feeds, ToTorch(labels).narrow(0, start, count));
    }
}
