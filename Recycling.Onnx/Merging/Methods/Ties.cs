namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// TIES (Yadav et al. 2023): each τᵢ trimmed to its ⌊density·M⌋ largest magnitudes per tensor (mergekit), or over the
/// whole model with trim global (the paper); the sign of Σ wᵢτᵢ elected per entry; θ = θ0 + λ Σ wᵢτᵢ·maskᵢ / Σ wᵢ·maskᵢ.
/// </summary>
internal sealed class Ties : TaskArithmeticFamily
{
    public override string Name => "ties";

    public override string Formula => "θ = θ0 + λ Σ wᵢτ̃ᵢ·maskᵢ / Σ wᵢ·maskᵢ; τ̃ᵢ: top density of |τᵢ|, mask: sign of Σ wᵢτ̃ᵢ";

    public override Sparsification Sparsification => Sparsification.Magnitude;

    public override Combine.Consensus Consensus => Combine.Consensus.Sum;

    public override bool DefaultNormalize => true;
}
