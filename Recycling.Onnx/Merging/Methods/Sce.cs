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

    private sealed class Merger(double topK) : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            int n = inputs.Length, length = output.Length;
            var tvs = new double[n][];
            for (int i = 0; i < n; i++)
            {
                tvs[i] = new double[length];
                for (int e = 0; e < length; e++)
                {
                    tvs[i][e] = inputs[i][e] - baseline![e];
                }
            }

            if (topK < 1)
            {
                var selected = Select(tvs, length);
                foreach (var tv in tvs)
                {
                    for (int e = 0; e < length; e++)
                    {
                        tv[e] = selected[e] ? tv[e] : 0;
                    }
                }
            }

            var weights = new double[n];
            for (int i = 0; i < n; i++)
            {
                double squares = 0;
                foreach (double v in tvs[i])
                {
                    squares += v * v;
                }

                weights[i] = length == 0 ? 0 : squares / length;
            }

            double total = weights.Sum();
            for (int i = 0; i < n; i++)
            {
                weights[i] = Math.Abs(total) < 1e-6 ? 1.0 / n : weights[i] / total;
            }

            for (int e = 0; e < length; e++)
            {
                double sum = 0;
                for (int i = 0; i < n; i++)
                {
                    sum += tvs[i][e];
                }

                double elected = sum >= 0 ? 1 : -1, merged = 0, divisor = 0;
                for (int i = 0; i < n; i++)
                {
                    if (tvs[i][e] * elected > 0)
                    {
                        merged += weights[i] * tvs[i][e];
                        divisor += weights[i];
                    }
                }

                output[e] = double.IsNaN(sum) ? float.NaN : (float)(baseline![e] + merged / Math.Max(divisor, 1e-6));
            }
        }

        /// <summary>The int(k·nz) entries of largest variance across the task vectors (nz: entries of non-zero variance).</summary>
        private bool[] Select(double[][] tvs, int length)
        {
            if (topK <= 0)
            {
                return new bool[length];
            }

            var variance = new float[length];
            long nonzero = 0;
            for (int e = 0; e < length; e++)
            {
                double mean = 0;
                foreach (var tv in tvs)
                {
                    mean += tv[e];
                }

                mean /= tvs.Length;
                double v = 0;
                foreach (var tv in tvs)
                {
                    v += (tv[e] - mean) * (tv[e] - mean);
                }

                variance[e] = (float)(v / tvs.Length);
                nonzero += variance[e] != 0 ? 1 : 0;
            }

            long k = (long)(nonzero * topK);
            return MergekitMasks.TopRange(MergekitMasks.MagnitudeKeys(variance), 0, k);
        }
    }
}
