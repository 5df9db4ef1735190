namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// mergekit's <c>arcee_fusion</c>: takes the model's change only where it matters. Importance of an entry is
/// |θ₁ − θ0| times the KL divergence of softmax(θ₁) from softmax(θ0) over its row (the last axis); the change is
/// kept where importance ≥ median + 1.5·IQR, quantiles from the sorted importances at index ⌊q·(n − 1)⌋. mergekit
/// samples a million entries of larger tensors at random for the quantiles; we always sort them all.
/// </summary>
internal sealed class ArceeFusion : MergeMethodDefinition
{
    public override string Name => "arcee_fusion";

    public override string Formula => "θ0 + τ₁·[|τ₁|·KL(softmax θ₁ ‖ softmax θ0) ≥ median + 1.5·IQR]";

    public override BaseUse Base => BaseUse.Required;

    public override int MinModels => 1;

    public override int MaxModels => 1;

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) => new Merger();

    private sealed class Merger : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            int length = output.Length;
            if (length == 0)
            {
                return;
            }

            float[] b = baseline!, x = inputs[0];
            int row = tensor.Shape.Count == 0 ? 1 : (int)tensor.Shape[^1];
            var importance = new double[length];
            for (int start = 0; start < length; start += row)
            {
                double kl = RowKl(x.AsSpan(start, row), b.AsSpan(start, row));
                for (int e = start; e < start + row; e++)
                {
                    importance[e] = Math.Abs((double)x[e] - b[e]) * kl;
                }
            }

            var sorted = (double[])importance.Clone();
            Array.Sort(sorted);
            double threshold = Quantile(sorted, 0.5f) + 1.5 * (Quantile(sorted, 0.75f) - Quantile(sorted, 0.25f));
            for (int e = 0; e < length; e++)
            {
                output[e] = importance[e] >= threshold ? (float)(b[e] + ((double)x[e] - b[e])) : b[e];
            }
        }

        /// <summary>mergekit's index: q·(n − 1) in fp32, truncated.</summary>
        private static double Quantile(double[] sorted, float q) => sorted[(int)(q * (float)(sorted.Length - 1))];

        /// <summary>Σ p·log(p/q) with p = softmax(x) + 1e-8, q = softmax(b) + 1e-8.</summary>
        private static double RowKl(ReadOnlySpan<float> x, ReadOnlySpan<float> b)
        {
            double[] p = Softmax(x), q = Softmax(b);
            double kl = 0;
            for (int e = 0; e < p.Length; e++)
            {
                double pe = p[e] + 1e-8, qe = q[e] + 1e-8;
                kl += pe * Math.Log(pe / qe);
            }

            return kl;
        }

        private static double[] Softmax(ReadOnlySpan<float> v)
        {
            double max = double.NegativeInfinity;
            foreach (float value in v)
            {
                max = Math.Max(max, value);
            }

            var result = new double[v.Length];
            double sum = 0;
            for (int e = 0; e < v.Length; e++)
            {
                result[e] = Math.Exp(v[e] - max);
                sum += result[e];
            }

            for (int e = 0; e < v.Length; e++)
            {
                result[e] /= sum;
            }

            return result;
        }
    }
}
