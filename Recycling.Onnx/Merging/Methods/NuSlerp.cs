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

    private sealed class Merger(double t, bool rowWise, bool flatten) : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            int length = output.Length;
            if (length == 0)
            {
                return;
            }

            var v0 = new double[length];
            var v1 = new double[length];
            for (int e = 0; e < length; e++)
            {
                double b = baseline is null ? 0 : baseline[e];
                v0[e] = inputs[0][e] - b;
                v1[e] = inputs[1][e] - b;
            }

            // Vectors of `size` entries at stride `stride`: the whole tensor, the last axis, or the first axis.
            var shape = tensor.Shape;
            long last = shape.Count == 0 ? 1 : shape[^1];
            (long size, long stride, long count) = flatten || shape.Count < 2 ? (flatten ? length : last, 1L, flatten ? 1 : length / Math.Max(1, last))
                : rowWise ? (shape[0], length / shape[0], length / shape[0])
                : (last, 1L, length / last);
            var result = new double[length];
            for (long v = 0; v < count; v++)
            {
                long start = rowWise && !flatten && shape.Count >= 2 ? v : v * size;
                Slerp(v0, v1, start, size, stride, result);
            }

            for (int e = 0; e < length; e++)
            {
                output[e] = (float)((baseline is null ? 0 : baseline[e]) + result[e]);
            }
        }

        private void Slerp(double[] v0, double[] v1, long start, long size, long stride, double[] result)
        {
            double n0 = 0, n1 = 0, dot = 0;
            for (long k = 0, e = start; k < size; k++, e += stride)
            {
                n0 += v0[e] * v0[e];
                n1 += v1[e] * v1[e];
                dot += v0[e] * v1[e];
            }

            double cos = Math.Clamp(dot / (Math.Max(Math.Sqrt(n0), 1e-7) * Math.Max(Math.Sqrt(n1), 1e-7)), -1, 1);
            double theta = Math.Acos(cos), sin = Math.Sin(theta);
            bool colinear = Math.Abs(sin) < 1e-8;
            double s0 = colinear ? 1 - t : Math.Sin((1 - t) * theta) / sin;
            double s1 = colinear ? t : Math.Sin(t * theta) / sin;
            for (long k = 0, e = start; k < size; k++, e += stride)
            {
                result[e] = s0 * v0[e] + s1 * v1[e];
            }
        }
    }
}
