namespace Recycling.Onnx.Merging;

/// <summary>
/// TIES's trim threshold for one task vector, found by a two-level radix selection instead of a sort.
/// <para>
/// Semantics (the TIES authors' code: <c>kth = |τ|.kthvalue(int(M·(1−k)))</c>, keep <c>|τ| ≥ kth</c>): with M
/// entries and density k, r = ⌊M·(1−k)⌋; the threshold is the r-th smallest |τ| (1-based) and every entry with
/// |τ| ≥ threshold is kept, so ties at the threshold are all kept and at least M−r+1 entries survive. r = 0 (k = 1)
/// keeps everything. Magnitudes are compared as fp32 bit patterns with the sign cleared, which orders non-negative
/// floats exactly and puts NaN above +Inf (a NaN entry is always kept).
/// </para>
/// <para>
/// Pass 1 (<see cref="AddCoarse"/>) histograms the top bits (bits &gt;&gt; <see cref="CoarseShift"/>: the exponent and 5
/// mantissa bits, 8192 bins, so a kernel's per-thread counts stay in L1) of every |τ| bit pattern; after it, the bin
/// holding the r-th smallest is known. Pass 2 (<see cref="AddFine"/>) histograms the low 18 bits of the entries in that
/// bin only (sparse: kernels collect the few matching entries instead of clearing a large table); its cumulative counts give the exact bit pattern. Both passes only count,
/// and counting is order-independent, so the threshold does not depend on tensor order or threads.
/// Thread-safe: several tensors may be counted concurrently through <see cref="AddCoarse"/>/<see cref="AddFine"/>.
/// </para>
/// </summary>
internal sealed class MagnitudeThreshold
{
    public const int CoarseShift = 18;
    public const int CoarseBins = 1 << (31 - CoarseShift);
    public const int FineBins = 1 << CoarseShift;
    public const uint FineMask = FineBins - 1;

    private readonly double _density;
    private readonly long[] _coarse = new long[CoarseBins];
    private readonly long[] _fine = new long[FineBins];
    private readonly Lock _lock = new();
    private long _rankInBin;

    public MagnitudeThreshold(double density)
    {
        if (!(density > 0 && density <= 1))
        {
            throw new RecyclingException($"TIES density must be in (0, 1], not {density}.");
        }

        _density = density;
    }

    /// <summary>The coarse bin the fine pass must count, once <see cref="CompleteCoarse"/> said one is needed.</summary>
    public int RefineBin { get; private set; } = -1;

    /// <summary>The threshold as an fp32 bit pattern of |τ|; valid once <see cref="IsComplete"/>.</summary>
    public uint ThresholdBits { get; private set; }

    public bool IsComplete { get; private set; }

    /// <summary>Number of entries counted in pass 1 (M).</summary>
    public long Total { get; private set; }

    public void AddCoarse(ReadOnlySpan<long> counts)
    {
        lock (_lock)
        {
            for (int i = 0; i < CoarseBins; i++)
            {
                _coarse[i] += counts[i];
            }
        }
    }

    public void AddFine(ReadOnlySpan<long> counts)
    {
        lock (_lock)
        {
            for (int i = 0; i < FineBins; i++)
            {
                _fine[i] += counts[i];
            }
        }
    }

    /// <summary>Ends pass 1; returns true when pass 2 is needed (false when the threshold is already known).</summary>
    public bool CompleteCoarse()
    {
        long total = 0;
        foreach (long count in _coarse)
        {
            total += count;
        }

        Total = total;
        long rank = (long)Math.Floor(total * (1.0 - _density));
        if (rank <= 0)
        {
            ThresholdBits = 0;
            IsComplete = true;
            return false;
        }

        long cumulative = 0;
        for (int bin = 0; bin < CoarseBins; bin++)
        {
            if (cumulative + _coarse[bin] >= rank)
            {
                RefineBin = bin;
                _rankInBin = rank - cumulative;
                return true;
            }

            cumulative += _coarse[bin];
        }

        throw new InvalidOperationException("rank beyond the histogram total");
    }

    /// <summary>Ends pass 2 and fixes <see cref="ThresholdBits"/>.</summary>
    public void CompleteFine()
    {
        if (RefineBin < 0)
        {
            throw new InvalidOperationException("CompleteCoarse did not ask for a fine pass.");
        }

        long cumulative = 0;
        for (int low = 0; low < FineBins; low++)
        {
            cumulative += _fine[low];
            if (cumulative >= _rankInBin)
            {
                ThresholdBits = ((uint)RefineBin << CoarseShift) | (uint)low;
                IsComplete = true;
                return;
            }
        }

        throw new RecyclingException(
            "TIES threshold: the second counting pass saw fewer entries than the first; the inputs changed between passes.");
    }
}
