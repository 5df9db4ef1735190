namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// The sparsifiers of mergekit's task-arithmetic family over one task vector (a whole tensor in fp32), each followed by
/// <see cref="Rescale"/>. Density ≥ 1 leaves the vector untouched (no rescale), as mergekit does.
/// </summary>
internal static class Sparsify
{
    /// <summary>
    /// Keeps exactly ⌊density·M⌋ entries of largest magnitude (mergekit's <c>magnitude</c>, PEFT's <c>prune</c>), zeroing
    /// the rest; among equal magnitudes at the cut the lower indices are kept (mergekit's argsort leaves that order
    /// unspecified). ⌊density·M⌋ = 0 keeps none (PEFT; mergekit refuses). NaN counts as the largest magnitude.
    /// </summary>
    public static void Magnitude(Span<float> tau, double density, double rescale = RescaleModes.None)
    {
        if (density >= 1)
        {
            return;
        }

        long keep = (long)(density * tau.Length);
        Span<float> original = rescale == RescaleModes.None ? default : tau.ToArray();
        KeepLargest(tau, keep);
        Rescale(original, tau, density, rescale);
    }

    /// <summary>Zeroes all but the <paramref name="keep"/> entries of largest magnitude (ties at the cut: lower indices kept).</summary>
    public static void KeepLargest(Span<float> tau, long keep)
    {
        if (keep >= tau.Length)
        {
            return;
        }

        if (keep <= 0)
        {
            tau.Clear();
            return;
        }

        uint threshold = KthLargestBits(tau, keep);
        long greater = 0;
        foreach (float v in tau)
        {
            greater += MagnitudeBits(v) > threshold ? 1 : 0;
        }

        long atThreshold = keep - greater; // entries equal to the threshold still kept, in index order
        for (int i = 0; i < tau.Length; i++)
        {
            uint bits = MagnitudeBits(tau[i]);
            if (bits < threshold || (bits == threshold && atThreshold-- <= 0))
            {
                tau[i] = 0;
            }
        }
    }

    /// <summary>The fp32 magnitude bit pattern (sign cleared) of the <paramref name="k"/>-th largest |entry| (1-based).</summary>
    public static uint KthLargestBits(ReadOnlySpan<float> values, long k)
    {
        uint[] bits = new uint[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            bits[i] = MagnitudeBits(values[i]);
        }

        // Selection by sorting: O(M log M), on the generic path only (the kernels count instead, MagnitudeThreshold).
        Array.Sort(bits);
        return bits[values.Length - (int)k];
    }

    public static uint MagnitudeBits(float v) => BitConverter.SingleToUInt32Bits(v) & HalfBits.MagnitudeMask;

    /// <summary>
    /// Drops each entry independently with probability 1 − <paramref name="density"/> (mergekit's <c>random</c>, DARE) by
    /// our counter-based mask of (seed, tensor, model, element), so reruns, chunking, CPU and GPU agree.
    /// </summary>
    public static void Random(Span<float> tau, double density, double rescale, DareMask mask, int model)
    {
        if (density >= 1)
        {
            return;
        }

        Span<float> original = rescale == RescaleModes.None ? default : tau.ToArray();
        ulong key = mask.KeyFor(model);
        for (int i = 0; i < tau.Length; i++)
        {
            if (!DareMask.Keeps(key, i, mask.DropThreshold))
            {
                tau[i] = 0;
            }
        }

        Rescale(original, tau, density, rescale);
    }

    /// <summary>
    /// Rescales the kept entries: <see cref="RescaleModes.L1"/> to the L1 norm of <paramref name="original"/> (mergekit:
    /// unchanged when either norm is below 1e-7), <see cref="RescaleModes.Inverse"/> by 1/density (DARE's paper, PEFT).
    /// </summary>
    public static void Rescale(ReadOnlySpan<float> original, Span<float> kept, double density, double rescale)
    {
        if (rescale == RescaleModes.Inverse)
        {
            float d = (float)density;
            for (int i = 0; i < kept.Length; i++)
            {
                kept[i] /= d;
            }
        }
        else if (rescale == RescaleModes.L1)
        {
            float factor = L1Factor(L1(original), L1(kept));
            for (int i = 0; i < kept.Length; i++)
            {
                kept[i] *= factor;
            }
        }
    }

