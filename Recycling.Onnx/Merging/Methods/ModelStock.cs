namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// Model stock (Jang et al. 2024) as mergekit computes it: per tensor (or per vector along the last axis with
/// filter_wise, torch's dim=-1), cos the mean
/// pairwise cosine of the τᵢ (norm products clamped at 1e-6, cosines to [−1, 1]), t = N·cos / (1 + (N−1)·cos),
/// θ = t·mean θᵢ + (1−t)·θ0.
/// </summary>
internal sealed class ModelStock : MergeMethodDefinition
{
    private static readonly MethodParameter FilterWise = new("filter_wise", 0, "one t per vector along the last axis (a row of a matrix) instead of per tensor") { Kind = ParameterKind.Boolean };

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

    /// <summary>
    /// filter_wise: one t per vector along the last axis (a 1-D tensor is one vector). Streamed: rows are consecutive,
    /// so one pass sums the open row's Gram matrix (fp64, in index order, as the whole-tensor rule) and keeps each row's
    /// t, a second writes the output. Memory: one fp32 t per row.
    /// </summary>
    private sealed class RowWise : StreamedMethod
    {
        protected override void MergeTensor(TensorInfo tensor, ChunkPasses passes, Span<float> buffer, TensorMerger.ITensorSink sink)
        {
            int n = passes.Models;
            var (rows, columns) = tensor.Matrix(passes.Length);
            var ratios = new float[rows];
            var gram = new double[n * n];
            long row = 0, column = 0;
            passes.Read((_, count, inputs, baseline) =>
            {
                for (int e = 0; e < count; e++)
                {
                    for (int a = 0; a < n; a++)
                    {
                        for (int b = a; b < n; b++)
                        {
                            gram[(a * n) + b] += (double)(inputs[a][e] - baseline![e]) * (inputs[b][e] - baseline[e]);
                        }
                    }

                    if (++column == columns)
                    {
                        for (int a = 0; a < n; a++)
                        {
                            for (int b = a + 1; b < n; b++)
                            {
                                gram[(b * n) + a] = gram[(a * n) + b];
                            }
                        }

                        ratios[row++] = (float)Ratio(gram, n);
                        Array.Clear(gram);
                        column = 0;
                    }
                }
            });
            passes.Write(buffer, sink, (offset, inputs, baseline, output) =>
            {
                for (int e = 0; e < output.Length; e++)
                {
                    float t = ratios[(offset + e) / columns];
                    float mean = 0;
                    for (int k = 0; k < n; k++)
                    {
                        mean += inputs[k][e];
                    }

                    output[e] = (t * (mean / n)) + ((1 - t) * baseline![e]);
                }
            });
        }
    }
}
