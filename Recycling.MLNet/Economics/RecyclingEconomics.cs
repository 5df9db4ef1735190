namespace Recycling.MLNet.Economics;

/// <summary>
/// The models of "The Limited Benefit of Recycling Foundation Models": how much adjusted compute A (compute a
/// from-scratch run would need for the same result) recycling buys per unit of real compute C, when compute
/// grows by a factor r a year. Growth rates are multipliers (4.2 = 4.2x a year = +320 %).
/// </summary>
public static class RecyclingEconomics
{
    public const int DefaultYears = 10;

    /// <summary>Longest series computed: a bound on memory and time (converging series reach their limit far sooner).</summary>
    public const int MaxIterations = 1_000_000;

    /// <summary>The growth rates of the seed's Table 1 (hardware 1.3x, compute 4.2x, software 2.5x a year).</summary>
    public static IReadOnlyList<GrowthScenario> SeedScenarios { get; } =
    [
        new("Current compute increase", 4.2),
        new("Hardware efficiency", 1.3),
        new("Current compute increase + Software efficiency", 10.5),
        new("Hardware efficiency + Software efficiency", 3.3),
    ];

    /// <summary>A yearly growth given in percent as a multiplier: 130 %/yr is 2.3x a year.</summary>
    public static double GrowthFromPercent(double percentPerYear)
    {
        Validate.Finite(nameof(percentPerYear), percentPerYear);
        if (percentPerYear <= -100)
        {
            throw new EconomicsParameterException(nameof(percentPerYear), percentPerYear,
                "a yearly growth must be above -100 % (compute cannot shrink to nothing)");
        }
        return 1 + (percentPerYear / 100);
    }

    /// <summary>Growth of effective compute: real compute growth r times algorithmic progress g (2.3 · 2.5 = 5.75).</summary>
    public static double EffectiveGrowth(double computeGrowth, double algorithmicProgress)
    {
        Validate.GrowthRate("r", computeGrowth);
        Validate.GrowthRate("g", algorithmicProgress);
        return computeGrowth * algorithmicProgress;
    }

    /// <summary>
    /// Growth only: all compute spent over years 0..T relative to year T's compute, Σ r^t / r^T. This is the
    /// most kickstarting can return (it is kickstarting with α = 1 at iteration T + 1).
    /// </summary>
    public static double GrowthOnlyAdvantage(double r, int years = DefaultYears)
    {
        Validate.GrowthRate(nameof(r), r);
        Validate.Years(years);
        // Σ_{k=0..T} r^-k, summed from k = T down (the small terms first when r > 1).
        double sum = 0;
        for (int k = years; k >= 0; k--)
        {
            sum += Math.Pow(r, -k);
        }
        return sum;
    }

    /// <summary>Limit of <see cref="GrowthOnlyAdvantage"/> as T grows: r/(r−1), +∞ when r ≤ 1.</summary>
    public static double GrowthOnlyLimit(double r)
    {
        Validate.GrowthRate(nameof(r), r);
        return r > 1 ? r / (r - 1) : double.PositiveInfinity;
    }

    /// <summary>The seed's Table 1 (or any scenarios) over years 0..T.</summary>
    public static IReadOnlyList<GrowthAdvantage> GrowthTable(IReadOnlyList<GrowthScenario>? scenarios = null, int years = DefaultYears)
    {
        Validate.Years(years);
        return [.. (scenarios ?? SeedScenarios).Select(s =>
            new GrowthAdvantage(s.Name, s.GrowthRate, years, GrowthOnlyAdvantage(s.GrowthRate, years), GrowthOnlyLimit(s.GrowthRate)))];
    }

