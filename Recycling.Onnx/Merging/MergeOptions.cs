using System.Globalization;

namespace Recycling.Onnx.Merging;

/// <summary>How fine-tuned weights are combined (exact rules: docs/recycling-methods.md of the project).</summary>
public enum MergeMethod
{
    /// <summary>θ = Σ wᵢθᵢ / Σ wᵢ (uniform when no weights are given).</summary>
    Average,

    /// <summary>θ = θ0 + λ Σ τᵢ.</summary>
    TaskArithmetic,

    /// <summary>TIES: trim each τᵢ to its top-k magnitudes, elect signs, disjoint mean; θ = θ0 + λ τm.</summary>
    Ties,

    /// <summary>DARE: drop τᵢ entries with probability p, rescale by 1/(1−p), then <see cref="DareCombination"/>.</summary>
    Dare,

    /// <summary>Spherical interpolation of two models per tensor at t.</summary>
    Slerp,

    /// <summary>Model stock: per tensor t from the mean pairwise cosine of the τᵢ; θ = t·mean θᵢ + (1−t)θ0.</summary>
    ModelStock,

    /// <summary>Fisher merging: θ = Σ cᵢFᵢθᵢ / Σ cᵢFᵢ with diagonal Fisher tensors.</summary>
    Fisher,
}

/// <summary>What DARE's rescaled task vectors feed into.</summary>
public enum DareCombination
{
    /// <summary>θ0 + Σ wᵢτ̂ᵢ / Σ wᵢ.</summary>
    Average,

    /// <summary>θ0 + λ Σ τ̂ᵢ.</summary>
    TaskArithmetic,

    /// <summary>TIES (trim, elect, disjoint mean) over τ̂ᵢ.</summary>
    Ties,
}

/// <summary>Over what TIES keeps the top-k% magnitudes of each task vector.</summary>
public enum TiesTrimScope
{
    /// <summary>The whole flattened model, as in the paper (a 1/64 sample, then one counting pass over the inputs; three when the sample misleads).</summary>
    Global,

    /// <summary>Each tensor on its own, as mergekit does.</summary>
    PerTensor,
}

/// <summary>Where merge kernels run.</summary>
public enum MergeDevice
{
    Cpu,

    /// <summary>An NVIDIA GPU through ILGPU; an error when none is usable.</summary>
    Cuda,

    /// <summary>CUDA when a usable GPU is present, otherwise the CPU.</summary>
    Auto,
}

/// <summary>
/// A merge method and its parameters. Defaults follow the papers: TIES density 0.2 and λ 1; DARE drop rate 0.9
/// feeding task arithmetic; SLERP t 0.5; Fisher floor 1e-6.
/// </summary>
public sealed record MergeOptions
{
    public MergeMethod Method { get; init; } = MergeMethod.Average;

    /// <summary>Per-model weights for <see cref="MergeMethod.Average"/>, DARE-average and Fisher (normalised by their sum); null = uniform.</summary>
    public IReadOnlyList<double>? Weights { get; init; }

    /// <summary>λ of task arithmetic and TIES (and DARE over them).</summary>
    public double Lambda { get; init; } = 1.0;

    /// <summary>TIES: fraction k of each task vector's entries kept by magnitude, in (0, 1].</summary>
    public double Density { get; init; } = 0.2;

    public TiesTrimScope TrimScope { get; init; } = TiesTrimScope.Global;

    /// <summary>DARE drop probability p, in [0, 1).</summary>
    public double DropRate { get; init; } = 0.9;

    public DareCombination DareCombination { get; init; } = DareCombination.TaskArithmetic;

    /// <summary>SLERP interpolation factor (0 = first model, 1 = second).</summary>
    public double T { get; init; } = 0.5;

    /// <summary>DARE's mask seed.</summary>
    public ulong Seed { get; init; }

    /// <summary>Fisher entries are floored at this value before weighting.</summary>
    public double FisherFloor { get; init; } = 1e-6;

    public MergeDevice Device { get; init; } = MergeDevice.Cpu;

    /// <summary>
    /// Store merged values beyond the range of a narrower output type (|x| above 65504 for fp16, about 3.39e38 for bf16) as
    /// ±infinity, IEEE's rounding, with a note of how many; otherwise such a merge is an error and writes nothing.
    /// </summary>
    public bool AllowOverflow { get; init; }

    /// <summary>True when the method works on task vectors and so needs the base model θ0.</summary>
    public bool RequiresBase => Method is MergeMethod.TaskArithmetic or MergeMethod.Ties or MergeMethod.Dare
        or MergeMethod.ModelStock;

