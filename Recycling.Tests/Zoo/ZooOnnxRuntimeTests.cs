using Microsoft.ML.OnnxRuntime;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.Zoo;

/// <summary>ONNX Runtime reproduces the accuracies PyTorch recorded in zoo.json for every zoo model on the
/// shipped splits. Same images (uint8 / 255), same weights: the tolerance of 0.2 points only absorbs
/// float differences flipping near-tied argmaxes.</summary>
[TestClass]
public sealed class ZooOnnxRuntimeTests
{
    private const double TolerancePoints = 0.2;
    private const int BatchSize = 500;

    private static readonly Lazy<(float[] Pixels, long[] Labels)> Val = new(() => LoadSplit("val"));
    private static readonly Lazy<(float[] Pixels, long[] Labels)> Ood = new(() => LoadSplit("ood_test"));

    public static IEnumerable<object[]> ModelNames => ZooManifestTests.ModelNames;

    [TestMethod]
    [DynamicData(nameof(ModelNames))]
    public void ReproducesPyTorchAccuracies(string name)
    {
        var model = ZooManifest.Instance.Models.Single(m => m.Name == name);
        using var options = new SessionOptions { IntraOpNumThreads = 1 };
        using var session = new InferenceSession(ZooManifest.PathOf(model.File), options);

        double val = Accuracy(session, Val.Value, model.NumClasses);
        double ood = Accuracy(session, Ood.Value, model.NumClasses);

        Assert.AreEqual(model.ValAccuracy, val, TolerancePoints, $"{name} in-domain val");
        Assert.AreEqual(model.OodAccuracy, ood, TolerancePoints, $"{name} OOD test");
    }

    private static (float[] Pixels, long[] Labels) LoadSplit(string split)
    {
        var data = ZooManifest.Instance.Data;
        var images = NpyFile.Read(ZooManifest.PathOf(data[$"{split}_images"].File)).AsSpan<byte>();
        var pixels = new float[images.Length];
        for (int i = 0; i < pixels.Length; i++)
        {
            pixels[i] = images[i] / 255f;
        }

        return (pixels, NpyFile.Read(ZooManifest.PathOf(data[$"{split}_labels"].File)).ToInt64Array());
    }

    private static double Accuracy(InferenceSession session, (float[] Pixels, long[] Labels) split, int numClasses)
    {
        const int pixelsPerImage = 28 * 28;
        int n = split.Labels.Length, correct = 0;
        using var runOptions = new RunOptions();
        for (int start = 0; start < n; start += BatchSize)
        {
            int count = Math.Min(BatchSize, n - start);
            using var input = OrtValue.CreateTensorValueFromMemory(
                OrtMemoryInfo.DefaultInstance,
                split.Pixels.AsMemory(start * pixelsPerImage, count * pixelsPerImage),
                [count, 1, 28, 28]);
            using var outputs = session.Run(runOptions, ["input"], [input], ["logits", "features"]);
            var shape = outputs[0].GetTensorTypeAndShape().Shape;
            CollectionAssert.AreEqual(new long[] { count, numClasses }, shape);
            Assert.AreEqual(count, outputs[1].GetTensorTypeAndShape().Shape[0]);
            var logits = outputs[0].GetTensorDataAsSpan<float>();
            for (int i = 0; i < count; i++)
            {
                var row = logits.Slice(i * numClasses, numClasses);
                int best = 0;
                for (int c = 1; c < numClasses; c++)
                {
                    if (row[c] > row[best])
                    {
                        best = c;
                    }
                }

                if (best == split.Labels[start + i])
                {
                    correct++;
                }
            }
        }

        return 100.0 * correct / n;
    }
}
