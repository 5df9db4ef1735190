using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

/// <summary>Straightforward scalar reference implementations of the merge rules, in fp64 unless a rule is defined on fp32.</summary>
internal static class ReferenceMerges
{
    public static double[] WeightedSum(float[][] x, double[] w)
    {
        var result = new double[x[0].Length];
        for (int j = 0; j < result.Length; j++)
        {
            for (int k = 0; k < x.Length; k++)
            {
                result[j] += w[k] * x[k][j];
            }
        }

        return result;
    }

    /// <summary>base + Σ wᵢ·mᵢ·(xᵢ − base) with mᵢ DARE's keep-and-rescale factor (1 without DARE).</summary>
    public static double[] DeltaSum(float[][] x, float[] b, double[] w, DareMask? dare = null)
    {
        var result = new double[b.Length];
        for (int j = 0; j < b.Length; j++)
        {
            double sum = 0;
            for (int k = 0; k < x.Length; k++)
            {
                sum += w[k] * ((double)x[k][j] - b[j]) * DareFactor(dare, k, j);
            }

            result[j] = b[j] + sum;
        }

        return result;
    }

    public static double DareFactor(DareMask? dare, int model, long element) =>
        dare is not { } mask ? 1
        : ReferenceSplitMix.Keeps(mask.KeyFor(model), element, mask.DropRate) ? 1 / (1 - mask.DropRate) : 0;

    /// <summary>fp32 task vector as the kernels define it: (float)x − (float)b, then DARE's fp32 factor.</summary>
    public static float Tau(float x, float b, DareMask? dare, int model, long element) =>
        (x - b) * (float)DareFactor(dare, model, element);

    /// <summary>The TIES authors' threshold by a full sort: the ⌊M(1−k)⌋-th smallest |τ| (1-based), 0 when that rank is 0.</summary>
    public static float SortThreshold(IEnumerable<float> taus, double density)
    {
        uint[] magnitudes = taus.Select(t => BitConverter.SingleToUInt32Bits(t) & 0x7FFF_FFFFu).ToArray();
        Array.Sort(magnitudes);
        long rank = (long)Math.Floor(magnitudes.Length * (1.0 - density));
        return rank == 0 ? 0f : BitConverter.UInt32BitsToSingle(magnitudes[rank - 1]);
    }

    /// <summary>
    /// TIES over one tensor with given per-model thresholds: kept = |τ| ≥ threshold (bit order), elected sign from the
    /// fp32 sum in model order, zero sum → the tensor's majority elected sign (negative when the tally is not positive),
    /// disjoint mean over agreeing entries in fp64, base + λ·mean.
    /// </summary>
    public static double[] Ties(float[][] x, float[] b, float[] thresholds, double lambda, DareMask? dare = null)
    {
        int n = x.Length, length = b.Length;
        var kept = new float[n][];
        var sums = new float[length];
        long tally = 0;
        for (int k = 0; k < n; k++)
        {
            kept[k] = new float[length];
            uint threshold = BitConverter.SingleToUInt32Bits(thresholds[k]);
            for (int j = 0; j < length; j++)
            {
                float tau = Tau(x[k][j], b[j], dare, k, j);
                kept[k][j] = (BitConverter.SingleToUInt32Bits(tau) & 0x7FFF_FFFFu) >= threshold ? tau : 0f;
            }
        }

        for (int j = 0; j < length; j++)
        {
            float sum = 0f;
            for (int k = 0; k < n; k++)
            {
                sum += kept[k][j];
            }

            sums[j] = sum;
            tally += Math.Sign(sum);
        }

        var result = new double[length];
        for (int j = 0; j < length; j++)
        {
            if (!float.IsFinite(sums[j]))
            {
                result[j] = double.NaN;
                continue;
            }

            int sign = sums[j] > 0 ? 1 : sums[j] < 0 ? -1 : tally > 0 ? 1 : -1;
            double total = 0;
            int count = 0;
            for (int k = 0; k < n; k++)
            {
                if (Math.Sign(kept[k][j]) == sign)
                {
                    total += kept[k][j];
                    count++;
                }
            }

            result[j] = b[j] + lambda * (total / Math.Max(1, count));
        }

        return result;
    }