    public bool RequiresFisher => Method == MergeMethod.Fisher;

    /// <summary>True when the merge step runs TIES (plain, or over DARE's τ̂).</summary>
    public bool UsesTies => Method == MergeMethod.Ties
        || (Method == MergeMethod.Dare && DareCombination == DareCombination.Ties);

    /// <summary>Checks the parameters against <paramref name="inputCount"/> models; a <see cref="RecyclingException"/> says what is wrong.</summary>
    public void Validate(int inputCount)
    {
        if (inputCount < 1)
        {
            throw new RecyclingException("a merge needs at least one model.");
        }

        if (Weights is not null)
        {
            bool weighted = Method is MergeMethod.Average or MergeMethod.Fisher
                || (Method == MergeMethod.Dare && DareCombination == DareCombination.Average);
            if (!weighted)
            {
                throw new RecyclingException(
                    $"weights apply to average, DARE-average and Fisher merges, not {Describe()}; use lambda.");
            }

            if (Weights.Count != inputCount)
            {
                throw new RecyclingException($"{Weights.Count} weights given for {inputCount} models.");
            }

            foreach (double w in Weights.Where(w => !double.IsFinite(w) || w < 0))
            {
                throw new RecyclingException(string.Create(CultureInfo.InvariantCulture, $"weights must be finite and non-negative, not {w}."));
            }

            if (Weights.All(w => w == 0))
            {
                throw new RecyclingException("weights are all zero; at least one must be positive.");
            }
        }

        if (!double.IsFinite(Lambda))
        {
            throw new RecyclingException($"lambda must be finite, not {Lambda}.");
        }

        if (UsesTies && !(Density > 0 && Density <= 1))
        {
            throw new RecyclingException($"TIES density must be in (0, 1], not {Density}.");
        }

        if (Method == MergeMethod.Dare && !(DropRate >= 0 && DropRate < 1))
        {
            throw new RecyclingException($"DARE drop rate must be in [0, 1), not {DropRate}.");
        }

        if (Method == MergeMethod.Slerp)
        {
            if (inputCount != 2)
            {
                throw new RecyclingException($"SLERP merges exactly 2 models, not {inputCount}.");
            }

            if (!double.IsFinite(T))
            {
                throw new RecyclingException($"SLERP t must be finite, not {T}.");
            }
        }

        if (Method == MergeMethod.ModelStock && inputCount < 2)
        {
            throw new RecyclingException("model stock needs at least 2 fine-tuned models.");
        }

        if (Method == MergeMethod.Fisher && !(FisherFloor > 0 && double.IsFinite(FisherFloor)))
        {
            throw new RecyclingException($"Fisher floor must be positive, not {FisherFloor}.");
        }
    }

    /// <summary>
    /// The weights scaled to sum to 1 (uniform when none are given), computed without overflow or underflow: each is
    /// first divided by the largest, so <c>1e308 1e308</c> gives 0.5 each and <c>1e-320 3e-320</c> 0.25 and 0.75.
    /// </summary>
    internal double[] NormalisedWeights(int inputCount)
    {
        if (Weights is null)
        {
            return Enumerable.Repeat(1.0 / inputCount, inputCount).ToArray();
        }

        double max = Weights.Max();
        double[] scaled = [.. Weights.Select(w => w / max)];
        double total = scaled.Sum(); // each term is in [0, 1], so the sum is at most the count
        return [.. scaled.Select(w => w / total)];
    }

    /// <summary>Method and parameters as one line, e.g. for lineage metadata.</summary>
    public string Describe()
    {
        var c = CultureInfo.InvariantCulture;
        return Method switch
        {
            MergeMethod.Average => Weights is null ? "average (uniform)"
                : string.Create(c, $"average (weights {string.Join(",", Weights)})"),
            MergeMethod.TaskArithmetic => string.Create(c, $"task-arithmetic (lambda {Lambda})"),
            MergeMethod.Ties => string.Create(c, $"ties (density {Density}, lambda {Lambda}, trim {TrimScope})"),
            MergeMethod.Dare => DareCombination == DareCombination.Ties
                ? string.Create(c, $"dare-ties (drop {DropRate}, seed {Seed}, density {Density}, lambda {Lambda}, trim {TrimScope})")
                : string.Create(c, $"dare-{DareCombination} (drop {DropRate}, seed {Seed}, lambda {Lambda})"),
            MergeMethod.Slerp => string.Create(c, $"slerp (t {T})"),
            MergeMethod.ModelStock => "model-stock",
            _ => string.Create(c, $"fisher (floor {FisherFloor})"),
        };
    }
}
