namespace Recycling.Onnx.Merging.Methods;

/// <summary>Our `dare-average` (kept from before the registry): DARE's random drop, then the weighted mean of the τ̂ᵢ
/// (dare_linear with normalize on), so the base moves by an average task vector rather than by their sum.</summary>
internal sealed class DareAverage : TaskArithmeticFamily
{
    public override string Name => "dare_average";

    public override string Formula => "θ = θ0 + λ Σ wᵢτ̂ᵢ / Σ wᵢ; τ̂ᵢ: τᵢ entries kept with probability density, rescaled";

    public override Sparsification Sparsification => Sparsification.Random;

    public override Combine.Consensus Consensus => Combine.Consensus.None;

    public override bool DefaultNormalize => true;

    public override double DefaultRescale => RescaleModes.L1;
}
