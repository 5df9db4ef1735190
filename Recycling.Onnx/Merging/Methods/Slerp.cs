namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// Spherical interpolation per tensor (mergekit's <c>slerp</c>): from the base model (t = 0) to the one other model
/// (t = 1); without a base, from the first of two models to the second (ours). Nearly parallel tensors
/// (|cos| &gt; 0.9995) are interpolated linearly, and a tensor of norm ≤ 1e-8 is not normalised, as mergekit does.
/// </summary>
internal sealed class Slerp : MergeMethodDefinition
{
    public override string Name => "slerp";

    public override string Formula => "θ = sin((1−t)Ω)/sin Ω·θa + sin(tΩ)/sin Ω·θb per tensor, Ω the angle; θa the base (or model 1), θb the other";

    public override IReadOnlyList<MethodParameter> Parameters => [CommonParameters.T];

    public override BaseUse Base => BaseUse.Optional;

    public override int MinModels => 1;

    public override int MaxModels => 2;

    public override void Validate(MethodArguments arguments, bool hasBase)
    {
        int n = arguments.InputCount;
        if (hasBase ? n != 1 : n != 2)
        {
            throw new RecyclingException(hasBase
                ? $"slerp interpolates from the base model to ONE other model; {n} were given besides the base (or give two models and no base)."
                : $"slerp interpolates two models (or the base and one model), not {n}.");
        }
    }

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) => new Run(kernels, arguments["t"]);

    /// <summary>The two interpolation weights for t from the two tensors' squared norms and dot product.</summary>
    internal static (double A, double B) Weights(double t, double aa, double ab, double bb)
    {
        double dot = ab / (Norm(aa) * Norm(bb));
        if (Math.Abs(dot) > 0.9995)
        {
            return (1 - t, t);
        }

        double omega = Math.Acos(dot), sin = Math.Sin(omega);
        return (Math.Sin((1 - t) * omega) / sin, Math.Sin(t * omega) / sin);

        // As mergekit's normalize: a vector of norm ≤ 1e-8 is left unscaled.
        static double Norm(double squared) => Math.Sqrt(squared) is var n && n > 1e-8 ? n : 1;
    }

    private sealed class Run(IMergeKernels kernels, double t) : ITensorMethod
    {
        public bool NeedsPrepass(int pass) => false;

        public void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks)
        {
        }

        public void CompletePrepass(int pass)
        {
        }

        public void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink)
        {
            if (chunks.Base is null)
            {
                double[] gram = TensorChunks.Gram(kernels, chunks, withBase: false);
                var (a, b) = Weights(t, gram[0], gram[1], gram[3]);
                KernelWeightedSum.Run(kernels, chunks, [(float)a, (float)b], withBase: false, buffer, sink);
                return;
            }

            // From the base: base·a + x·b = base + b·(x − base) + (a + b − 1)·base, two kernel terms are not enough,
            // so the dot products and the sum run here, chunk by chunk, in fp64 and fp32.
            double bb = 0, bx = 0, xx = 0;
            float[] x = new float[Math.Min(chunks.ChunkElements, chunks.Length)], y = new float[x.Length];
            TensorChunks.ForEach(chunks, null, offset =>
            {
                int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
                TensorChunks.Decode(chunks.Base!.Value, y.AsSpan(0, count));
                TensorChunks.Decode(chunks.Inputs[0], x.AsSpan(0, count));
                for (int e = 0; e < count; e++)
                {
                    bb += (double)y[e] * y[e];
                    bx += (double)y[e] * x[e];
                    xx += (double)x[e] * x[e];
                }
            });
            var (wa, wb) = Weights(t, bb, bx, xx);
            float fa = (float)wa, fb = (float)wb;
            for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
            {
                int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
                chunks.Load(offset, count);
                TensorChunks.Decode(chunks.Base!.Value, y.AsSpan(0, count));
                TensorChunks.Decode(chunks.Inputs[0], x.AsSpan(0, count));
                for (int e = 0; e < count; e++)
                {
                    buffer[e] = (fa * y[e]) + (fb * x[e]);
                }

                sink.Write(offset, buffer[..count]);
            }
        }
    }
}
