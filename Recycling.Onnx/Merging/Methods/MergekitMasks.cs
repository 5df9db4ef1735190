namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// The sparsifiers of mergekit's sparsify.py that <see cref="Sparsify"/> does not hold (breadcrumbs' outliers, DELLA's
/// MAGPRUNE) on one whole task vector, as keep masks, and the top-range selection they and SCE use. Orders are by
/// descending |τ|, equal magnitudes by ascending element index (the lower index ranks as larger, as
/// <see cref="Sparsify.KeepLargest"/> keeps them), so every choice is deterministic (torch's sorts leave ties unspecified). Magnitudes compare by their fp32 bit patterns (NaN above infinity).
/// DELLA draws from <see cref="DareMask"/>'s counter-based generator: element e of model i is kept iff its 24-bit draw
/// is ≥ round((1 − p)·2^24), p its keep probability, so reruns, chunkings and devices agree.
/// </summary>
internal static class MergekitMasks
{
    /// <summary>
    /// Breadcrumbs (mergekit's <c>magnitude_outliers</c>): drops the int(γ·n) largest |τ| and the smallest, keeping
    /// int(d·n). As in mergekit (a Python slice [n_bot:-n_top]), a tensor where int(γ·n) is 0 keeps nothing.
    /// </summary>
    public static bool[] Outliers(ReadOnlySpan<float> tau, double density, double gamma)
    {
        var (from, to) = OutlierRange(tau.Length, density, gamma);
        return from >= to ? new bool[tau.Length] : TopRange(MagnitudeKeys(tau), from, to);
    }

    /// <summary>
    /// The positions [from, to) of the descending order that breadcrumbs keeps in a vector of <paramref name="n"/>
    /// entries; from ≥ to when it keeps nothing.
    /// </summary>
    public static (long From, long To) OutlierRange(long n, double density, double gamma)
    {
        long target = (long)(density * n);
        long top = (long)(gamma * n);
        long bottom = n - target - top;
        if (bottom < 0)
        {
            top += bottom;
            bottom = 0;
        }

        return top <= 0 ? (0, 0) : (top, Math.Min(n, n - bottom));
    }

    /// <summary>
    /// DELLA's MAGPRUNE (mergekit's <c>della_magprune</c>): entry e is kept with probability
    /// pₑ = (d − ε) + 2ε·(rank − 1)/(m − 1), its magnitude rank among the m entries of its fiber along axis 1 (the
    /// whole vector for a 1-D tensor; mergekit ranks along torch's dim 1). A fiber of one entry keeps with probability d.
    /// <paramref name="probabilities"/> receives pₑ (for the 1/p rescale).
    /// </summary>
    public static bool[] Della(ReadOnlySpan<float> tau, IReadOnlyList<long> shape, double density, double epsilon, ulong key,
        Span<double> probabilities)
    {
        int n = tau.Length;
        if (density <= 0)
        {
            probabilities.Clear();
            return new bool[n];
        }

        // Fibers along axis 1: element (outer, r, inner) with r in [0, m).
        long m = shape.Count < 2 ? n : shape[1];
        long inner = shape.Count < 2 ? 1 : n / Math.Max(1, shape[0] * shape[1]);
        long outer = m == 0 ? 0 : n / (m * inner);
        var order = new ulong[m];
        var keep = new bool[n];
        for (long o = 0; o < outer; o++)
        {
            for (long i = 0; i < inner; i++)
            {
                long start = o * m * inner + i;
                for (int r = 0; r < m; r++)
                {
                    order[r] = RankKey(tau[(int)(start + r * inner)], r);
                }

                Array.Sort(order);
                for (int position = 0; position < m; position++)
                {
                    int e = (int)(start + ((int)(uint)order[position] * inner));
                    double normalised = m > 1 ? (double)(m - 1 - position) / (m - 1) : 0.5;
                    double p = (density - epsilon) + normalised * 2 * epsilon;
                    probabilities[e] = p;
                    keep[e] = DareMask.Keeps(key, e, DropThreshold(1.0 - p));
                }
            }
        }

        return keep;
    }

    /// <summary>
    /// The descending order as one primitive key: ascending keys put larger magnitudes first (the complemented magnitude
    /// bits in the high half) and, among equal magnitudes, lower indices first (the index in the low half).
    /// </summary>
    public static ulong RankKey(float value, int index) => ((ulong)(HalfBits.MagnitudeMask - Bits(value)) << 32) | (uint)index;

    /// <summary>round(drop·2^24), half to even: a 24-bit draw below it drops the entry (2^24 drops everything).</summary>
    public static uint DropThreshold(double drop) => (uint)Math.Round(Math.Clamp(drop, 0, 1) * (1 << 24));

    /// <summary>The keep mask of the entries at positions [<paramref name="from"/>, <paramref name="to"/>) of the descending order.</summary>
    public static bool[] TopRange(uint[] keys, long from, long to)
    {
        int n = keys.Length;
        var keep = new bool[n];
        to = Math.Min(to, n);
        if (from >= to || from >= n || to <= 0)
        {
            return keep;
        }

        // An entry of key K that is the j-th (by index) of those equal to K sits at position #(keys > K) + j.
        uint first = Select(keys, n - 1 - from), last = Select(keys, n - 1 - to + 1);
        long aboveFirst = 0, aboveLast = 0;
        foreach (uint k in keys)
        {
            aboveFirst += k > first ? 1 : 0;
            aboveLast += k > last ? 1 : 0;
        }

        long seenFirst = 0, seenLast = 0;
        for (int e = 0; e < n; e++)
        {
            uint k = keys[e];
            long position = k == first ? aboveFirst + seenFirst++ : k == last ? aboveLast + seenLast++ : -1;
            keep[e] = position >= 0 ? position >= from && position < to : k < first && k > last;
        }

        return keep;
    }

    /// <summary>|x| as ordered bits (NaN above infinity).</summary>
    public static uint Bits(float x) => BitConverter.SingleToUInt32Bits(x) & 0x7FFF_FFFFu;

    public static uint[] MagnitudeKeys(ReadOnlySpan<float> tau)
    {
        var keys = new uint[tau.Length];
        for (int e = 0; e < keys.Length; e++)
        {
            keys[e] = Bits(tau[e]);
        }

        return keys;
    }

    /// <summary>The key of rank <paramref name="rank"/> in ascending order: two 16-bit histogram passes, O(n).</summary>
    private static uint Select(uint[] keys, long rank)
    {
        var counts = new long[1 << 16];
        foreach (uint k in keys)
        {
            counts[k >> 16]++;
        }

        long below = 0;
        int high = 0;
        while (below + counts[high] <= rank)
        {
            below += counts[high++];
        }

        Array.Clear(counts);
        foreach (uint k in keys)
        {
            if (k >> 16 == (uint)high)
            {
                counts[k & 0xFFFF]++;
            }
        }

        int low = 0;
        while (below + counts[low] <= rank)
        {
            below += counts[low++];
        }

        return ((uint)high << 16) | (uint)low;
    }
}
