using Recycling.MLNet.Inference;
using Recycling.MLNet.Probing;
using Recycling.Onnx;
using Recycling.Training;

namespace Recycling.Tests.Training;

/// <summary>
/// The probe that initialises a new head (LP-FT) on features of very different scales, one of them dead (it varies by
/// 1e-32, as two of all-MiniLM-L6-v2's pooled dimensions do) and one constant: the head is the optimum of the
/// L2-regularised multinomial logistic regression on the centred features divided by one shared scale (its gradient,
/// worked here in float64, vanishes), so the dead feature gets no weight, where per-feature standardisation folds
/// 1/std = 1e32 into its weights.
/// </summary>
[TestClass]
public sealed class HeadProbeTests
{
    private const int Classes = 3, PerClass = 90, Columns = 8, Dead = 6, Constant = 7;
    private const double L2 = 1e-3;

    [TestMethod]
    public void TheHeadIsTheRegularisedOptimumAndADeadFeatureGetsNoWeight()
    {
        var (features, labels) = Blobs();
        var (weight, bias) = HeadProbe.Fit(features, labels, Classes, seed: 0, L2, "blobs");

        // The shared scale and the centring, computed independently here.
        int rows = features.Rows;
        var mean = new double[Columns];
        for (var j = 0; j < Columns; j++)
        {
            mean[j] = Enumerable.Range(0, rows).Average(r => (double)features.Data[(r * Columns) + j]);
        }

        var scale = Math.Sqrt(Enumerable.Range(0, rows * Columns).Sum(i => Math.Pow(features.Data[i] - mean[i % Columns], 2)) / (rows * Columns));

        // Back to the scaled space z = (x − mean) / scale: Wz = W·scale, bz = b + W·mean; the gradient of
        // mean cross-entropy + L2/2·‖Wz‖² (bias unpenalised) must vanish there.
        var wz = new double[Classes, Columns];
        var bz = new double[Classes];
        for (var k = 0; k < Classes; k++)
        {
            bz[k] = bias[k];
            for (var j = 0; j < Columns; j++)
            {
                wz[k, j] = weight[(k * Columns) + j] * scale;
                bz[k] += weight[(k * Columns) + j] * mean[j];
            }
        }

        var gradW = new double[Classes, Columns];
        var gradB = new double[Classes];
        for (var r = 0; r < rows; r++)
        {
            var z = Enumerable.Range(0, Columns).Select(j => (features.Data[(r * Columns) + j] - mean[j]) / scale).ToArray();
            var logits = Enumerable.Range(0, Classes).Select(k => bz[k] + Enumerable.Range(0, Columns).Sum(j => wz[k, j] * z[j])).ToArray();
            var max = logits.Max();
            var sum = logits.Sum(l => Math.Exp(l - max));
            for (var k = 0; k < Classes; k++)
            {
                var residual = (Math.Exp(logits[k] - max) / sum) - (labels[r] == k ? 1 : 0);
                gradB[k] += residual / rows;
                for (var j = 0; j < Columns; j++)
                {
                    gradW[k, j] += residual * z[j] / rows;
                }
            }
        }

        for (var k = 0; k < Classes; k++)
        {
            Assert.AreEqual(0, gradB[k], 1e-3, $"bias gradient of class {k}");
            for (var j = 0; j < Columns; j++)
            {
                Assert.AreEqual(0, gradW[k, j] + (L2 * wz[k, j]), 1e-3, $"weight gradient of class {k}, feature {j}");
            }
        }

        var largest = weight.Max(Math.Abs);
        Assert.IsGreaterThan(0.1, largest, "the informative features are used");
        for (var k = 0; k < Classes; k++)
        {
            Assert.IsLessThan(1e-20, Math.Abs(weight[(k * Columns) + Dead]), "a feature that varies by 1e-32 gets no weight");
            Assert.IsLessThan(1e-6, Math.Abs(weight[(k * Columns) + Constant]), "a constant feature gets no weight");
        }

        // The fault this fit replaces: per-feature standardisation folds 1/std into the dead feature's weights.
        var (standardised, _) = LinearProbe.Train(features, labels, Classes, new ProbeOptions { Seed = 0, L2 = L2 }).ToLinear();
        Assert.IsGreaterThan(1e20, Enumerable.Range(0, Classes).Max(k => Math.Abs(standardised[(k * Columns) + Dead])));
    }

