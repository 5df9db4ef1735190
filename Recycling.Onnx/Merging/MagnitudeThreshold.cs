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
/// The coarse level histograms the top bits (bits &gt;&gt; <see cref="CoarseShift"/>: the exponent and 5 mantissa bits,
/// 8192 bins, so a kernel's per-thread counts stay in L1) of every |τ|; it tells which bin holds the r-th smallest. The
/// fine level histograms the low 18 bits of the entries in that bin only (kernels collect the few matching entries
/// instead of clearing a large table); its cumulative counts give the exact bit pattern.
/// </para>
/// <para>
/// To read the inputs once for both levels, a cheap sample first guesses the bin (<see cref="AddSample"/>, about 1/64 of
/// the entries, <see cref="SampleMagnitudes"/>); the full pass then counts every coarse bin and, at the same time, the
/// fine bits of the guessed bin (<see cref="GuessBin"/>). When the guess was right (the usual case: a bin holds
/// about 3% of the magnitude range, the sample's rank error a small fraction of that) the threshold is known after
/// that pass; otherwise <see cref="CompleteCoarse"/> asks for a fine pass over <see cref="RefineBin"/>. The guess only
/// decides how many passes are read, never the result: every count used is exact and order-independent, so the
/// threshold does not depend on tensor order, threads or the sample. Thread-safe: several tensors may be counted
/// concurrently through the Add methods.
/// </para>
/// </summary>
internal sealed class MagnitudeThreshold
{
    public const int CoarseShift = 18;
    public const int CoarseBins = 1 << (31 - CoarseShift);
    public const int FineBins = 1 << CoarseShift;
    public const uint FineMask = FineBins - 1;

    /// <summary>No fine counting for a model (a <see cref="IMergeKernels.CountMagnitudes"/> fine bin).</summary>
    public const int NoBin = -1;

    /// <summary>Sampled runs of this many consecutive entries (16 KiB of fp32: one page fault maps it)...</summary>
    internal const int SampleBlock = 4096;

    /// <summary>...one per this many entries, at a pseudo-random place in each stretch: 1/64 of a large tensor.</summary>
    internal const int SampleStride = 64 * SampleBlock;

    private readonly double _density;
    private readonly double[] _sample = new double[CoarseBins];
    private readonly long[] _coarse = new long[CoarseBins];
    private long[]? _fine;
    private readonly Lock _lock = new();
    private long _rankInBin;
    private bool _sampled;

    public MagnitudeThreshold(double density)
    {
        if (!(density > 0 && density <= 1))
        {
            throw new RecyclingException($"TIES density must be in (0, 1], not {density}.");
        }

        _density = density;
    }

    /// <summary>The coarse bin the full pass also counts fine bits of, once <see cref="CompleteSample"/> ran; else <see cref="NoBin"/>.</summary>
    public int GuessBin { get; private set; } = NoBin;

    /// <summary>The coarse bin a fine pass must count, once <see cref="CompleteCoarse"/> said one is needed.</summary>
    public int RefineBin { get; private set; } = NoBin;

    /// <summary>The threshold as an fp32 bit pattern of |τ|; valid once <see cref="IsComplete"/>.</summary>
    public uint ThresholdBits { get; private set; }

    public bool IsComplete { get; private set; }

    /// <summary>Number of entries counted by the coarse pass (M).</summary>
    public long Total { get; private set; }

    /// <summary>Adds a sample's coarse counts, each entry weighted by how many entries it stands for.</summary>
    public void AddSample(ReadOnlySpan<double> weightedCounts)
    {
        lock (_lock)
        {
            for (int i = 0; i < CoarseBins; i++)
            {
                _sample[i] += weightedCounts[i];
            }

            _sampled = true;
        }
    }

    /// <summary>Ends the sample: sets <see cref="GuessBin"/> to the bin the sample puts the r-th smallest in.</summary>
    public void CompleteSample()
    {
        double total = 0;
        foreach (double count in _sample)
        {
            total += count;
        }

        double rank = Math.Floor(total * (1.0 - _density));
        GuessBin = NoBin;
        if (!_sampled || rank <= 0)
        {
            return;
        }

        double cumulative = 0;
        for (int bin = 0; bin < CoarseBins; bin++)
        {
            cumulative += _sample[bin];
            if (cumulative >= rank)
            {
                GuessBin = bin;
                return;
            }
        }
    }

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

