using Recycling.MLNet.Economics;

namespace Recycling.Tests.Economics;

[TestClass]
public sealed class AugmentationTests
{
    private static readonly double[] GrowthRates = [0.9, 1.3, 2.3, 4.2, 10.5];
    private static readonly double[] Progress = [1.0, 1.5, 2.5];
    private static readonly double[] Betas = [0, 0.3, 0.8, 0.9, 0.95, 1];

    [TestMethod]
    public void AugmentationFollowsTheSeedsEquations()
    {
        foreach (double r in GrowthRates)
        {
            foreach (double g in Progress)
            {
                foreach (double beta in Betas)
                {
                    // C_n = r·C_(n−1); P_1 = 1, P_n = g·P_(n−1); A_1 = C_1; A_n = β·P_n·C_n + A_(n−1), accumulated literally.
                    const double c1 = 2.5;
                    var series = RecyclingEconomics.Augment(r, g, beta, 40, c1);
                    double c = c1, p = 1, a = c1;
                    for (int n = 1; n <= 40; n++)
                    {
                        if (n > 1)
                        {
                            c *= r;
                            p *= g;
                            a = (beta * p * c) + a;
                        }
                        var step = series.Steps[n - 1];
                        Assert.AreEqual(c, step.Compute, 1e-12 * c);
                        Assert.AreEqual(p, step.Progress, 1e-12 * p);
                        Assert.AreEqual(p * c, step.EffectiveCompute, 1e-12 * p * c);
                        Assert.AreEqual(a, step.AdjustedCompute, 1e-12 * a, $"r={r} g={g} β={beta} n={n}");
                        Assert.AreEqual(a / (p * c), step.Benefit, 1e-12 * (a / (p * c)), $"r={r} g={g} β={beta} n={n}");
                    }
                }
            }
        }
    }

    [TestMethod]
    public void SeedsFigure4Value()
    {
        // reference_values.py (Python fractions): r = 4.2, g = 2.5, β = 0.9 after 4 iterations.
        Assert.AreEqual(0.9947413886189397, RecyclingEconomics.Augment(4.2, 2.5, 0.9, 4).Steps[^1].Benefit, 1e-15);
    }

    [TestMethod]
    public void AugmentationLimitIsTheLongIteration()
    {
        foreach (double r in GrowthRates)
        {
            foreach (double g in Progress)
            {
                foreach (double beta in Betas)
                {
                    double q = g * r;
                    if (q <= 1)
                    {
                        continue;
                    }
                    double limit = RecyclingEconomics.AugmentationLimit(r, g, beta);
                    Assert.AreEqual(beta * q / (q - 1), limit, 1e-15);
                    Assert.AreEqual(limit, RecyclingEconomics.Augment(r, g, beta, 5000).Steps[^1].Benefit, 1e-9, $"r={r} g={g} β={beta}");
                }
            }
        }
    }

    [TestMethod]
    public void AugmentationDivergesWithoutEffectiveGrowth()
    {
        Assert.AreEqual(double.PositiveInfinity, RecyclingEconomics.AugmentationLimit(0.9, 1, 0.5));
        Assert.AreEqual(1.0, RecyclingEconomics.AugmentationLimit(1, 1, 0));
        Assert.AreEqual(1 + (0.5 * 99), RecyclingEconomics.Augment(1, 1, 0.5, 100).Steps[^1].Benefit, 1e-12);
    }

    [TestMethod]
    public void FullUptakeWithoutProgressIsGrowthOnly()
    {
        var series = RecyclingEconomics.Augment(4.2, 1, 1, 11);

        Assert.AreEqual(RecyclingEconomics.GrowthOnlyAdvantage(4.2, 10), series.Steps[^1].Benefit, 1e-13);
    }

    [TestMethod]
    public void BreakEvenScanAgreesWithTheThresholdOnBeta()
    {
        foreach (double r in GrowthRates)
        {
            foreach (double g in Progress)
            {
                for (int k = 0; k <= 100; k++)
                {
                    double beta = k / 100.0;
                    var breakEven = RecyclingEconomics.AugmentationBreakEven(r, g, beta, 30);
                    double threshold = Math.Max(0, 1 - (1 / (g * r)));
                    Assert.AreEqual(threshold, breakEven.MinimumBeta, 1e-15);
                    if (Math.Abs(beta - threshold) < 1e-9)
                    {
                        continue; // a tie: every benefit is 1 up to rounding
                    }
                    var benefits = RecyclingEconomics.Augment(r, g, beta, 30).Steps.Skip(1).Select(s => s.Benefit).ToList();
                    if (beta > threshold)
                    {
                        Assert.AreEqual(30, breakEven.LastBeneficialIteration, $"r={r} g={g} β={beta}");
                        Assert.IsTrue(benefits.All(b => b > 1));
                        Assert.IsTrue(breakEven.BeatsScratchInLimit);
                    }
                    else
                    {
                        Assert.IsNull(breakEven.LastBeneficialIteration, $"r={r} g={g} β={beta}");
                        Assert.IsTrue(benefits.All(b => b < 1));
                        Assert.IsFalse(breakEven.BeatsScratchInLimit);
                    }
                }
            }
        }
    }

    [TestMethod]
    public void SeedsCurrentRatesNeedBetaAboveNinety()
    {
        // Compute 4.2x and software 2.5x a year: augmentation only pays when β > 1 − 1/10.5 ≈ 0.905.
        var breakEven = RecyclingEconomics.AugmentationBreakEven(4.2, 2.5, 0.9, 10);

        Assert.AreEqual(1 - (1 / 10.5), breakEven.MinimumBeta, 1e-15);
        Assert.IsNull(breakEven.LastBeneficialIteration);
        Assert.AreEqual(10, RecyclingEconomics.AugmentationBreakEven(4.2, 2.5, 0.95, 10).LastBeneficialIteration);
    }
}
