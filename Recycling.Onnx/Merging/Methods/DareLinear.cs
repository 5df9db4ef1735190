namespace Recycling.Onnx.Merging.Methods;

/// <summary>DARE (Yu et al. 2024) over task arithmetic: each τᵢ entry kept with probability density, then rescaled (mergekit: to τᵢ's L1 norm).</summary>
internal sealed class DareLinear : TaskArithmeticFamily
{
    public override string Name => "dare_linear";

    public override IReadOnlyList<string> Aliases => ["dare", "dare_ta", "dare_task_arithmetic"];

    public override string Formula => "θ = θ0 + λ Σ wᵢτ̂ᵢ; τ̂ᵢ: τᵢ entries kept with probability density, rescaled";

    public override Sparsification Sparsification => Sparsification.Random;

    public override Combine.Consensus Consensus => Combine.Consensus.None;

    public override bool DefaultNormalize => false;

    public override double DefaultRescale => RescaleModes.L1;
}
