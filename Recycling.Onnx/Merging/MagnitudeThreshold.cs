using System.Buffers;

namespace Recycling.Onnx.Merging;

/// <summary>
/// TIES's trim threshold for one task vector, found by counting instead of sorting.
/// <para>
/// Semantics (the TIES authors' code: <c>kth = |τ|.kthvalue(int(M·(1−k)))</c>, keep <c>|τ| ≥ kth</c>): with M
/// entries and density k, r = ⌊M·(1−k)⌋; the threshold is the r-th smallest |τ| (1-based) and every entry with
/// |τ| ≥ threshold is kept, so ties at the threshold are all kept and at least M−r+1 entries survive. r = 0 (k = 1)
/// keeps everything. Magnitudes are compared as fp32 bit patterns with the sign cleared, which orders non-negative
/// floats exactly and puts NaN above +Inf (a NaN entry is always kept).
/// </para>
/// <para>
/// First a cheap sample (<see cref="AddSample"/>, about 1/64 of the entries, each weighted by the stretch it
/// stands for, histogrammed in <see cref="SampleBins"/> bins) estimates the bin of the threshold. One full pass then
/// counts, exactly, the entries below a window of <see cref="FineBins"/> bit patterns centred on the estimate and
/// histograms the few entries inside it (<see cref="WindowStart"/>): when the r-th smallest falls in the window (the usual case: the window spans ±1.5% of
/// the value, the sample's error is a small fraction of that on a large model), that pass gives the exact bit pattern.
/// Otherwise two more passes do a two-level radix selection: a coarse histogram of the top bits
/// (<see cref="CountsCoarse"/>: the exponent and 5 mantissa bits, 8192 bins, small enough for a kernel's per-thread
/// counts to stay in L1), which finds the bin of the r-th smallest, then that bin as the window. The estimate only
/// decides how many passes are read, never the result: every count used is exact and order-independent, so the
/// threshold does not depend on tensor order, threads or the sample. Thread-safe: several tensors may be counted
/// concurrently through the Add methods; the Complete methods end a pass once all its tensors were added.
/// </para>
/// </summary>
internal sealed class MagnitudeThreshold
{
    public const int CoarseShift = 18;
    public const int CoarseBins = 1 << (31 - CoarseShift);
    public const int FineBins = 1 << CoarseShift;

    /// <summary>A <see cref="WindowStart"/> meaning "no window this pass".</summary>
    public const long NoWindow = -1;

    /// <summary>The sample's histogram resolution: bits &gt;&gt; this, 1/8 of a window, so a window centred on the estimated
    /// bin covers it and 3.5 bins either side (and discrete magnitudes, as in 16-bit models, land in the right bin).</summary>
    public const int SampleShift = CoarseShift - 3;

    public const int SampleBins = 1 << (31 - SampleShift);

    /// <summary>Sampled runs of this many consecutive entries (16 KiB of fp32: one page fault maps it)...</summary>
    internal const int SampleBlock = 4096;

    /// <summary>...one per this many entries, at a pseudo-random place in each stretch: 1/64 of a large tensor.</summary>
    internal const int SampleStride = 64 * SampleBlock;

    private enum Stage { Sample, Window, Coarse, Refine, Done }

    private readonly double _density;
    private readonly bool _exact;
    private readonly Lock _lock = new();
    // Pooled and returned when their stage ends: one threshold per tensor and model (per-tensor TIES) made 2.5 MiB of
    // large-object garbage each, 240 MiB per merge of the 4 × 1 GiB bench, which the GC let pile up.
    private double[]? _sample = Rent<double>(SampleBins);
    private long[]? _coarse;
    private long[]? _fine;
    private long _elements;
    private long _below;
    private long _rank;
    private long _keep;
    private uint _windowStart;
    private Stage _stage;

    /// <param name="density">Fraction kept.</param>
    /// <param name="exact">
    /// mergekit's and PEFT's rule instead of the paper's: keep exactly ⌊density·M⌋ entries, so the threshold is the
    /// ⌊density·M⌋-th largest |τ| and <see cref="Excess"/> says how many entries equal to it must still be dropped.
    /// </param>
    public MagnitudeThreshold(double density, bool exact = false)
    {
        if (!(exact ? density >= 0 && density <= 1 : density > 0 && density <= 1))
        {
            throw new RecyclingException($"TIES density must be in {(exact ? "[0, 1]" : "(0, 1]")}, not {density}.");
        }

        _density = density;
        _exact = exact;
    }

    /// <summary>The threshold bits that keep nothing: above every magnitude, NaN included.</summary>
    public const uint KeepNone = HalfBits.MagnitudeMask + 1u;

