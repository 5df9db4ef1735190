namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// Model stock (Jang et al. 2024) as mergekit computes it: per tensor (or per row with filter_wise), cos the mean
/// pairwise cosine of the τᵢ (norm products clamped at 1e-6, cosines to [−1, 1]), t = N·cos / (1 + (N−1)·cos),
/// θ = t·mean θᵢ + (1−t)·θ0.
/// </summary>
internal sealed class ModelStock : MergeMethodDefinition
{
    private static readonly MethodParameter FilterWise = new("filter_wise", 0, "one t per row (first dimension) instead of per tensor") { Kind = ParameterKind.Boolean };

    public override string Name => "model_stock";

    public override IReadOnlyList<string> Aliases => ["modelstock"];

    public override string Formula => "θ = t·mean θᵢ + (1−t)·θ0, t = N·cos/(1+(N−1)·cos), cos the mean pairwise cosine of the τᵢ per tensor (per row with filter_wise)";

    public override IReadOnlyList<MethodParameter> Parameters => [FilterWise];

    public override BaseUse Base => BaseUse.Required;

    public override int MinModels => 2;

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) =>
        arguments.Flag("filter_wise") ? new RowWise() : new PerTensor(kernels);

    /// <summary>t from the Gram matrix of the task vectors (N×N, row-major).</summary>
    internal static double Ratio(ReadOnlySpan<double> gram, int n)
    {
        double sum = 0;
        for (int a = 0; a < n; a++)
        {
            for (int b = a + 1; b < n; b++)
            {
                double cos = gram[(a * n) + b] / Math.Max(Math.Sqrt(gram[(a * n) + a]) * Math.Sqrt(gram[(b * n) + b]), 1e-6);
                sum += Math.Clamp(cos, -1, 1);
            }
        }

        double mean = sum / (n * (n - 1) / 2);
        double denominator = 1 + ((n - 1) * mean);
        if (denominator == 0)
        {
            throw new RecyclingException(
                $"model stock is undefined here: the task vectors' mean pairwise cosine is exactly -1/(N-1) = {mean}.");
        }

        return n * mean / denominator;
    }

    private sealed class PerTensor(IMergeKernels kernels) : ITensorMethod
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
            int n = chunks.Inputs.Length;
            double t = Ratio(TensorChunks.Gram(kernels, chunks, withBase: true), n);
            // θ0 + Σ (t/N)·τᵢ = t·mean θᵢ + (1−t)·θ0
            KernelWeightedSum.Run(kernels, chunks, [.. Enumerable.Repeat((float)(t / n), n)], withBase: true, buffer, sink);
        }
    }

    /// <summary>filter_wise: one t per row of the first dimension (a vector is one row), over whole fp32 tensors.</summary>
    private sealed class RowWise : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            int n = inputs.Length;
            var (rows, columns) = tensor.Matrix(output.Length);
            double[] gram = new double[n * n];
            for (long r = 0; r < rows; r++)
            {
                int start = (int)(r * columns), count = (int)columns;
                Array.Clear(gram);
                for (int a = 0; a < n; a++)
                {
                    for (int b = a; b < n; b++)
                    {
                        double dot = 0;
                        for (int e = start; e < start + count; e++)
                        {
                            dot += (double)(inputs[a][e] - baseline![e]) * (inputs[b][e] - baseline[e]);
                        }

                        gram[(a * n) + b] = gram[(b * n) + a] = dot;
                    }
                }

                float t = (float)Ratio(gram, n);
                for (int e = start; e < start + count; e++)
                {
                    float mean = 0;
                    for (int k = 0; k < n; k++)
                    {
                        mean += inputs[k][e];
                    }

                    output[e] = (t * (mean / n)) + ((1 - t) * baseline![e]);
                }
            }
        }
    }
}