    /// <summary>
    /// Kickstarting: C_1 = initialCompute, C_n = r·C_(n−1); A_1 = C_1, A_n = C_n + α·A_(n−1); benefit A_n/C_n
    /// for n = 1..iterations. To count algorithmic progress g, pass r = <see cref="EffectiveGrowth"/>(r, g)
    /// (the same series as lowering α to α/g: the benefit depends on α/r only).
    /// </summary>
    public static KickstartSeries Kickstart(double r, double alpha, int iterations, double initialCompute = 1)
    {
        Validate.GrowthRate(nameof(r), r);
        Validate.Fraction(nameof(alpha), alpha);
        Validate.Iterations(iterations);
        Validate.Positive(nameof(initialCompute), initialCompute);
        var steps = new KickstartStep[iterations];
        double compute = initialCompute;
        double benefit = 1;
        for (int n = 1; n <= iterations; n++)
        {
            if (n > 1)
            {
                compute *= r;
                // A_n/C_n = (C_n + α·A_(n−1))/C_n = 1 + (α/r)·A_(n−1)/C_(n−1): exact, and free of the overflow of r^n.
                benefit = 1 + (alpha / r * benefit);
            }
            steps[n - 1] = new KickstartStep(n, compute, benefit * compute, benefit);
        }
        return new KickstartSeries(r, alpha, steps, KickstartLimit(r, alpha));
    }

    /// <summary>Limit of the kickstarting benefit: r/(r−α) when α &lt; r, +∞ otherwise.</summary>
    public static double KickstartLimit(double r, double alpha)
    {
        Validate.GrowthRate(nameof(r), r);
        Validate.Fraction(nameof(alpha), alpha);
        return alpha < r ? r / (r - alpha) : double.PositiveInfinity;
    }

    /// <summary>Kickstarting benefit at each growth rate × α after the given number of iterations (the seed's Figure 1).</summary>
    public static KickstartGrid KickstartBenefitGrid(IReadOnlyList<double> growthRates, IReadOnlyList<double> alphas, int iterations)
    {
        ArgumentNullException.ThrowIfNull(growthRates);
        ArgumentNullException.ThrowIfNull(alphas);
        if (growthRates.Count == 0 || alphas.Count == 0)
        {
            throw new EconomicsParameterException("grid size", 0, "the grid needs at least one growth rate and one α");
        }
        Validate.Iterations(iterations);
        foreach (double r in growthRates)
        {
            Validate.GrowthRate("r", r);
        }
        foreach (double alpha in alphas)
        {
            Validate.Fraction("alpha", alpha);
        }
        var benefit = new double[growthRates.Count, alphas.Count];
        for (int i = 0; i < growthRates.Count; i++)
        {
            for (int j = 0; j < alphas.Count; j++)
            {
                benefit[i, j] = KickstartBenefitAt(growthRates[i], alphas[j], iterations);
            }
        }
        return new KickstartGrid([.. growthRates], [.. alphas], iterations, benefit);
    }

    /// <summary>
    /// The smallest α with which kickstarting reaches the given benefit: after that many iterations, or in
    /// the limit (α = r·(B−1)/B) when iterations is null. Alpha is null when α = 1 is not enough.
    /// </summary>
    public static KickstartRequirement KickstartAlphaForBenefit(double r, double benefit, int? iterations = null)
    {
        Validate.GrowthRate(nameof(r), r);
        Validate.Finite(nameof(benefit), benefit);
        if (benefit < 1)
        {
            throw new EconomicsParameterException(nameof(benefit), benefit,
                "a benefit A/C below 1 means losing to training from scratch; ask for 1 or more");
        }
        if (iterations is int n)
        {
            Validate.Iterations(n);
        }
        double atFullReuse = iterations is int m ? KickstartBenefitAt(r, 1, m) : KickstartLimit(r, 1);
        return new KickstartRequirement(r, benefit, iterations, SolveAlpha(r, benefit, iterations), atFullReuse);
    }

