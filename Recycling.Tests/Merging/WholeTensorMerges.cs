using Recycling.Onnx;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>
/// The whole-tensor merges of sce, nuslerp, multislerp, karcher, model_stock's filter_wise, ram, ramplus_tl and arcee_fusion as they were before they streamed (verbatim, on
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

    internal sealed class NuSlerp(double t, bool rowWise, bool flatten) : WholeTensorMethod
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

    internal sealed class MultiSlerp(double[] weights, double eps) : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            int n = inputs.Length, length = output.Length;
            if (n == 1)
            {
                inputs[0].AsSpan(0, length).CopyTo(output);
                return;
            }

            var v = new double[n][];
            var norms = new double[n];
            for (int i = 0; i < n; i++)
            {
                v[i] = new double[length];
                for (int e = 0; e < length; e++)
                {
                    v[i][e] = inputs[i][e] - (baseline is null ? 0 : (double)baseline[e]);
                    norms[i] += v[i][e] * v[i][e];
                }

                norms[i] = Math.Sqrt(norms[i]);
            }

            // Unit vectors and their weighted mean direction.
            var mean = new double[length];
            for (int i = 0; i < n; i++)
            {
                for (int e = 0; e < length; e++)
                {
                    v[i][e] /= norms[i] + eps;
                    mean[e] += weights[i] * v[i][e];
                }
            }

            double meanNorm = Norm(mean);
            if (meanNorm < eps)
            {
                throw new RecyclingException($"multislerp: tensor '{tensor.Name}': the weighted directions cancel out (antipodal inputs); change the weights");
            }

            for (int e = 0; e < length; e++)
            {
                mean[e] /= meanNorm;
            }

            // Tangent vectors at the mean, averaged with the weights, mapped back to the sphere.
            var tangent = new double[length];
            for (int i = 0; i < n; i++)
            {
                double dot = 0;
                for (int e = 0; e < length; e++)
                {
                    dot += v[i][e] * mean[e];
                }

                for (int e = 0; e < length; e++)
                {
                    tangent[e] += weights[i] * (v[i][e] - dot * mean[e]);
                }
            }

            double tangentNorm = Norm(tangent) + eps;
            double scale = 0;
            for (int i = 0; i < n; i++)
            {
                scale += norms[i] * weights[i];
            }

            double c = Math.Cos(tangentNorm), s = Math.Sin(tangentNorm) / tangentNorm;
            for (int e = 0; e < length; e++)
            {
                output[e] = (float)((mean[e] * c + tangent[e] * s) * scale + (baseline is null ? 0 : baseline[e]));
            }
        }

        private static double Norm(double[] x)
        {
            double sum = 0;
            foreach (double value in x)
            {
                sum += value * value;
            }

            return Math.Sqrt(sum);
        }
    }

    internal sealed class Karcher(int maxIter, double tol) : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            float[][] points = baseline is null ? inputs : [.. inputs, baseline];
            int n = points.Length, length = output.Length;
            if (n == 1)
            {
                points[0].AsSpan(0, length).CopyTo(output);
                return;
            }

            double alpha = 1.0 / n;
            var norms = new double[n];
            for (int i = 0; i < n; i++)
            {
                double sum = 0;
                for (int e = 0; e < length; e++)
                {
                    sum += (double)points[i][e] * points[i][e];
                }

                norms[i] = Math.Sqrt(sum);
            }

            var valid = Enumerable.Range(0, n).Where(i => norms[i] > tol).ToArray();
            if (valid.Length == 0)
            {
                output.Clear();
                return;
            }

            double a = 1.0 / valid.Length; // equal weights renormalised over the valid inputs

            // The unit vectors pᵢ/‖pᵢ‖ are computed where used, never stored: N fp64 copies of the tensor less.
            var u = new double[length];
            foreach (int i in valid)
            {
                float[] p = points[i];
                double norm = norms[i];
                for (int e = 0; e < length; e++)
                {
                    u[e] += a * (p[e] / norm);
                }
            }

            double normU = Norm(u);
            for (int e = 0; e < length; e++)
            {
                u[e] = normU < tol ? points[valid[0]][e] / norms[valid[0]] : u[e] / normU;
            }

            var step = new double[length];
            for (int iteration = 0; iteration < maxIter; iteration++)
            {
                Array.Clear(step);
                foreach (int i in valid)
                {
                    float[] p = points[i];
                    double norm = norms[i];
                    double dot = 0;
                    for (int e = 0; e < length; e++)
                    {
                        dot += u[e] * (p[e] / norm);
                    }

                    dot = Math.Clamp(dot, -1, 1);
                    double theta = Math.Acos(dot);
                    if (theta < tol)
                    {
                        continue;
                    }

                    double f = a * theta / Math.Sin(theta);
                    for (int e = 0; e < length; e++)
                    {
                        step[e] += f * ((p[e] / norm) - (dot * u[e]));
                    }
                }

                double normStep = Norm(step);
                if (normStep < tol)
                {
                    break;
                }

                double c = Math.Cos(normStep), s = Math.Sin(normStep);
                for (int e = 0; e < length; e++)
                {
                    u[e] = c * u[e] + s * (step[e] / normStep);
                }

                double normNew = Norm(u);
                if (normNew > tol)
                {
                    for (int e = 0; e < length; e++)
                    {
                        u[e] /= normNew;
                    }
                }
            }

            double scale = norms.Sum() * alpha;
            for (int e = 0; e < length; e++)
            {
                output[e] = (float)(scale * u[e]);
            }
        }

        private static double Norm(double[] x)
        {
            double sum = 0;
            foreach (double value in x)
            {
                sum += value * value;
            }

            return Math.Sqrt(sum);
        }
    }

    /// <summary>filter_wise: one t per vector along the last axis (a 1-D tensor is one vector), over whole fp32 tensors.</summary>
    internal sealed class ModelStockRowWise : WholeTensorMethod
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

                float t = (float)ModelStock.Ratio(gram, n);
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

    /// <summary>RAM's merge; with <paramref name="unique"/> (RAM+), model i's unique changes are scaled by unique[i] computed per tensor.</summary>
    internal sealed class Ram(double epsilon, Func<int[], int[], double[]>? unique) : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            int n = inputs.Length, length = output.Length;
            var counts = new int[length];
            for (int i = 0; i < n; i++)
            {
                for (int e = 0; e < length; e++)
                {
                    counts[e] += Math.Abs(inputs[i][e] - baseline![e]) > epsilon ? 1 : 0;
                }
            }

            double[] scales = Enumerable.Repeat(1.0, n).ToArray();
            if (unique is not null)
            {
                // Per model: how many of its changed entries others change too (shared) and how many only it changes.
                var shared = new int[n];
                var only = new int[n];
                for (int i = 0; i < n; i++)
                {
                    for (int e = 0; e < length; e++)
                    {
                        if (Math.Abs(inputs[i][e] - baseline![e]) > epsilon)
                        {
                            shared[i] += counts[e] > 1 ? 1 : 0;
                            only[i] += counts[e] == 1 ? 1 : 0;
                        }
                    }
                }

                scales = unique(shared, only);
            }

            for (int e = 0; e < length; e++)
            {
                double sum = 0;
                for (int i = 0; i < n; i++)
                {
                    float tau = inputs[i][e] - baseline![e];
                    if (Math.Abs(tau) > epsilon)
                    {
                        sum += counts[e] == 1 ? scales[i] * tau : (double)tau / counts[e];
                    }
                }

                output[e] = (float)(baseline![e] + sum);
            }
        }
    }

    internal sealed class ArceeFusion : WholeTensorMethod
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