    /// <summary>mergekit's L1 rescale factor before/after, 1 when either is below 1e-7 (computed in fp32 there, fp64 sums here).</summary>
    public static float L1Factor(double before, double after) =>
        before < 1e-7 || after < 1e-7 ? 1f : (float)before / (float)after;

    /// <summary>Σ |v| in fp64, summed as every path sums it (<see cref="L1Lanes"/>).</summary>
    public static double L1(ReadOnlySpan<float> values) => L1Lanes.Of(values);
}

/// <summary>
/// mergekit's combination of weighted, sparsified task vectors (its GeneralizedTaskArithmetic step): optional sign
/// consensus, sum, optional normalisation by the weights that contributed, λ.
/// </summary>
internal static class Combine
{
    /// <summary>How an element's sign is elected before the disjoint sum.</summary>
    public enum Consensus
    {
        /// <summary>No election: every entry counts.</summary>
        None,

        /// <summary>TIES: the sign of Σ wᵢτᵢ (zero counts as +); entries of the other sign, and zeros, are dropped.</summary>
        Sum,

        /// <summary>The sign of Σ sign(wᵢτᵢ) (zero counts as +).</summary>
        Count,
    }

    /// <summary>
    /// output = base + λ·m, m = Σ wᵢτᵢ·maskᵢ, divided by Σ wᵢ·maskᵢ when <paramref name="normalize"/> (a zero divisor
    /// counts as 1; without consensus a divisor of magnitude below 1e-8 does), maskᵢ the consensus (all 1 without one).
    /// <paramref name="tau"/> holds the task vectors; accumulation in fp32 in model order, as mergekit's torch code.
    /// </summary>
    public static void TaskVectors(float[][] tau, ReadOnlySpan<double> weights, ReadOnlySpan<float> baseline, Consensus consensus,
        bool normalize, double lambda, Span<float> output) =>
        TaskVectors(tau, weights, baseline, consensus, normalize, lambda, output, 0, output.Length);

    /// <summary>As above for elements [<paramref name="start"/>, start + <paramref name="count"/>) only (one block of a chunk).</summary>
    public static void TaskVectors(float[][] tau, ReadOnlySpan<double> weights, ReadOnlySpan<float> baseline, Consensus consensus,
        bool normalize, double lambda, Span<float> output, int start, int count)
    {
        int n = tau.Length;
        Span<float> w = stackalloc float[n];
        for (int k = 0; k < n; k++)
        {
            w[k] = (float)weights[k];
        }

        float l = (float)lambda;
        for (int e = start; e < start + count; e++)
        {
            float mixed = 0, divisor = 0;
            if (consensus == Consensus.None)
            {
                for (int k = 0; k < n; k++)
                {
                    mixed += tau[k][e] * w[k];
                    divisor += w[k];
                }

                if (MathF.Abs(divisor) < 1e-8f)
                {
                    divisor = 1;
                }
            }
            else
            {
                float election = 0;
                for (int k = 0; k < n; k++)
                {
                    float weighted = tau[k][e] * w[k];
                    election += consensus == Consensus.Sum ? weighted : Sign(weighted);
                }

                float majority = election >= 0 ? 1 : -1;
                for (int k = 0; k < n; k++)
                {
                    float weighted = tau[k][e] * w[k];
                    if (Sign(weighted) == majority)
                    {
                        mixed += weighted;
                        divisor += w[k];
                    }
                    else if (float.IsNaN(weighted))
                    {
                        mixed = float.NaN;
                    }
                }

                if (divisor == 0)
                {
                    divisor = 1;
                }
            }

            if (normalize)
            {
                mixed /= divisor;
            }

            output[e] = baseline[e] + (l * mixed);
        }
    }

    /// <summary>torch.sign without NaN: 1, −1, or 0 (zero and NaN).</summary>
    private static float Sign(float v) => v > 0 ? 1 : v < 0 ? -1 : 0;
}