    /// <summary>
    /// Augmentation: C_n = r·C_(n−1); P_1 = 1, P_n = g·P_(n−1); A_1 = C_1, A_n = β·P_n·C_n + A_(n−1);
    /// benefit A_n/(P_n·C_n) against training from scratch on effective compute, for n = 1..iterations.
    /// </summary>
    public static AugmentationSeries Augment(double r, double g, double beta, int iterations, double initialCompute = 1)
    {
        Validate.GrowthRate(nameof(r), r);
        Validate.GrowthRate(nameof(g), g);
        Validate.Fraction(nameof(beta), beta);
        Validate.Iterations(iterations);
        Validate.Positive(nameof(initialCompute), initialCompute);
        var steps = new AugmentationStep[iterations];
        double compute = initialCompute;
        double progress = 1;
        double benefit = 1;
        for (int n = 1; n <= iterations; n++)
        {
            if (n > 1)
            {
                compute *= r;
                progress *= g;
                // A_n/(P_n·C_n) = β + A_(n−1)/(P_(n−1)·C_(n−1)) / (g·r).
                benefit = beta + (benefit / (g * r));
            }
            double effective = progress * compute;
            steps[n - 1] = new AugmentationStep(n, compute, progress, effective, benefit * effective, benefit);
        }
        return new AugmentationSeries(r, g, beta, steps, AugmentationLimit(r, g, beta));
    }

    /// <summary>Limit of the augmentation benefit: β·q/(q−1) with q = g·r when q &gt; 1; +∞ otherwise (1 when β = 0 and q = 1).</summary>
    public static double AugmentationLimit(double r, double g, double beta)
    {
        Validate.GrowthRate(nameof(r), r);
        Validate.GrowthRate(nameof(g), g);
        Validate.Fraction(nameof(beta), beta);
        double q = g * r;
        if (q > 1)
        {
            return beta * q / (q - 1);
        }
        return q == 1 && beta == 0 ? 1 : double.PositiveInfinity;
    }

    /// <summary>
    /// When augmentation stops beating training from scratch: the last iteration in 2..horizon whose benefit
    /// exceeds 1 (found on the series), and the β above which it beats scratch at every iteration.
    /// </summary>
    public static AugmentationBreakEven AugmentationBreakEven(double r, double g, double beta, int horizon)
    {
        var series = Augment(r, g, beta, horizon);
        int? last = null;
        foreach (var step in series.Steps)
        {
            if (step.Iteration >= 2 && step.Benefit > 1)
            {
                last = step.Iteration;
            }
        }
        return new AugmentationBreakEven(r, g, beta, horizon, AugmentationMinimumBeta(r, g), last, series.Limit > 1);
    }

    /// <summary>
    /// The β above which augmentation beats training from scratch: 1 − 1/(g·r), or 0 when g·r ≤ 1. Below it the
    /// benefit is under 1 at every iteration n ≥ 2, above it over 1 at every one.
    /// </summary>
    public static double AugmentationMinimumBeta(double r, double g)
    {
        Validate.GrowthRate(nameof(r), r);
        Validate.GrowthRate(nameof(g), g);
        // b_2 = β + 1/q > 1 ⇔ β > 1 − 1/q, and b_n − b* = (b_(n−1) − b*)/q keeps b_n on the side of 1 that b_2 is on.
        return Math.Max(0, 1 - (1 / (g * r)));
    }

    internal static double KickstartBenefitAt(double r, double alpha, int iterations)
    {
        double ratio = alpha / r;
        double benefit = 1;
        for (int n = 2; n <= iterations; n++)
        {
            double next = 1 + (ratio * benefit);
            if (next == benefit)
            {
                break; // the fixed point r/(r−α) in floating point: later iterations change nothing
            }
            benefit = next;
        }
        return benefit;
    }

    private static double? SolveAlpha(double r, double benefit, int? iterations)
    {
        if (benefit == 1)
        {
            return 0;
        }
        if (iterations is not int n)
        {
            double alpha = r * (benefit - 1) / benefit;
            return alpha <= 1 ? alpha : null;
        }
        if (KickstartBenefitAt(r, 1, n) < benefit)
        {
            return null;
        }
        // The benefit after n iterations, Σ_(k<n) (α/r)^k, increases with α: bisect to the smallest α that reaches it.
        double lo = 0, hi = 1;
        while (hi - lo > 1e-15)
        {
            double mid = (lo + hi) / 2;
            if (mid <= lo || mid >= hi)
            {
                break;
            }
            if (KickstartBenefitAt(r, mid, n) >= benefit)
            {
                hi = mid;
            }
            else
            {
                lo = mid;
            }
        }
        return hi;
    }
}
