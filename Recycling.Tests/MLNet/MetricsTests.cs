using Recycling.MLNet.Diagnostics;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;

namespace Recycling.Tests.MLNet;

[TestClass]
public sealed class MetricsTests
{
    /// <summary>Four samples, three classes, worked by hand.</summary>
    [TestMethod]
    public void MetricsFromLogitsMatchHandComputedValues()
    {
        // Row 0: logits (0, ln 3, 0): p = (0.2, 0.6, 0.2), label 1, correct.
        // Row 1: logits (ln 2, 0, 0): p = (0.5, 0.25, 0.25), label 0, correct.
        // Row 2: logits (0, 0, 0): p = 1/3 each, argmax 0 (first on ties), label 2, wrong.
        // Row 3: logits (0, 0, ln 8): p = (0.1, 0.1, 0.8), label 2, correct.
        var ln3 = (float)Math.Log(3);
        var ln2 = (float)Math.Log(2);
        var ln8 = (float)Math.Log(8);
        var logits = new FloatMatrix(4, 3, [0, ln3, 0, ln2, 0, 0, 0, 0, 0, 0, 0, ln8]);
        int[] labels = [1, 0, 2, 2];
        int[] domains = [15, 15, 0, 0];
        var m = ClassificationMetrics.FromLogits(logits, labels, domains);

        Assert.AreEqual(75.0, m.Accuracy, 1e-12);
        // Per-class recall: class 0 1/1, class 1 1/1, class 2 1/2 -> mean 5/6.
        Assert.AreEqual(100.0 * 5 / 6, m.MacroAccuracy, 1e-12);
        double expectedLoss = -(Math.Log(0.6) + Math.Log(0.5) + Math.Log(1.0 / 3) + Math.Log(0.8)) / 4;
        Assert.AreEqual(expectedLoss, m.LogLoss, 1e-6, "log-loss is the mean of −ln p(label), natural log");
        CollectionAssert.AreEqual(new[] { 1, 0, 0 }, m.ConfusionMatrix[0]);
        CollectionAssert.AreEqual(new[] { 0, 1, 0 }, m.ConfusionMatrix[1]);
        CollectionAssert.AreEqual(new[] { 1, 0, 1 }, m.ConfusionMatrix[2], "row = true class, column = predicted");
        Assert.HasCount(2, m.PerDomain);
        Assert.AreEqual(new DomainAccuracy(0, 2, 50.0), m.PerDomain[0]);
        Assert.AreEqual(new DomainAccuracy(15, 2, 100.0), m.PerDomain[1]);
    }

    [TestMethod]
    public void MetricsFromProbabilitiesFloorZeroProbabilities()
    {
        var probabilities = new FloatMatrix(2, 2, [1, 0, 0.25f, 0.75f]);
        var m = ClassificationMetrics.FromProbabilities(probabilities, [1, 1]);
        Assert.AreEqual(50.0, m.Accuracy, 1e-12);
        Assert.AreEqual((-Math.Log(ClassificationMetrics.ProbabilityFloor) - Math.Log(0.75)) / 2, m.LogLoss, 1e-9);
    }

    [TestMethod]
    public void LabelsOutsideTheModelsClassesAreRefused()
    {
        var e = Assert.ThrowsExactly<Recycling.Onnx.RecyclingException>(() => ClassificationMetrics.FromLogits(new FloatMatrix(1, 2, [0, 1]), [5]));
        StringAssert.Contains(e.Message, "label 5 is outside the model's 2 classes");
    }

    /// <summary>Ratio-error counts by hand: both wrong N00, exactly one wrong N10 + N01.</summary>
    [TestMethod]
    public void DiversityMatchesHandCounts()
    {
        int[] labels = [0, 1, 2, 3, 0, 1];
        int[] a = [0, 2, 2, 0, 1, 1]; // wrong on samples 1, 3, 4
        int[] b = [1, 2, 2, 3, 2, 1]; // wrong on samples 0, 1, 4
        var (ratio, disagreement) = DiversityMatrix.Pair(a, b, labels);
        // both wrong: 1, 4 -> N00 = 2; exactly one wrong: 0, 3 -> 2; predictions differ on 0, 3, 4 -> 3 of 6.
        Assert.AreEqual(1.0, ratio, 1e-12);
        Assert.AreEqual(50.0, disagreement, 1e-12);
        var matrix = DiversityMatrix.Compute(["a", "b", "a again"], [a, b, a], labels);
        Assert.AreEqual(0.0, matrix.RatioError[0][2], "identical predictions: no sample with exactly one wrong");
        Assert.AreEqual(matrix.RatioError[0][1], matrix.RatioError[1][0]);
        Assert.AreEqual(0.0, matrix.Disagreement[2][0]);
    }

    [TestMethod]
    public void InterpolationBarrierIsTheBumpAboveTheEndpointMean()
    {
        var curve = new InterpolationCurve("a", "b", "val", [new(0, 90, 0.3), new(0.5, 70, 0.9), new(1, 80, 0.5)]);
        Assert.AreEqual(0.9 - 0.4, curve.LossBarrier, 1e-12);
        Assert.AreEqual(30 - 15, curve.ErrorBarrier, 1e-12);
        CollectionAssert.AreEqual(new[] { 0, 0.25, 0.5, 0.75, 1 }, InterpolationCurve.Grid(5).ToArray());
    }
}
