namespace Recycling.Onnx.Merging.Methods;

/// <summary>DELLA's MAGPRUNE without sign election: a weighted sum of the pruned task vectors (mergekit's <c>della_linear</c>).</summary>
internal sealed class DellaLinear : TaskArithmeticFamily
{
    public override string Name => "della_linear";

    public override string Formula => "θ0 + λ Σ wᵢ·MAGPRUNE(τᵢ)";

    public override Sparsification Sparsification => Sparsification.Magprune;

    public override Combine.Consensus Consensus => Combine.Consensus.None;

    public override bool DefaultNormalize => false;

    public override double DefaultRescale => RescaleModes.L1;

    protected override IEnumerable<MethodParameter> ExtraParameters => [Della.Epsilon];

    public override void Validate(MethodArguments arguments, bool hasBase)
    {
        base.Validate(arguments, hasBase);
        Della.Check(arguments);
    }
}
