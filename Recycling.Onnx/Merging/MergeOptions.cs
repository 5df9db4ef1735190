using System.Globalization;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Onnx.Merging;

/// <summary>
/// The methods of the first releases, kept for the C# API with their paper defaults; each maps onto a registry method
/// (docs/merge-methods.md). New code names methods with <see cref="MergeOptions.MethodName"/>.
/// </summary>
public enum MergeMethod
{
    /// <summary>θ = Σ wᵢθᵢ / Σ wᵢ (uniform when no weights are given).</summary>
    Average,

    /// <summary>θ = θ0 + λ Σ τᵢ.</summary>
    TaskArithmetic,

    /// <summary>TIES (registry <c>ties</c>) with the paper's defaults: density 0.2, trim over the whole model.</summary>
    Ties,

    /// <summary>DARE: drop τᵢ entries with probability p (default 0.9), rescale by 1/(1−p), then <see cref="DareCombination"/> (registry <c>dare_linear</c>, <c>dare_ties</c>).</summary>
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

    /// <summary>Sign election and disjoint mean over the τ̂ᵢ (no magnitude trim, as mergekit and PEFT).</summary>
    Ties,
}

/// <summary>Over what TIES keeps the top-k% magnitudes of each task vector.</summary>
public enum TiesTrimScope
{
    /// <summary>The whole flattened model, as in the paper (a 1/64 sample, then one counting pass over the inputs; three when the sample misleads).</summary>
    Global,

    /// <summary>Each tensor on its own, keeping exactly ⌊density·M⌋ entries, as mergekit and PEFT do.</summary>
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
/// A merge method and its parameters. Every method, its formula, parameters and defaults, and how it differs from
/// mergekit's and PEFT's: docs/merge-methods.md. With <see cref="MethodName"/> (a registry name such as
/// <c>ties</c>, <c>dare_ties</c>, <c>model_stock</c>) the method's defaults are mergekit's; the typed properties below
/// and <see cref="Parameters"/>/<see cref="ModelParameters"/> set its parameters. Without it, <see cref="Method"/>
/// names one of the first methods with the papers' defaults: TIES density 0.2 trimmed over the whole model, DARE drop
/// rate 0.9 rescaled by 1/(1−p).
/// </summary>
public sealed record MergeOptions
{
    public MergeMethod Method { get; init; } = MergeMethod.Average;

    /// <summary>A registry method by name or alias (<c>recycle merge --help</c> lists them); wins over <see cref="Method"/>.</summary>
    public string? MethodName { get; init; }

    /// <summary>Parameters by mergekit name (<c>density</c>, <c>normalize</c>, <c>rescale</c>, <c>gamma</c> ...); booleans are 1/0, choices their number. They win over the typed properties.</summary>
    public IReadOnlyDictionary<string, double>? Parameters { get; init; }

    /// <summary>One dictionary per input of per-model parameters (<c>weight</c>, <c>density</c> ...); they win over global values.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, double>?>? ModelParameters { get; init; }

    /// <summary>Per-model weights (mergekit's <c>weight</c>), normalised by their sum where the method normalises; null = 1 each.</summary>
    public IReadOnlyList<double>? Weights { get; init; }

    /// <summary>λ of the task-arithmetic family (scales the combined task vector).</summary>
    public double Lambda { get; init; } = 1.0;

    /// <summary>Fraction of each task vector kept by TIES's trim or DARE's drop, in [0, 1]; null = the method's default.</summary>
    public double? Density { get; init; }

    /// <summary>TIES trim scope; null = the method's default (per tensor, or global for <see cref="MergeMethod.Ties"/>).</summary>
    public TiesTrimScope? TrimScope { get; init; }

    /// <summary>DARE drop probability p in [0, 1): density 1 − p. Null = the method's default.</summary>
    public double? DropRate { get; init; }

    public DareCombination DareCombination { get; init; } = DareCombination.TaskArithmetic;

    /// <summary>SLERP interpolation factor (0 = the base model, or the first model without one; 1 = the other).</summary>
    public double T { get; init; } = 0.5;

    /// <summary>Seed of the random masks (DARE ...).</summary>
    public ulong Seed { get; init; }

    /// <summary>Fisher entries are floored at this value before weighting.</summary>
    public double FisherFloor { get; init; } = 1e-6;

    public MergeDevice Device { get; init; } = MergeDevice.Cpu;

    /// <summary>
    /// Store merged values beyond the range of a narrower output type (|x| above 65504 for fp16, about 3.39e38 for bf16) as
    /// ±infinity, IEEE's rounding, with a note of how many; otherwise such a merge is an error and writes nothing.
    /// </summary>
    public bool AllowOverflow { get; init; }

    /// <summary>True when the method needs the base model θ0.</summary>
    public bool RequiresBase => Definition.Base == BaseUse.Required;

