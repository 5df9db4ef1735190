namespace Recycling.Onnx.Merging.Methods;

/// <summary>Weighted average (model soups, Wortsman et al. 2022): θ = Σ wᵢθᵢ / Σ wᵢ (Σ wᵢθᵢ without normalize).</summary>
internal sealed class Linear : MergeMethodDefinition
{
    public override string Name => "linear";

    public override IReadOnlyList<string> Aliases => ["average", "uniform", "weighted", "soup"];

    public override string Formula => "θ = Σ wᵢθᵢ / Σ wᵢ (uniform by default; Σ wᵢθᵢ without normalize)";

    public override IReadOnlyList<MethodParameter> Parameters => [CommonParameters.Weight, CommonParameters.Normalize];

    public override void Validate(MethodArguments arguments, bool hasBase)
    {
        base.Validate(arguments, hasBase);
        if (arguments.Flag("normalize") && arguments.PerModel("weight").Sum() == 0)
        {
            throw new RecyclingException("linear: the weights sum to zero, so they cannot be normalised; give other weights or normalize false.");
        }
    }

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) =>
        new KernelWeightedSum(kernels, Coefficients(arguments), withBase: false);

    /// <summary>wᵢ / Σ w, computed without overflow or underflow (each first divided by the largest magnitude), or wᵢ.</summary>
    internal static float[] Coefficients(MethodArguments arguments)
    {
        double[] w = arguments.PerModel("weight");
        return arguments.Flag("normalize") ? Normalised(w) : [.. w.Select(v => (float)v)];
    }

    /// <summary>wᵢ / Σ w, each first divided by the largest magnitude, so 1e308 1e308 gives 0.5 each and 1e-320 3e-320 0.25 and 0.75.</summary>
    internal static float[] Normalised(double[] w)
    {
        double max = w.Max(Math.Abs);
        double[] scaled = [.. w.Select(v => v / max)];
        double total = scaled.Sum();
        return [.. scaled.Select(v => (float)(v / total))];
    }
}

/// <summary>A per-tensor-constant weighted sum on the kernels: Σ cᵢxᵢ, or base + Σ cᵢτᵢ.</summary>
internal sealed class KernelWeightedSum(IMergeKernels kernels, float[] coefficients, bool withBase) : ITensorMethod
{
    public bool NeedsPrepass(int pass) => false;

    public void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks)
    {
    }

    public void CompletePrepass(int pass)
    {
    }

    public void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink) =>
        Run(kernels, chunks, coefficients, withBase, buffer, sink);

    /// <summary>Each chunk through <see cref="IMergeKernels.WeightedSum"/> with <paramref name="weights"/>.</summary>
    public static void Run(IMergeKernels kernels, ITensorChunks chunks, float[] weights, bool withBase, Span<float> buffer, TensorMerger.ITensorSink sink)
    {
        for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
        {
            int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
            chunks.Load(offset, count);
            kernels.WeightedSum(chunks.Inputs, weights, withBase ? chunks.Base : null, null, buffer[..count]);
            sink.Write(offset, buffer[..count]);
        }
    }
}
