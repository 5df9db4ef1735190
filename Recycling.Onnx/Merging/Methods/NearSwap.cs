namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// mergekit's <c>nearswap</c>: moves the base toward one model where they are already close. Per entry,
/// w = clamp(t / max(|θ0 − θ₁|, 1e-6), 0, 1) and θ = w·θ₁ + (1 − w)·θ0; <c>t</c> has no default (as in mergekit).
/// </summary>
internal sealed class NearSwap : MergeMethodDefinition
{
    public override string Name => "nearswap";

    public override string Formula => "w·θ₁ + (1−w)·θ0 per entry, w = clamp(t / |θ0 − θ₁|, 0, 1)";

    public override BaseUse Base => BaseUse.Required;

    public override int MinModels => 1;

    public override int MaxModels => 1;

    public override IReadOnlyList<MethodParameter> Parameters => [CommonParameters.T with { Min = 0, Description = "distance below which the model's value is taken" }];

    public override void Validate(MethodArguments arguments, bool hasBase)
    {
        base.Validate(arguments, hasBase);
        if (!arguments.IsGiven("t"))
        {
            throw new RecyclingException("nearswap needs t (the distance below which the model's value is taken), e.g. t: 0.001");
        }
    }

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) => new Merger(arguments["t"]);

    private sealed class Merger(double t) : ChunkwiseMethod
    {
        protected override void MergeChunk(TensorInfo tensor, long offset, float[][] inputs, ReadOnlySpan<float> baseline, Span<float> output)
        {
            for (int e = 0; e < output.Length; e++)
            {
                double a = baseline[e], b = inputs[0][e];
                double w = Math.Clamp(t / Math.Max(Math.Abs(a - b), 1e-6), 0, 1);
                output[e] = (float)(w * b + (1 - w) * a);
            }
        }
    }
}
