namespace Recycling.Onnx.Merging.Methods;

/// <summary>Task arithmetic (Ilharco et al. 2023): θ = θ0 + λ Σ wᵢτᵢ.</summary>
internal sealed class TaskArithmetic : TaskArithmeticFamily
{
    public override string Name => "task_arithmetic";

    public override IReadOnlyList<string> Aliases => ["ta"];

    public override string Formula => "θ = θ0 + λ Σ wᵢτᵢ (÷ Σ wᵢ with normalize)";

    public override Sparsification Sparsification => Sparsification.None;

    public override Combine.Consensus Consensus => Combine.Consensus.None;

    public override bool DefaultNormalize => false;
}
