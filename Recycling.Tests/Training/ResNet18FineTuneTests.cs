using Recycling.MLNet.Data;
using Recycling.MLNet.Probing;
using Recycling.Onnx;
using Recycling.Training;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// CNTK's ResNet18 (NuGet Microsoft.ML.DnnImageFeaturizer.ResNet18: opset 8, fixed batch 1, BatchNormalization kept)
/// fine-tuned on the zoo's rotated Fashion-MNIST at 64×64×3: a new 10-way head at ReLU393_Output_0 (its 7×7
/// Pooling395 needs inputs of 193 pixels or more), the model's own input convention (255·x − 114.5 per channel),
/// BatchNorm frozen, a zero head, AdamW 1e-4. The loss falls, the fine-tuned model is no worse than the linear probe on the
/// same frozen features on held-out data (measured: 64.5 % both at 256/200, 76.4 % vs 76.0 % at 1000/1000; LP-FT from
/// the probe head barely moves, because the probe already fits these few training images), and ONNX Runtime runs the
/// written model with a batch of 32.
/// </summary>
[TestClass]
public sealed class ResNet18FineTuneTests
{
    private const string Cut = "ReLU393_Output_0";

    private static readonly ImagePreprocessing Preprocessing = ImagePreprocessing.Parse("64x64", 3, "0.449,0.449,0.449:0.003922,0.003922,0.003922")!;

    private static string Packages => Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
        ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    private static string ResNet18 => Path.Combine(Packages, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.23.1", "tools", "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");

    [TestMethod]
    public void FineTuningMatchesTheProbe() => FineTuneAndCompare(train: 256, validation: 200, epochs: 3, slack: 0.03);

    [TestMethod]
    [TestCategory("Exhaustive")]
    public void FineTuningMatchesTheProbeOnMoreData() => FineTuneAndCompare(train: 1000, validation: 1000, epochs: 3, slack: 0.01);

    private static void FineTuneAndCompare(int train, int validation, int epochs, double slack)
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-resnet18-").FullName;
        try
        {
            var trainPrefix = HeadTests.WriteSplit(scratch, "train", train, seed: 1, split: "probe_train");
            var valPrefix = HeadTests.WriteSplit(scratch, "val", validation, seed: 2, split: "val");
            var output = Path.Combine(scratch, "r18.onnx");
            var result = FineTuner.Run(new FineTuneOptions
            {
                Model = ResNet18,
                Train = trainPrefix,
                Validation = valPrefix,
                Output = output,
                Head = new HeadSpec { Classes = 10, At = Cut, Init = HeadInit.Zeros },
                Preprocessing = Preprocessing,
                Epochs = epochs,
                BatchSize = 32,
                Settings = new TrainingSettings { Optimizer = OptimizerKind.AdamW, LearningRate = 1e-4, BatchNorm = Recycling.Training.Ops.BatchNormMode.Frozen },
            });

            var probeAccuracy = ProbeAccuracy(trainPrefix, valPrefix);
            var tuned = result.Epochs[^1].ValidationAccuracy!.Value;
            Console.WriteLine($"ResNet18 {train} train / {validation} val: probe {probeAccuracy:P2}, fine-tuned {tuned:P2}; train loss {string.Join(" → ", result.Epochs.Select(e => e.TrainLoss.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)))}");
            Assert.IsLessThan(result.Epochs[0].TrainLoss, result.Epochs[^1].TrainLoss, "the loss falls");
            Assert.IsGreaterThanOrEqualTo(probeAccuracy - slack, tuned, $"fine-tuned {tuned:P2} vs probe {probeAccuracy:P2}");
            Assert.IsLessThanOrEqualTo(FineTuner.OnnxRuntimeTolerance, result.OnnxRuntimeGap);

            using (var written = OnnxModel.Open(output))
            {
                var graph = written.Proto.Graph;
                Assert.AreEqual("[batch,3,64,64]", Dims(graph.Input[0]), "the trained input size, batch dynamic");
                CollectionAssert.AreEqual(new[] { "logits", Cut }, graph.Output.Select(o => o.Name).ToArray());
                Assert.AreEqual("[batch,10]", Dims(graph.Output[0]));
                Assert.IsNull(graph.Output[1].Type.TensorType.Shape, "the cut value's exported shape was for 224x224 inputs");
            }

            // ONNX Runtime, batch 32, on the preprocessed validation images.
            var data = Preprocessing.Apply(FineTuner.Subset(DatasetLoader.Load(valPrefix), 32));
            var feeds = new Dictionary<string, Tensor> { ["Input247"] = tensor(data.Values, [32, 3, 64, 64]) };
            var logits = RunOrt(output, feeds)["logits"];
            Assert.HasCount(320, logits);
            var correct = Enumerable.Range(0, 32).Count(n => ArgMax(logits.AsSpan(n * 10, 10)) == data.Labels[n]);
            Assert.IsGreaterThan(10, correct, "well above chance on 32 held-out samples");
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    /// <summary>The linear probe alone (no fine-tuning): ML.NET's probe on the frozen features at the cut.</summary>
    private static double ProbeAccuracy(string trainPrefix, string valPrefix)
    {
        var train = DatasetLoader.Load(trainPrefix);
        var validation = DatasetLoader.Load(valPrefix);
        using var model = OnnxModel.Open(ResNet18);
        using var program = OnnxProgram.Load(model);
        var trainFeeder = BatchFeeder.For(program, ResNet18, train, Preprocessing);
        var valFeeder = BatchFeeder.For(program, ResNet18, validation, Preprocessing);
        var trainFeatures = PreparedModel.Features(program, trainFeeder, train, Cut, 2048);
        var valFeatures = PreparedModel.Features(program, valFeeder, validation, Cut, 2048);
        var probe = LinearProbe.Train(trainFeatures, train.Labels, 10);
        var probabilities = probe.Predict(valFeatures);
        var correct = Enumerable.Range(0, validation.Count).Count(n => ArgMax(probabilities.Row(n)) == validation.Labels[n]);
        return (double)correct / validation.Count;
    }

    private static string Dims(Recycling.Onnx.Proto.ValueInfoProto info) =>
        $"[{string.Join(",", info.Type.TensorType.Shape.Dim.Select(d => d.DimParam.Length > 0 ? d.DimParam : d.DimValue > 0 ? d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture) : "?"))}]";

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }
}
