namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// PEFT's <c>magnitude_prune</c> (merge_utils.py): each task vector keeps its ⌊d·n⌋ largest entries, unscaled, and the
/// weighted sum is added to the base: θ0 + Σ wᵢ·topk(τᵢ). PEFT takes one density; here each model may have its own.
/// </summary>
internal sealed class MagnitudePrune : TaskArithmeticFamily
{
    public override string Name => "magnitude_prune";

    public override string Origin => "PEFT";

    public override string Formula => "θ0 + λ Σ wᵢ·topk(τᵢ), the ⌊density·n⌋ largest |τᵢ| kept";

    public override Sparsification Sparsification => Sparsification.Magnitude;

    public override Combine.Consensus Consensus => Combine.Consensus.None;

    public override bool DefaultNormalize => false;
}
