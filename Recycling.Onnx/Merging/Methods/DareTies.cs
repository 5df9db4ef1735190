namespace Recycling.Onnx.Merging.Methods;

/// <summary>DARE's random drop, then TIES's sign election (no magnitude trim, as mergekit and PEFT).</summary>
internal sealed class DareTies : TaskArithmeticFamily
{
    public override string Name => "dare_ties";

    public override string Formula => "θ = θ0 + λ Σ wᵢτ̂ᵢ·maskᵢ (÷ Σ wᵢ·maskᵢ with normalize); τ̂ᵢ as dare_linear, mask: sign of Σ wᵢτ̂ᵢ";

    public override Sparsification Sparsification => Sparsification.Random;

    public override Combine.Consensus Consensus => Combine.Consensus.Sum;

    public override bool DefaultNormalize => false;

    public override double DefaultRescale => RescaleModes.L1;
}
