using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// The whole-tensor merges of sce as it was before they streamed (verbatim, on
/// <see cref="WholeTensorMethod"/>: every input's whole tensor in memory): the references <see cref="StreamedMethodTests"/>
/// holds the streamed merges to, bit for bit.
/// </summary>
internal static class WholeTensorMerges
{
    internal sealed class Sce(double topK) : WholeTensorMethod
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