    /// <summary>With the exact rule, how many of the entries at or above the threshold are too many (entries equal to it); 0 otherwise.</summary>
    public long Excess { get; private set; }

    /// <summary>How many entries equal the threshold (with the exact rule; so <c>AtThreshold − Excess</c> of them are kept).</summary>
    public long AtThreshold { get; private set; }

    /// <summary>The threshold as an fp32 bit pattern of |τ|; valid once <see cref="IsComplete"/>.</summary>
    public uint ThresholdBits { get; private set; }

    public bool IsComplete => _stage == Stage.Done;

    /// <summary>Whether the next counting pass must histogram the coarse bins (the estimate missed).</summary>
    public bool CountsCoarse => _stage == Stage.Coarse;

    /// <summary>Where the next counting pass's window of <see cref="FineBins"/> bit patterns starts, or <see cref="NoWindow"/>.</summary>
    public long WindowStart => _stage is Stage.Window or Stage.Refine ? _windowStart : NoWindow;

    /// <summary>Counting passes this threshold has needed so far (1 when the sample's estimate held).</summary>
    public int CountingPasses { get; private set; }

    /// <summary>
    /// Samples one tensor's task-vector magnitudes (model <paramref name="model"/>'s, DARE-masked when
    /// <paramref name="dare"/> is given): runs of <see cref="SampleBlock"/> entries, one per <see cref="SampleStride"/>
    /// (all of a tensor of up to a block), each entry weighted by the stretch it represents, so the weights sum to the
    /// tensor's size. Runs on the CPU whatever the kernels: it reads ~1/64 of the data, at places that depend only on
    /// <paramref name="tensorId"/> and the size.
    /// </summary>
    public unsafe void AddSample(TensorSource input, TensorSource baseline, DareMask? dare, int model, ulong tensorId,
        long offset = 0, long tensorLength = -1)
    {
        long length = baseline.Length;
        ulong key = dare?.KeyFor(model) ?? 0;
        float[] x = ArrayPool<float>.Shared.Rent(SampleBlock), b = ArrayPool<float>.Shared.Rent(SampleBlock);
        try
        {
            lock (_lock)
            {
                Expect(Stage.Sample);
                double[] sample = _sample!;
                foreach (var (absolute, count, weight) in SampleBlocks(tensorLength < 0 ? length : tensorLength, tensorId, offset, offset + length))
                {
                    long start = absolute - offset;
                    Decode(input, start, x.AsSpan(0, count));
                    Decode(baseline, start, b.AsSpan(0, count));
                    for (int i = 0; i < count; i++)
                    {
                        float delta = x[i] - b[i];
                        if (dare is { } mask)
                        {
                            delta *= DareMask.Keeps(key, start + i, mask.DropThreshold) ? mask.Scale : 0f;
                        }

                        sample[(BitConverter.SingleToUInt32Bits(delta) & HalfBits.MagnitudeMask) >> SampleShift] += weight;
                    }
                }

                _elements += length;
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(x);
            ArrayPool<float>.Shared.Return(b);
        }
    }

    /// <summary>
    /// The runs the sample reads in elements [<paramref name="from"/>, <paramref name="to"/>) of a tensor of
    /// <paramref name="tensorLength"/> elements (from a multiple of <see cref="SampleStride"/>): tensor-absolute start,
    /// count, and the weight of each entry. A tensor read in chunks samples exactly what it would whole.
    /// </summary>
    internal static IEnumerable<(long Start, int Count, double Weight)> SampleBlocks(long tensorLength, ulong tensorId, long from, long to)
    {
        if (from % SampleStride != 0)
        {
            throw new ArgumentException($"a sampled chunk must start at a multiple of {SampleStride} elements, not {from}", nameof(from));
        }

        for (long stretch = from; stretch < to; stretch += SampleStride)
        {
            long span = Math.Min(SampleStride, tensorLength - stretch);
            int count = (int)Math.Min(SampleBlock, span);
            long start = stretch + (long)(DareMask.Mix(tensorId ^ (ulong)stretch) % (ulong)(span - count + 1));
            yield return (start, count, (double)span / count);
        }
    }

    /// <summary>The sample's total weight so far: the number of entries it stands for.</summary>
    internal double SampledWeight => _sample is null ? 0 : Sum(_sample, SampleBins);

    /// <summary>Ends the sample: fixes r and centres the first window on the sample's estimate of the r-th smallest.</summary>
    public void CompleteSample()
    {
        Expect(Stage.Sample);
        double[] sample = _sample!;
        _sample = null;
        try
        {
            CompleteSample(sample);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(sample);
        }
    }

    private void CompleteSample(double[] sample)
    {
        _keep = (long)(_density * _elements);
        _rank = _exact ? _elements - _keep + 1 : (long)Math.Floor(_elements * (1.0 - _density));
        if (_exact && _keep == 0)
        {
            ThresholdBits = KeepNone;
            _stage = Stage.Done;
            return;
        }

        if (_rank <= 0 || (_exact && _rank == 1 && _density >= 1))
        {
            ThresholdBits = 0;
            _stage = Stage.Done;
            return;
        }

        double rank = _rank * (Sum(sample, SampleBins) / _elements), cumulative = 0;
        for (int bin = 0; bin < SampleBins; bin++)
        {
            cumulative += sample[bin];
            if (sample[bin] > 0 && cumulative >= rank)
            {
                long centre = ((long)bin << SampleShift) + (1L << (SampleShift - 1));
                _windowStart = (uint)Math.Clamp(centre - (FineBins / 2), 0, HalfBits.MagnitudeMask + 1L - FineBins);
                _stage = Stage.Window;
                return;
            }
        }

        _stage = Stage.Coarse; // nothing sampled to estimate from
    }

    /// <summary>
    /// Adds one tensor's counts from a pass: its coarse histogram when <see cref="CountsCoarse"/>, else how many entries
    /// fall below <see cref="WindowStart"/> and the histogram of those inside the window (index = bits − start).
    /// </summary>
    public void Add(ReadOnlySpan<long> coarse, long below, ReadOnlySpan<long> fine)
    {
        lock (_lock)
        {
            if (_stage == Stage.Coarse)
            {
                _coarse ??= new long[CoarseBins];
                for (int i = 0; i < CoarseBins; i++)
                {
                    _coarse[i] += coarse[i];
                }

                return;
            }

            Expect(Stage.Window, Stage.Refine);
            _fine ??= Rent<long>(FineBins);
            for (int i = 0; i < FineBins; i++)
            {
                _fine[i] += fine[i];
            }

            _below += below;
        }
    }

    /// <summary>Ends a counting pass: the threshold is known, or the next pass is set up (coarse, then the refined window).</summary>
    public void CompletePass()
    {
        CountingPasses++;
        if (_stage == Stage.Coarse)
        {
            long cumulative = 0, total = _coarse?.Sum() ?? 0;
            if (total != _elements)
            {
                throw Changed();
            }

            for (int bin = 0; bin < CoarseBins; bin++)
            {
                if (cumulative + _coarse![bin] >= _rank)
                {
                    _windowStart = (uint)bin << CoarseShift;
                    _coarse = null;
                    _stage = Stage.Refine;
                    return;
                }

                cumulative += _coarse[bin];
            }

            throw Changed();
        }

        Expect(Stage.Window, Stage.Refine);
        long found = _below;
        if (found < _rank)
        {
            for (int low = 0; low < FineBins; low++)
            {
                found += _fine?[low] ?? 0;
                if (found >= _rank)
                {
                    // found counts the entries ≤ the threshold; those above it are M − (found − at threshold).
                    Excess = _exact ? _elements - (found - (_fine?[low] ?? 0)) - _keep : 0;
                    AtThreshold = _fine?[low] ?? 0;
                    ThresholdBits = _windowStart + (uint)low;
                    _stage = Stage.Done;
                    ReturnFine();
                    return;
                }
            }
        }

        if (_stage == Stage.Refine)
        {
            throw Changed(); // the coarse pass put the r-th smallest in this window
        }

        ReturnFine();
        (_below, _stage) = (0, Stage.Coarse);
    }

    private void ReturnFine()
    {
        if (_fine is not null)
        {
            ArrayPool<long>.Shared.Return(_fine);
            _fine = null;
        }
    }

    /// <summary>A cleared pooled array of at least <paramref name="length"/> elements (only the first length are used).</summary>
    private static T[] Rent<T>(int length)
    {
        var array = ArrayPool<T>.Shared.Rent(length);
        Array.Clear(array, 0, length);
        return array;
    }

    /// <summary>The first <paramref name="length"/> entries summed in index order, as Enumerable.Sum summed the exact-size array.</summary>
    private static double Sum(double[] values, int length)
    {
        double sum = 0;
        for (var i = 0; i < length; i++)
        {
            sum += values[i];
        }

        return sum;
    }

    private static RecyclingException Changed() => new(
        "TIES threshold: two counting passes over the same task vectors disagree; the inputs changed while merging.");

    private void Expect(Stage stage, Stage? or = null)
    {
        if (_stage != stage && _stage != or)
        {
            throw new InvalidOperationException($"TIES threshold is at stage {_stage}, not {stage}.");
        }
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