    /// <summary>
    /// mergekit's generalized task arithmetic as its torch code computes it, in fp32: τᵢ = xᵢ − b (× DARE's factor),
    /// with <paramref name="densities"/> each τᵢ keeps exactly ⌊dᵢ·M⌋ entries of largest magnitude (a stable sort by
    /// descending magnitude: lower indices first among equals), weighted τᵢ·wᵢ; with <paramref name="consensus"/> the
    /// sign of Σ wᵢτᵢ (zero counts as +) keeps only entries of that sign, mixed = Σ wᵢτᵢ·maskᵢ, divisor Σ wᵢ·maskᵢ (0 → 1);
    /// without, divisor Σ wᵢ (|·| &lt; 1e-8 → 1); normalize divides; then λ and the base.
    /// </summary>
    public static float[] Gta(float[][] x, float[] b, double[]? densities, double[] w, double lambda, bool consensus, bool normalize, DareMask? dare = null)
    {
        int n = x.Length, length = b.Length;
        var tau = new float[n][];
        for (int k = 0; k < n; k++)
        {
            tau[k] = new float[length];
            for (int j = 0; j < length; j++)
            {
                tau[k][j] = Tau(x[k][j], b[j], dare, k, j);
            }

            if (densities is not null && densities[k] < 1)
            {
                int keep = (int)(densities[k] * length);
                var order = Enumerable.Range(0, length).OrderByDescending(j => BitConverter.SingleToUInt32Bits(tau[k][j]) & 0x7FFF_FFFFu).ThenBy(j => j).ToArray();
                foreach (int j in order.Skip(keep))
                {
                    tau[k][j] = 0;
                }
            }
        }

        var result = new float[length];
        for (int j = 0; j < length; j++)
        {
            float election = 0;
            for (int k = 0; k < n; k++)
            {
                election += tau[k][j] * (float)w[k];
            }

            float majority = election >= 0 ? 1 : -1;
            float mixed = 0, divisor = 0;
            for (int k = 0; k < n; k++)
            {
                float weighted = tau[k][j] * (float)w[k];
                bool counted = !consensus || (weighted > 0 ? 1 : weighted < 0 ? -1 : 0) == majority;
                if (counted)
                {
                    mixed += weighted;
                    divisor += (float)w[k];
                }
            }

            if (consensus ? divisor == 0 : Math.Abs(divisor) < 1e-8)
            {
                divisor = 1;
            }

            if (normalize)
            {
                mixed /= divisor;
            }

            result[j] = b[j] + ((float)lambda * mixed);
        }

        return result;
    }

    public static double[] Slerp(float[] a, float[] c, double t)
    {
        double aa = 0, cc = 0, ac = 0;
        for (int j = 0; j < a.Length; j++)
        {
            aa += (double)a[j] * a[j];
            cc += (double)c[j] * c[j];
            ac += (double)a[j] * c[j];
        }

        double na = Math.Sqrt(aa) > 1e-8 ? Math.Sqrt(aa) : 1, nc = Math.Sqrt(cc) > 1e-8 ? Math.Sqrt(cc) : 1;
        double d = ac / (na * nc);
        double s0, s1;
        if (Math.Abs(d) > 0.9995)
        {
            (s0, s1) = (1 - t, t);
        }
        else
        {
            double omega = Math.Acos(d);
            (s0, s1) = (Math.Sin((1 - t) * omega) / Math.Sin(omega), Math.Sin(t * omega) / Math.Sin(omega));
        }

        return a.Select((v, j) => s0 * v + s1 * c[j]).ToArray();
    }

    public static double[] ModelStock(float[][] x, float[] b)
    {
        int n = x.Length;
        double[][] tau = x.Select(m => m.Select((v, j) => (double)v - b[j]).ToArray()).ToArray();
        double cosSum = 0;
        for (int p = 0; p < n; p++)
        {
            for (int q = p + 1; q < n; q++)
            {
                double dot = 0, pp = 0, qq = 0;
                for (int j = 0; j < b.Length; j++)
                {
                    dot += tau[p][j] * tau[q][j];
                    pp += tau[p][j] * tau[p][j];
                    qq += tau[q][j] * tau[q][j];
                }

                cosSum += dot / Math.Max(Math.Sqrt(pp * qq), 1e-8);
            }
        }

        double cos = cosSum / (n * (n - 1) / 2.0);
        double t = n * cos / (1 + (n - 1) * cos);
        return b.Select((v, j) => t * x.Average(m => (double)m[j]) + (1 - t) * v).ToArray();
    }

    /// <summary>Fisher merge of one tensor; <paramref name="norms"/> are the whole-model ‖Fᵢ‖₂.</summary>
    public static double[] Fisher(float[][] x, float[][] f, double[] w, double[] norms, double floor)
    {
        double total = w.Sum();
        var result = new double[x[0].Length];
        for (int j = 0; j < result.Length; j++)
        {
            double numerator = 0, denominator = 0;
            for (int k = 0; k < x.Length; k++)
            {
                double weight = w[k] / total / norms[k] * Math.Max(f[k][j], floor);
                numerator += weight * x[k][j];
                denominator += weight;
            }

            result[j] = numerator / denominator;
        }

        return result;
    }
}

/// <summary>An independent re-implementation of the DARE draw, written from its documented definition.</summary>
internal static class ReferenceSplitMix
{
    public static bool Keeps(ulong key, long element, double dropRate)
    {
        unchecked
        {
            ulong z = key + (ulong)element * 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            double draw = (z >> 40) / (double)(1 << 24);
            return draw >= Math.Round(dropRate * (1 << 24)) / (1 << 24);
        }
    }
}
