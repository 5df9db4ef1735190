namespace Recycling.Onnx.Merging.Methods;

/// <summary>How a task-arithmetic-family method thins each task vector before combining.</summary>
internal enum Sparsification
{
    None,

    /// <summary>Keep the ⌊density·M⌋ largest magnitudes (<see cref="Sparsify.Magnitude"/>).</summary>
    Magnitude,

    /// <summary>Keep each entry with probability density (<see cref="Sparsify.Random"/>).</summary>
    Random,

    /// <summary>Drop the γ largest and the smallest magnitudes, keeping ⌊d·n⌋ (breadcrumbs, <see cref="MergekitMasks.Outliers"/>).</summary>
    Outliers,

    /// <summary>DELLA's MAGPRUNE: keep with a probability set by the magnitude rank in each fiber (<see cref="MergekitMasks.Della"/>).</summary>
    Magprune,

    /// <summary>The method's own <see cref="TaskArithmeticFamily.SparsifyTensor"/>, over whole tensors.</summary>
    Custom,
}

/// <summary>
/// mergekit's generalized task arithmetic, the family of task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs,
/// della: τᵢ = θᵢ − θ0 sparsified per model (density, rescale), weighted (weight), optionally sign-elected
/// (consensus), summed, divided by the weights that contributed (normalize), scaled (lambda): θ = θ0 + λ·m.
/// A member declares its sparsification, consensus and defaults; the dedicated kernels run it when they can
/// (see <see cref="TaskArithmeticMerge"/>), the generic path otherwise.
/// </summary>
internal abstract class TaskArithmeticFamily : MergeMethodDefinition
{
    public abstract Sparsification Sparsification { get; }

    public abstract Combine.Consensus Consensus { get; }

    /// <summary>mergekit's default of <c>normalize</c> for this method.</summary>
    public abstract bool DefaultNormalize { get; }

    /// <summary>mergekit's default of <c>rescale</c>: L1 for the random sparsifiers, none otherwise.</summary>
    public virtual double DefaultRescale => RescaleModes.None;

    /// <summary>Whether the sparsifier draws random masks, and so takes a seed (breadcrumbs' cuts and TIES' trim do not).</summary>
    public bool IsRandom => Sparsification is Sparsification.Random or Sparsification.Magprune or Sparsification.Custom;

    /// <summary>Parameters of the method's own sparsifier (gamma, epsilon ...).</summary>
    protected virtual IEnumerable<MethodParameter> ExtraParameters => [];

    public override BaseUse Base => BaseUse.Required;

    public override IReadOnlyList<MethodParameter> Parameters =>
    [
        CommonParameters.Weight,
        CommonParameters.Density,
        .. ExtraParameters,
        CommonParameters.Lambda,
        CommonParameters.Normalize with { Default = DefaultNormalize ? 1 : 0 },
        CommonParameters.Rescale with { Default = DefaultRescale },
        .. IsRandom ? [CommonParameters.Seed] : Array.Empty<MethodParameter>(),
        .. Sparsification == Sparsification.Magnitude ? [CommonParameters.Trim] : Array.Empty<MethodParameter>(),
        CommonParameters.Int8Mask,
    ];

    /// <summary>
    /// For <see cref="Sparsification.Custom"/>: thins model <paramref name="model"/>'s task vector
    /// <paramref name="tau"/> (the whole tensor, fp32) in place, then rescales it as <c>rescale</c> says
    /// (<see cref="Sparsify.Rescale"/>). <paramref name="random"/> is the tensor's counter-based mask source.
    /// </summary>
    public virtual void SparsifyTensor(Span<float> tau, TensorInfo tensor, int model, MethodArguments arguments, DareMask random) =>
        throw new NotSupportedException($"{Name} declares no sparsifier of its own");

    public override void Validate(MethodArguments arguments, bool hasBase)
    {
        base.Validate(arguments, hasBase);
        if (Sparsification == Sparsification.Magnitude && arguments["trim"] == TrimModes.Global && arguments.PerModel("density").Any(d => d <= 0))
        {
            throw new RecyclingException($"{Name}: the global trim needs density in (0, 1]; density 0 keeps nothing (use the per-tensor trim for that).");
        }
    }

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) => new TaskArithmeticMerge(this, arguments, kernels);
}
