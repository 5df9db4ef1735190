namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// SCE (Wan et al. 2024, FuseChat; mergekit's <c>sce</c>): Select the int(k·nz) entries whose task vectors vary most
/// across models (population variance, nz of them non-zero), Calculate each model's weight as its mean τ² over the
/// tensor (normalised to sum 1; uniform when the sum is below 1e-6), Erase entries against the elected sign; then
/// θ0 + Σ wᵢmᵢτᵢ / max(Σ wᵢmᵢ, 1e-6). mergekit's per-model weights are not used.
/// </summary>
internal sealed class Sce : MergeMethodDefinition
{
    private static readonly MethodParameter SelectTopK = new("select_topk", 1, "fraction of entries with the most variance across task vectors kept")
    {
        Min = 0, Max = 1,
    };

    public override string Name => "sce";

    public override string Formula => "θ0 + Σ wᵢmᵢτᵢ / Σ wᵢmᵢ: top-variance entries, wᵢ ∝ mean τᵢ², sign election";

    public override BaseUse Base => BaseUse.Required;

    public override IReadOnlyList<MethodParameter> Parameters => [SelectTopK, CommonParameters.Int8Mask];

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) => new Merger(arguments["select_topk"]);

    /// <summary>
    /// Streamed: the selection is <see cref="OutlierCuts"/>' range [0, int(k·nz)) of the variances (nz counted in the
    /// first counting pass), then a pass for the weights and one for the output; every value as the whole-tensor rule
    /// computes it, sums in index order, so the result is the same bit for bit at any chunk size.
    /// </summary>
    private sealed class Merger(double topK) : StreamedMethod
    {
        protected override void MergeTensor(TensorInfo tensor, ChunkPasses passes, Span<float> buffer, TensorMerger.ITensorSink sink)
        {
            int n = passes.Models;
            long length = passes.Length;
            float[] variances = System.Buffers.ArrayPool<float>.Shared.Rent((int)Math.Max(1, Math.Min(length, buffer.Length)));
            try
            {
                OutlierCuts? cuts = topK < 1 ? Select(passes, variances) : null;
                OutlierCuts? forWeights = cuts?.Copy();
                var squares = new double[n];
                passes.Read((offset, count, inputs, baseline) =>
                {
                    if (forWeights is not null)
                    {
                        Variances(inputs, baseline!, variances.AsSpan(0, count));
                        forWeights.Keep(variances.AsSpan(0, count));
                    }

                    for (int i = 0; i < n; i++)
                    {
                        for (int e = 0; e < count; e++)
                        {
                            double v = forWeights is null || variances[e] != 0 ? inputs[i][e] - baseline![e] : 0;
                            squares[i] += v * v;
                        }
                    }
                });

                var weights = new double[n];
                for (int i = 0; i < n; i++)
                {
                    weights[i] = length == 0 ? 0 : squares[i] / length;
                }

                double total = weights.Sum();
                for (int i = 0; i < n; i++)
                {
                    weights[i] = Math.Abs(total) < 1e-6 ? 1.0 / n : weights[i] / total;
                }

                var tv = new double[n];
                passes.Write(buffer, sink, (offset, inputs, baseline, output) =>
                {
                    if (cuts is not null)
                    {
                        Variances(inputs, baseline!, variances.AsSpan(0, output.Length));
                        cuts.Keep(variances.AsSpan(0, output.Length));
                    }

                    for (int e = 0; e < output.Length; e++)
                    {
                        double sum = 0;
                        for (int i = 0; i < n; i++)
                        {
                            tv[i] = cuts is null || variances[e] != 0 ? inputs[i][e] - baseline![e] : 0;
                            sum += tv[i];
                        }

                        double elected = sum >= 0 ? 1 : -1, merged = 0, divisor = 0;
                        for (int i = 0; i < n; i++)
                        {
                            if (tv[i] * elected > 0)
                            {
                                merged += weights[i] * tv[i];
                                divisor += weights[i];
                            }
                        }

                        output[e] = double.IsNaN(sum) ? float.NaN : (float)(baseline![e] + merged / Math.Max(divisor, 1e-6));
                    }
                });
            }
            finally
            {
                System.Buffers.ArrayPool<float>.Shared.Return(variances);
            }
        }

        /// <summary>
        /// The cuts keeping the int(k·nz) entries of largest variance across the task vectors (nz: entries of non-zero
        /// variance; NaN counts as the largest), counted in two passes; <see cref="OutlierCuts.Keep"/> then zeroes the
        /// variances of the others (the kept ones are non-zero).
        /// </summary>
        private OutlierCuts Select(ChunkPasses passes, float[] variances)
        {
            var cuts = new OutlierCuts(passes.Length, (0, passes.Length));
            long nonzero = 0;
            bool first = true;
            while (!cuts.IsComplete)
            {
                passes.Read((offset, count, inputs, baseline) =>
                {
                    Span<float> chunk = variances.AsSpan(0, count);
                    Variances(inputs, baseline!, chunk);
                    if (first)
                    {
                        foreach (float v in chunk)
                        {
                            nonzero += v != 0 ? 1 : 0;
                        }
                    }

                    cuts.Count(chunk);
                });
                if (first)
                {
                    cuts.Restrict(0, topK <= 0 ? 0 : (long)(nonzero * topK));
                    first = false;
                }

                cuts.CompletePass();
            }

            return cuts;
        }

        /// <summary>Each entry's population variance of the fp32 task vectors across the models, in fp64, rounded to fp32.</summary>
        private static void Variances(float[][] inputs, float[] baseline, Span<float> variances)
        {
            int n = inputs.Length;
            for (int e = 0; e < variances.Length; e++)
            {
                double mean = 0;
                for (int i = 0; i < n; i++)
                {
                    mean += (double)(inputs[i][e] - baseline[e]);
                }

                mean /= n;
                double v = 0;
                for (int i = 0; i < n; i++)
                {
                    double tv = inputs[i][e] - baseline[e];
                    v += (tv - mean) * (tv - mean);
                }

                variances[e] = (float)(v / n);
            }
        }
    }
}
