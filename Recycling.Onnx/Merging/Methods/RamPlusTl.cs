namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// RAM+ with tensor-local statistics (mergekit's <c>ramplus_tl</c>): as <see cref="Ram"/>, but model i's unique
/// changes are scaled by 1 + r·clamp(ρᵢ, 0, α), ρᵢ = (its changed entries others change too) / max(its unique changes, ε),
/// counted within the tensor.
/// </summary>
internal sealed class RamPlusTl : MergeMethodDefinition
{
    private static readonly MethodParameter R = new("r", 0.1, "gain on the unique changes of models that share many") { Min = 0 };

    private static readonly MethodParameter Alpha = new("alpha", 0.2, "cap of the shared/unique ratio") { Min = 0 };

    public override string Name => "ramplus_tl";

    public override string Formula => "RAM with model i's unique changes scaled by 1 + r·clamp(shared/unique, 0, α)";

    public override BaseUse Base => BaseUse.Required;

    public override IReadOnlyList<MethodParameter> Parameters => [R, Alpha, Ram.Epsilon];

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels)
    {
        double r = arguments["r"], alpha = arguments["alpha"], epsilon = arguments["epsilon"];
        return new Ram.Merger(epsilon, (shared, only) =>
            [.. shared.Select((s, i) => 1 + r * Math.Clamp(s / Math.Max(only[i], epsilon), 0, alpha))]);
    }
}
