namespace Recycling.Onnx.Merging.Methods;

/// <summary>What a method does with the base model.</summary>
internal enum BaseUse
{
    /// <summary>Not read (an average of the inputs).</summary>
    None,

    /// <summary>Needed: task vectors τᵢ = θᵢ − θ0, or an interpolation from θ0.</summary>
    Required,

    /// <summary>Used when given (e.g. SLERP from the base to one model), otherwise the inputs alone.</summary>
    Optional,
}

/// <summary>
/// One merge method of the registry (<see cref="MergeMethods"/>): its name (mergekit's), aliases, parameters, what it
/// reads, and its per-tensor merge. One sealed subclass per method, one file each, under Merging/Methods/; the
/// registry finds them by reflection (see README.md there). CLI, YAML, help, docs and lineage read these declarations.
/// </summary>
internal abstract class MergeMethodDefinition
{
    /// <summary>The name mergekit gives the method (<c>task_arithmetic</c>, <c>dare_ties</c>), or ours where mergekit has none (<c>fisher</c>).</summary>
    public abstract string Name { get; }

    /// <summary>Other accepted names (ours, PEFT's). Lookup ignores case and treats '-' as '_'.</summary>
    public virtual IReadOnlyList<string> Aliases => [];

    /// <summary>One line for --help: the formula (θᵢ model i, θ0 the base, τᵢ = θᵢ − θ0, N models).</summary>
    public abstract string Formula { get; }

    /// <summary>Where the method comes from: "mergekit", "PEFT", "ours".</summary>
    public virtual string Origin => "mergekit";

    public virtual IReadOnlyList<MethodParameter> Parameters => [];

    public virtual BaseUse Base => BaseUse.None;

    public virtual bool NeedsFisher => false;

    public virtual int MinModels => 1;

    public virtual int MaxModels => int.MaxValue;

    /// <summary>Checks what the parameters alone cannot (relations between them, model counts); the default checks counts.</summary>
    public virtual void Validate(MethodArguments arguments, bool hasBase)
    {
        int n = arguments.InputCount;
        if (n < MinModels || n > MaxModels)
        {
            throw new RecyclingException(MinModels == MaxModels
                ? $"{Name} merges exactly {MinModels} models, not {n}."
                : $"{Name} needs at least {MinModels} models, not {n}.");
        }
    }

    /// <summary>The per-tensor merge for one run (its prepass state lives in it).</summary>
    internal abstract ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels);

    public override string ToString() => Name;
}
