namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// mergekit's <c>nuslerp</c>: SLERP of two models (or of their task vectors when a base is given, added back to it)
/// at t = w₂/(w₁ + w₂) (0.5 when |w₁ + w₂| &lt; 1e-6), over the whole tensor (<c>nuslerp_flatten</c>, default), or
/// vector by vector along the last axis, or along the first axis (<c>nuslerp_row_wise</c>, mergekit's dim 0);
/// (nearly) colinear vectors (|sin θ| &lt; 1e-8) interpolate linearly.
/// </summary>
internal sealed class NuSlerp : MergeMethodDefinition
{
    private static readonly MethodParameter RowWise = new("nuslerp_row_wise", 0, "without flatten: SLERP vectors along the first axis instead of the last")
    {
        Kind = ParameterKind.Boolean,
    };

    private static readonly MethodParameter Flatten = new("nuslerp_flatten", 1, "SLERP the whole tensor as one vector")
    {
        Kind = ParameterKind.Boolean,
    };

    public override string Name => "nuslerp";

    public override string Formula => "SLERP of θ₁, θ₂ (or of τ₁, τ₂ from a base) at t = w₂/(w₁+w₂), whole tensor or by vectors";

    public override BaseUse Base => BaseUse.Optional;

    public override int MinModels => 2;

    public override int MaxModels => 2;

    public override IReadOnlyList<MethodParameter> Parameters => [CommonParameters.Weight, RowWise, Flatten];

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels)
    {
        double[] w = arguments.PerModel("weight");
        double t = Math.Abs(w[0] + w[1]) < 1e-6 ? 0.5 : w[1] / (w[0] + w[1]);
        return new Merger(t, arguments.Flag("nuslerp_row_wise"), arguments.Flag("nuslerp_flatten"));
    }

    /// <summary>
    /// Streamed: one pass sums each vector's ‖v₀‖², ‖v₁‖² and v₀·v₁ (fp64, in index order, as the whole-tensor rule),
    /// one writes s₀v₀ + s₁v₁. Memory: three fp64 sums per vector (one for the default whole-tensor vector).
    /// </summary>
    private sealed class Merger(double t, bool rowWise, bool flatten) : StreamedMethod
    {
        protected override void MergeTensor(TensorInfo tensor, ChunkPasses passes, Span<float> buffer, TensorMerger.ITensorSink sink)
        {
            long length = passes.Length;
            if (length == 0)
            {
                return;
            }

            // Vectors of `size` entries at stride `stride`: the whole tensor, the last axis, or the first axis.
            var shape = tensor.Shape;
            long last = shape.Count == 0 ? 1 : shape[^1];
            (long size, long stride, long count) = flatten || shape.Count < 2 ? (flatten ? length : last, 1L, flatten ? 1 : length / Math.Max(1, last))
                : rowWise ? (shape[0], length / shape[0], length / shape[0])
                : (last, 1L, length / last);
            bool strided = rowWise && !flatten && shape.Count >= 2;
            long Vector(long e) => strided ? e % stride : e / size;

            var n0 = new double[count];
            var n1 = new double[count];
            var dot = new double[count];
            passes.Read((offset, chunk, inputs, baseline) =>
            {
                for (int k = 0; k < chunk; k++)
                {
                    long e = offset + k;
                    double b = baseline is null ? 0 : baseline[k];
                    double v0 = inputs[0][k] - b, v1 = inputs[1][k] - b;
                    long v = Vector(e);
                    n0[v] += v0 * v0;
                    n1[v] += v1 * v1;
                    dot[v] += v0 * v1;
                }
            });

            // The sums' arrays become each vector's coefficients s₀ (n0) and s₁ (n1).
            for (long v = 0; v < count; v++)
            {
                double cos = Math.Clamp(dot[v] / (Math.Max(Math.Sqrt(n0[v]), 1e-7) * Math.Max(Math.Sqrt(n1[v]), 1e-7)), -1, 1);
                double theta = Math.Acos(cos), sin = Math.Sin(theta);
                bool colinear = Math.Abs(sin) < 1e-8;
                n0[v] = colinear ? 1 - t : Math.Sin((1 - t) * theta) / sin;
                n1[v] = colinear ? t : Math.Sin(t * theta) / sin;
            }

            passes.Write(buffer, sink, (offset, inputs, baseline, output) =>
            {
                for (int k = 0; k < output.Length; k++)
                {
                    double b = baseline is null ? 0 : baseline[k];
                    double v0 = inputs[0][k] - b, v1 = inputs[1][k] - b;
                    long v = Vector(offset + k);
                    output[k] = (float)((baseline is null ? 0 : baseline[k]) + ((n0[v] * v0) + (n1[v] * v1)));
                }
            });
        }
    }
}
