namespace Recycling.MLNet.Economics;

/// <summary>A named rate of yearly growth (a multiplier: 4.2 means 4.2x per year).</summary>
public sealed record GrowthScenario(string Name, double GrowthRate);

/// <summary>One row of the growth-only table: Σ r^t / r^T over years 0..T, and its limit r/(r−1) as T grows.</summary>
public sealed record GrowthAdvantage(string Name, double GrowthRate, int Years, double Advantage, double Limit);

/// <summary>Iteration n of kickstarting: real compute C_n, adjusted compute A_n and the benefit A_n/C_n.</summary>
public sealed record KickstartStep(int Iteration, double Compute, double AdjustedCompute, double Benefit);

/// <summary>Kickstarting iterated at compute growth r with reuse efficiency α; Limit = r/(r−α), +∞ when r ≤ α.</summary>
public sealed record KickstartSeries(double GrowthRate, double Alpha, IReadOnlyList<KickstartStep> Steps, double Limit);

/// <summary>
/// Iteration n of augmentation: real compute C_n, algorithmic efficiency P_n, effective compute P_n·C_n
/// (what training from scratch gets), adjusted compute A_n and the benefit A_n/(P_n·C_n).
/// </summary>
public sealed record AugmentationStep(
    int Iteration, double Compute, double Progress, double EffectiveCompute, double AdjustedCompute, double Benefit);

/// <summary>Augmentation iterated at compute growth r, algorithmic growth g and reuse fraction β; Limit = βgr/(gr−1).</summary>
public sealed record AugmentationSeries(
    double GrowthRate, double ProgressGrowth, double Beta, IReadOnlyList<AugmentationStep> Steps, double Limit);

/// <summary>
/// When augmenting old weights beats training from scratch on effective compute. MinimumBeta = 1 − 1/(g·r):
/// recycling wins at every iteration n ≥ 2 when β exceeds it and at none when β is below it.
/// LastBeneficialIteration is the last n in 2..Horizon whose benefit exceeds 1, null when there is none.
/// </summary>
public sealed record AugmentationBreakEven(
    double GrowthRate, double ProgressGrowth, double Beta, int Horizon,
    double MinimumBeta, int? LastBeneficialIteration, bool BeatsScratchInLimit);

/// <summary>
/// The reuse efficiency α kickstarting needs to reach a benefit at compute growth r: after Iterations
/// iterations, or in the limit when Iterations is null. Alpha is null when even α = 1 falls short;
/// BenefitAtFullReuse is what α = 1 reaches (+∞ in the limit when r ≤ 1).
/// </summary>
public sealed record KickstartRequirement(double GrowthRate, double Benefit, int? Iterations, double? Alpha, double BenefitAtFullReuse);

/// <summary>Kickstarting benefit A_n/C_n after Iterations iterations for each growth rate (rows) and α (columns).</summary>
public sealed record KickstartGrid(
    IReadOnlyList<double> GrowthRates, IReadOnlyList<double> Alphas, int Iterations, double[,] Benefit);
