using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Probing;

namespace Recycling.Tests.MLNet;

[TestClass]
public sealed class LinearProbeTests
{
    /// <summary>Gaussian blobs around distinct class centres: every trainer must separate them almost perfectly.</summary>
    [TestMethod]
    [DataRow(ProbeTrainer.Lbfgs, ProbeNormalization.MeanVariance)]
    [DataRow(ProbeTrainer.Lbfgs, ProbeNormalization.MinMax)]
    [DataRow(ProbeTrainer.Sdca, ProbeNormalization.MeanVariance)]
    [DataRow(ProbeTrainer.Lbfgs, ProbeNormalization.SharedScale)]
    public void ProbeSeparatesBlobsAndKeepsClassOrder(ProbeTrainer trainer, ProbeNormalization normalization)
    {
        const int classes = 4, perClass = 60, dims = 6;
        var random = new Random(7);
        var values = new List<float>();
        var labels = new List<int>();
        for (int c = 0; c < classes; c++)
        {
            for (int i = 0; i < perClass; i++)
            {
                for (int d = 0; d < dims; d++)
                {
                    values.Add((d == c ? 5f : 0f) + (float)(random.NextDouble() - 0.5));
                }

                labels.Add(c);
            }
        }

        var features = new FloatMatrix(labels.Count, dims, [.. values]);
        var probe = LinearProbe.Train(features, labels, classes, new ProbeOptions { Trainer = trainer, Normalization = normalization, Threads = 1 });
        var probabilities = probe.Predict(features);
        var metrics = ClassificationMetrics.FromProbabilities(probabilities, labels);
        Assert.AreEqual(100.0, metrics.Accuracy, 1e-9, "blobs 5 units apart with noise ±0.5 are linearly separable");
        for (int r = 0; r < probabilities.Rows; r++)
        {
            Assert.AreEqual(1.0, probabilities.Row(r).ToArray().Sum(), 1e-4, "probabilities of a row sum to 1");
        }
    }
}