    [TestMethod]
    public void ScalingEveryFeatureGivesTheSamePredictions()
    {
        var (features, labels) = Blobs();
        var (weight, bias) = HeadProbe.Fit(features, labels, Classes, seed: 0, L2, "blobs");
        var scaled = new FloatMatrix(features.Rows, Columns, [.. features.Data.Select(v => v * 1000f)]);
        var (weight1000, bias1000) = HeadProbe.Fit(scaled, labels, Classes, seed: 0, L2, "blobs x 1000");
        for (var i = 0; i < weight.Length; i++)
        {
            Assert.AreEqual(weight[i], weight1000[i] * 1000, 1e-3 * (1 + Math.Abs(weight[i])), $"weight {i}");
        }

        for (var k = 0; k < Classes; k++)
        {
            Assert.AreEqual(bias[k], bias1000[k], 1e-3 * (1 + Math.Abs(bias[k])), $"bias {k}");
        }
    }

    /// <summary>
    /// The head is, bit for bit, the probe trained without normalisation on features centred and divided by the shared
    /// scale by hand (in double, rounded to float), its weights divided by that scale and the centring folded into the
    /// bias: the fit the cached zoo runs were made with before the rule became a <see cref="ProbeNormalization"/> mode.
    /// </summary>
    [TestMethod]
    public void TheHeadIsTheHandScaledProbeBitForBit()
    {
        var (features, labels) = Blobs();
        var (rows, columns) = (features.Rows, Columns);
        var mean = new double[columns];
        for (var i = 0; i < rows * columns; i++)
        {
            mean[i % columns] += features.Data[i];
        }

        for (var j = 0; j < columns; j++)
        {
            mean[j] /= rows;
        }

        double squares = 0;
        for (var i = 0; i < rows * columns; i++)
        {
            squares += (features.Data[i] - mean[i % columns]) * (features.Data[i] - mean[i % columns]);
        }

        var scale = Math.Sqrt(squares / ((double)rows * columns));
        var scaled = new FloatMatrix(rows, columns, [.. features.Data.Select((v, i) => (float)((v - mean[i % columns]) / scale))]);
        var (expectedWeight, expectedBias) = LinearProbe.Train(scaled, labels, Classes, new ProbeOptions { Seed = 0, L2 = L2, Normalization = ProbeNormalization.None }).ToLinear();
        for (var k = 0; k < Classes; k++)
        {
            double shift = expectedBias[k];
            for (var j = 0; j < columns; j++)
            {
                var w = expectedWeight[(k * columns) + j] / scale;
                expectedWeight[(k * columns) + j] = (float)w;
                shift -= w * mean[j];
            }

            expectedBias[k] = (float)shift;
        }

        var (weight, bias) = HeadProbe.Fit(features, labels, Classes, seed: 0, L2, "blobs");
        CollectionAssert.AreEqual(expectedWeight, weight);
        CollectionAssert.AreEqual(expectedBias, bias);
    }

    [TestMethod]
    public void FeaturesThatAreNotFiniteNameTheirSource()
    {
        var (features, labels) = Blobs();
        features.Data[5] = float.NaN;
        var error = Assert.ThrowsExactly<RecyclingException>(() => HeadProbe.Fit(features, labels, Classes, seed: 0, L2, "'train.csv'"));
        Assert.AreEqual("'train.csv': the features a probe is fitted on are not all finite", error.Message);
    }

    /// <summary>Overlapping Gaussian blobs (so the regularised optimum is finite) on features of scales 0.01 to 100, a dead one and a constant one.</summary>
    private static (FloatMatrix Features, int[] Labels) Blobs()
    {
        var random = new Random(11);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
        var values = new List<float>();
        var labels = new List<int>();
        for (var c = 0; c < Classes; c++)
        {
            for (var i = 0; i < PerClass; i++)
            {
                for (var j = 0; j < Dead; j++)
                {
                    values.Add((float)((((j % Classes) == c ? 1.0 : 0.0) + Normal()) * Math.Pow(10, (j % 5) - 2)));
                }

                values.Add((float)(1e-32 * Normal()));
                values.Add(3f);
                labels.Add(c);
            }
        }

        return (new FloatMatrix(labels.Count, Columns, [.. values]), [.. labels]);
    }
}