    public bool RequiresFisher => Definition.NeedsFisher;

    /// <summary>The registry method these options name.</summary>
    internal MergeMethodDefinition Definition => MethodName is { } name ? MergeMethods.Find(name) : Method switch
    {
        MergeMethod.Average => MergeMethods.Find("linear"),
        MergeMethod.TaskArithmetic => MergeMethods.Find("task_arithmetic"),
        MergeMethod.Ties => MergeMethods.Find("ties"),
        MergeMethod.Dare => MergeMethods.Find(DareCombination == DareCombination.Ties ? "dare_ties" : "dare_linear"),
        MergeMethod.Slerp => MergeMethods.Find("slerp"),
        MergeMethod.ModelStock => MergeMethods.Find("model_stock"),
        _ => MergeMethods.Find("fisher"),
    };

    /// <summary>
    /// The method's parameter values for <paramref name="inputCount"/> models: <see cref="ModelParameters"/>, then
    /// <see cref="Parameters"/>, then the typed properties the method reads, then (for <see cref="Method"/>) the papers'
    /// defaults, then the method's own.
    /// </summary>
    internal MethodArguments Arguments(int inputCount)
    {
        var method = Definition;
        var global = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
        bool Has(string name) => method.Parameters.Any(p => p.Name == name);
        void Set(string name, double value)
        {
            if (Has(name))
            {
                global[name] = value;
            }
        }

        if (MethodName is null)
        {
            // The first releases' methods keep their papers' defaults.
            switch (Method)
            {
                case MergeMethod.Ties:
                    Set("density", 0.2);
                    Set("trim", TrimModes.Global);
                    break;
                case MergeMethod.Dare:
                    Set("density", 0.1);
                    Set("rescale", RescaleModes.Inverse);
                    Set("normalize", DareCombination == DareCombination.TaskArithmetic ? 0 : 1);
                    break;
            }
        }

        Set("lambda", MethodName is null && Method == MergeMethod.Dare && DareCombination == DareCombination.Average ? 1 : Lambda);
        Set("t", T);
        Set("seed", Seed);
        Set("fisher_floor", FisherFloor);
        if (DropRate is { } p)
        {
            if (!(p >= 0 && p < 1))
            {
                throw new RecyclingException($"DARE drop rate must be in [0, 1), not {p}.");
            }

            Set("density", 1 - p);
        }

        if (Density is { } d && !(MethodName is null && Method == MergeMethod.Dare))
        {
            Set("density", d);
        }

        if (TrimScope is { } scope)
        {
            Set("trim", scope == TiesTrimScope.Global ? TrimModes.Global : TrimModes.PerTensor);
        }

        foreach (var (name, value) in Parameters ?? new Dictionary<string, double>())
        {
            global[name] = value;
        }

        var perModel = ModelParameters?.Select(m => m).ToList();
        if (Weights is not null)
        {
            if (Weights.Count != inputCount)
            {
                throw new RecyclingException($"{Weights.Count} weights given for {inputCount} models.");
            }

            foreach (double w in Weights.Where(w => !double.IsFinite(w)))
            {
                throw new RecyclingException(string.Create(CultureInfo.InvariantCulture, $"weights must be finite, not {w}."));
            }

            if (!Has("weight"))
            {
                throw new RecyclingException($"{method.Name} takes no per-model weights.");
            }

            perModel ??= [.. Enumerable.Repeat<IReadOnlyDictionary<string, double>?>(null, inputCount)];
            if (perModel.Count != inputCount)
            {
                throw new RecyclingException($"per-model parameters given for {perModel.Count} models, but {inputCount} are merged.");
            }

            for (int i = 0; i < inputCount; i++)
            {
                var merged = new Dictionary<string, double>(perModel[i] ?? new Dictionary<string, double>(), StringComparer.OrdinalIgnoreCase);
                merged.TryAdd("weight", Weights[i]);
                perModel[i] = merged;
            }
        }

        return new MethodArguments(method, inputCount, global, perModel);
    }

    /// <summary>Checks the parameters against <paramref name="inputCount"/> models; a <see cref="RecyclingException"/> says what is wrong.</summary>
    public void Validate(int inputCount, bool hasBase = true)
    {
        if (inputCount < 1)
        {
            throw new RecyclingException("a merge needs at least one model.");
        }

        if (!double.IsFinite(Lambda))
        {
            throw new RecyclingException($"lambda must be finite, not {Lambda}.");
        }

        var arguments = Arguments(inputCount);
        arguments.Method.Validate(arguments, hasBase && arguments.Method.Base != BaseUse.None);
    }

    /// <summary>Method and parameters as one line, e.g. for lineage metadata.</summary>
    public string Describe() => Arguments(Weights?.Count ?? ModelParameters?.Count ?? 1).Describe();
}