    /// <summary>Adds fine counts of <see cref="GuessBin"/> (during the coarse pass) or of <see cref="RefineBin"/> (in the fine pass).</summary>
    public void AddFine(ReadOnlySpan<long> counts)
    {
        lock (_lock)
        {
            _fine ??= new long[FineBins];
            for (int i = 0; i < FineBins; i++)
            {
                _fine[i] += counts[i];
            }
        }
    }

    /// <summary>
    /// Ends the coarse pass; returns true when a fine pass over <see cref="RefineBin"/> is needed, false when the
    /// threshold is known (nothing to trim, or the guessed bin's fine counts, gathered in the same pass, hold it).
    /// </summary>
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
                if (bin == GuessBin)
                {
                    CompleteFine();
                    return false;
                }

                _fine = null; // counts of a wrongly guessed bin
                return true;
            }

            cumulative += _coarse[bin];
        }

        throw new InvalidOperationException("rank beyond the histogram total");
    }

    /// <summary>Ends the fine pass and fixes <see cref="ThresholdBits"/>.</summary>
    public void CompleteFine()
    {
        if (RefineBin < 0)
        {
            throw new InvalidOperationException("CompleteCoarse did not ask for a fine pass.");
        }

        long cumulative = 0;
        for (int low = 0; low < FineBins; low++)
        {
            cumulative += _fine?[low] ?? 0;
            if (cumulative >= _rankInBin)
            {
                ThresholdBits = ((uint)RefineBin << CoarseShift) | (uint)low;
                IsComplete = true;
                return;
            }
        }

        throw new RecyclingException(
            "TIES threshold: the fine counting pass saw fewer entries than the coarse one; the inputs changed between passes.");
    }

    /// <summary>
    /// Samples one tensor's task-vector magnitudes for <see cref="AddSample"/>: per model, coarse counts of a few runs
    /// of <see cref="SampleBlock"/> entries (all of a tensor of up to that size), each weighted by the stretch it
    /// represents, so the weights sum to the tensor's size. Runs on the CPU whatever the kernels: it reads ~1/64 of the
    /// data, and the places it reads depend only on <paramref name="tensorId"/> and the size.
    /// </summary>
    public static unsafe double[][] SampleMagnitudes(ReadOnlySpan<TensorSource> inputs, TensorSource baseline,
        DareMask? dare, ulong tensorId)
    {
        long length = baseline.Length;
        var counts = new double[inputs.Length][];
        var x = new float[SampleBlock];
        var b = new float[SampleBlock];
        for (int k = 0; k < inputs.Length; k++)
        {
            counts[k] = new double[CoarseBins];
            ulong key = dare?.KeyFor(k) ?? 0;
            for (long stretch = 0; stretch < length; stretch += SampleStride)
            {
                long span = Math.Min(SampleStride, length - stretch);
                int count = (int)Math.Min(SampleBlock, span);
                long start = stretch + (long)(DareMask.Mix(tensorId ^ (ulong)stretch) % (ulong)(span - count + 1));
                Decode(inputs[k], start, x.AsSpan(0, count));
                Decode(baseline, start, b.AsSpan(0, count));
                double weight = (double)span / count;
                for (int i = 0; i < count; i++)
                {
                    float delta = x[i] - b[i];
                    if (dare is { } mask)
                    {
                        delta *= DareMask.Keeps(key, start + i, mask.DropThreshold) ? mask.Scale : 0f;
                    }

                    counts[k][(BitConverter.SingleToUInt32Bits(delta) & HalfBits.MagnitudeMask) >> CoarseShift] += weight;
                }
            }
        }

        return counts;
    }

    /// <summary>Widens [start, start + destination.Length) of <paramref name="source"/>, then unmaps what reading it mapped.</summary>
    private static unsafe void Decode(TensorSource source, long start, Span<float> destination)
    {
        int size = TensorSource.ElementSize(source.DataType);
        byte* block = source.Data + (start * size);
        long length = (long)destination.Length * size;
        ElementCodec.Decode(new ReadOnlySpan<byte>(block, (int)length), source.DataType, destination);
        if (source.IsMapped)
        {
            // A page fault maps up to 64 KiB of cached file around the block (Linux's fault-around), 4× what a block
            // reads: without this, the sample of a large tensor would keep a quarter of it resident.
            const long window = 64 * 1024;
            long tensorEnd = (long)source.Data + (source.Length * size);
            long from = Math.Max((long)source.Data, (long)block / window * window);
            long to = Math.Min(tensorEnd, ((long)block + length + window - 1) / window * window);
            IO.MappedFile.ReleaseResidentPages((byte*)from, to - from);
        }
    }
}
