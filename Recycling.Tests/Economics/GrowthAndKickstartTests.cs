using Recycling.MLNet.Economics;

namespace Recycling.Tests.Economics;

[TestClass]
public sealed class GrowthAndKickstartTests
{
    // Exact values from reference_values.py (Python fractions): Σ_(k=0..10) r^-k.
    [TestMethod]
    [DataRow(4.2, "1.3", 1.312499817039593)]
    [DataRow(1.3, "4.1", 4.091539499045314)]
    [DataRow(10.5, "1.1", 1.1052631578882746)]
    [DataRow(3.3, "1.4", 1.4347797699089302)]
    public void Table1IsReproducedToOneDecimal(double r, string seedValue, double exact)
    {
        double advantage = RecyclingEconomics.GrowthOnlyAdvantage(r, years: 10);

        Assert.AreEqual(seedValue, advantage.ToString("F1", System.Globalization.CultureInfo.InvariantCulture));
        Assert.AreEqual(exact, advantage, 1e-13 * exact);
    }

    [TestMethod]
    public void SeedScenariosAreTable1Rows()
    {
        var table = RecyclingEconomics.GrowthTable();

        CollectionAssert.AreEqual(new[] { 4.2, 1.3, 10.5, 3.3 }, table.Select(row => row.GrowthRate).ToArray());
        CollectionAssert.AreEqual(new[] { "1.3", "4.1", "1.1", "1.4" },
            table.Select(row => row.Advantage.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        Assert.IsTrue(table.All(row => row.Years == 10));
    }

    [TestMethod]
    [DataRow(1.3, 0)]
    [DataRow(1.3, 10)]
    [DataRow(2.0, 7)]
    [DataRow(4.2, 10)]
    [DataRow(10.5, 25)]
    [DataRow(0.8, 12)]
    public void GrowthOnlyMatchesTheSeedsGeometricSum(double r, int years)
    {
        // The seed's closed form, inverted: Σ_(t=0..T) r^t / r^T = (r^(T+1) − 1) / ((r − 1)·r^T).
        double closed = (Math.Pow(r, years + 1) - 1) / ((r - 1) * Math.Pow(r, years));

        Assert.AreEqual(closed, RecyclingEconomics.GrowthOnlyAdvantage(r, years), 1e-12 * closed);
    }

    [TestMethod]
    [DataRow(1.3)]
    [DataRow(3.3)]
    [DataRow(4.2)]
    public void GrowthOnlyIsKickstartingWithFullReuse(double r)
    {
        var series = RecyclingEconomics.Kickstart(r, alpha: 1, iterations: 11);

        Assert.AreEqual(RecyclingEconomics.GrowthOnlyAdvantage(r, 10), series.Steps[^1].Benefit, 1e-13);
    }

    [TestMethod]
    [DataRow(1.05)]
    [DataRow(1.3)]
    [DataRow(4.2)]
    [DataRow(10.5)]
    public void GrowthOnlyLimitIsTheLongSum(double r)
    {
        Assert.AreEqual(RecyclingEconomics.GrowthOnlyLimit(r), RecyclingEconomics.GrowthOnlyAdvantage(r, 5000), 1e-10);
    }

    [TestMethod]
    public void GrowthOnlyLimitDivergesWithoutGrowth()
    {
        Assert.AreEqual(double.PositiveInfinity, RecyclingEconomics.GrowthOnlyLimit(1));
        Assert.AreEqual(101, RecyclingEconomics.GrowthOnlyAdvantage(1, 100), 1e-12);
    }

    [TestMethod]
    public void KickstartFollowsTheSeedsEquations()
    {
        // C_1 given, C_n = r·C_(n−1); A_1 = C_1; A_n = C_n + α·A_(n−1), accumulated literally.
        foreach (double r in new[] { 0.7, 1.3, 2.3, 4.2, 10.5 })
        {
            foreach (double alpha in new[] { 0, 0.1, 0.5, 0.9, 1 })
            {
                const double c1 = 3.7;
                var series = RecyclingEconomics.Kickstart(r, alpha, 60, c1);
                double c = c1, a = c1;
                for (int n = 1; n <= 60; n++)
                {
                    if (n > 1)
                    {
                        c *= r;
                        a = c + (alpha * a);
                    }
                    var step = series.Steps[n - 1];
                    Assert.AreEqual(n, step.Iteration);
                    Assert.AreEqual(c, step.Compute, 1e-12 * c);
                    Assert.AreEqual(a, step.AdjustedCompute, 1e-12 * a, $"r={r} α={alpha} n={n}");
                    Assert.AreEqual(a / c, step.Benefit, 1e-12 * (a / c), $"r={r} α={alpha} n={n}");
                }
            }
        }
    }

    [TestMethod]
    public void KickstartLimitIsTheLongIteration()
    {
        foreach (double r in new[] { 1.1, 1.3, 2.3, 4.2, 5.75, 10.5 })
        {
            foreach (double alpha in new[] { 0, 0.25, 0.5, 0.9, 1 })
            {
                double limit = RecyclingEconomics.KickstartLimit(r, alpha);
                Assert.AreEqual(r / (r - alpha), limit, 1e-15 * limit);
                var series = RecyclingEconomics.Kickstart(r, alpha, 5000);
                Assert.AreEqual(limit, series.Steps[^1].Benefit, 1e-9 * limit, $"r={r} α={alpha}");
                Assert.AreEqual(limit, series.Limit);
                // Monotone from below: every iteration gains, none exceeds the limit.
                for (int n = 1; n < series.Steps.Count; n++)
                {
                    Assert.IsTrue(series.Steps[n].Benefit >= series.Steps[n - 1].Benefit);
                    Assert.IsTrue(series.Steps[n].Benefit <= limit * (1 + 1e-12));
                }
            }
        }
    }

    [TestMethod]
    public void KickstartDivergesWhenReuseOutpacesGrowth()
    {
        Assert.AreEqual(double.PositiveInfinity, RecyclingEconomics.KickstartLimit(1, 1));
        Assert.AreEqual(double.PositiveInfinity, RecyclingEconomics.KickstartLimit(0.5, 0.6));
        // r = α = 1: A_n/C_n = n.
        Assert.AreEqual(200, RecyclingEconomics.Kickstart(1, 1, 200).Steps[^1].Benefit, 1e-9);
    }

    [TestMethod]
    public void KickstartGridIsTheBenefitAfterThatManyIterations()
    {
        double[] rs = [1.3, 2.3, 10.5];
        double[] alphas = [0, 0.5, 1];
        var grid = RecyclingEconomics.KickstartBenefitGrid(rs, alphas, 7);
        for (int i = 0; i < rs.Length; i++)
        {
            for (int j = 0; j < alphas.Length; j++)
            {
                Assert.AreEqual(RecyclingEconomics.Kickstart(rs[i], alphas[j], 7).Steps[^1].Benefit, grid.Benefit[i, j], 1e-14);
            }
        }
    }

    [TestMethod]
    public void EffectiveComputeEqualsLoweredAlpha()
    {
        // The seed's two ways of counting algorithmic progress g agree: the benefit depends on α/r only.
        const double r = 2.3, g = 2.5;
        foreach (double alpha in new[] { 0.2, 0.6, 1 })
        {
            var effective = RecyclingEconomics.Kickstart(RecyclingEconomics.EffectiveGrowth(r, g), alpha, 30);
            var lowered = RecyclingEconomics.Kickstart(r, alpha / g, 30);
            for (int n = 0; n < 30; n++)
            {
                Assert.AreEqual(lowered.Steps[n].Benefit, effective.Steps[n].Benefit, 1e-14);
            }
        }
    }

    [TestMethod]
    public void SeedsWorkedExampleStaysUnderOneAndAHalf()
    {
        double compute = RecyclingEconomics.GrowthFromPercent(130);
        double algorithms = RecyclingEconomics.GrowthFromPercent(150);
        double effective = RecyclingEconomics.EffectiveGrowth(compute, algorithms);

        Assert.AreEqual(2.3, compute, 1e-15);
        Assert.AreEqual(2.5, algorithms, 1e-15);
        Assert.AreEqual(475, (effective - 1) * 100, 1e-9);
        for (int k = 0; k <= 100; k++)
        {
            double alpha = k / 100.0;
            var series = RecyclingEconomics.Kickstart(effective, alpha, 200);
            Assert.IsTrue(series.Steps.All(step => step.Benefit < 1.5), $"α={alpha}");
            Assert.IsTrue(series.Limit < 1.5);
        }
        Assert.AreEqual(5.75 / 4.75, RecyclingEconomics.KickstartLimit(effective, 1), 1e-15);
        Assert.IsNull(RecyclingEconomics.KickstartAlphaForBenefit(effective, 1.5).Alpha);
    }

    [TestMethod]
    [DataRow(4.2, 1.2)]
    [DataRow(1.3, 2.0)]
    [DataRow(2.3, 1.1)]
    public void AlphaForBenefitInTheLimit(double r, double benefit)
    {
        double alpha = RecyclingEconomics.KickstartAlphaForBenefit(r, benefit).Alpha!.Value;

        Assert.AreEqual(r * (benefit - 1) / benefit, alpha, 1e-15);
        Assert.AreEqual(benefit, RecyclingEconomics.KickstartLimit(r, alpha), 1e-12);
    }

    [TestMethod]
    [DataRow(4.2, 1.2, 3)]
    [DataRow(1.3, 2.0, 5)]
    [DataRow(1.3, 3.0, 40)]
    public void AlphaForBenefitAfterIterationsIsTheSmallestThatReachesIt(double r, double benefit, int iterations)
    {
        double alpha = RecyclingEconomics.KickstartAlphaForBenefit(r, benefit, iterations).Alpha!.Value;

        Assert.IsTrue(RecyclingEconomics.Kickstart(r, alpha, iterations).Steps[^1].Benefit >= benefit);
        Assert.AreEqual(benefit, RecyclingEconomics.Kickstart(r, alpha, iterations).Steps[^1].Benefit, 1e-12);
        Assert.IsTrue(RecyclingEconomics.Kickstart(r, alpha - 1e-9, iterations).Steps[^1].Benefit < benefit);
        // Fewer iterations need more reuse than the limit.
        Assert.IsTrue(alpha > RecyclingEconomics.KickstartAlphaForBenefit(r, benefit).Alpha!.Value);
    }

    [TestMethod]
    public void AlphaForBenefitIsNullWhenFullReuseFallsShort()
    {
        var limit = RecyclingEconomics.KickstartAlphaForBenefit(4.2, 1.4);
        var twoIterations = RecyclingEconomics.KickstartAlphaForBenefit(1.3, 2.0, 2);

        Assert.IsNull(limit.Alpha);
        Assert.AreEqual(4.2 / 3.2, limit.BenefitAtFullReuse, 1e-15);
        Assert.IsNull(twoIterations.Alpha);
        Assert.AreEqual(1 + (1 / 1.3), twoIterations.BenefitAtFullReuse, 1e-15);
        Assert.AreEqual(0.0, RecyclingEconomics.KickstartAlphaForBenefit(4.2, 1).Alpha);
    }
}
