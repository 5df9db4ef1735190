using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Recycling.Onnx.Merging;

/// <summary>
/// CPU implementation of <see cref="IMergeKernels"/>: each tensor is cut into fixed chunks of
/// <see cref="ChunkElements"/> elements (run in parallel when there are several) and each chunk into blocks of
/// <see cref="BlockElements"/>; a block of every float16/bfloat16 input is widened into an L1/L2-resident scratch
/// row (float32 inputs are read in place), then one fused pass computes the block's output, so every input byte is
/// read from memory once. Chunk boundaries do not depend on the thread count and elementwise results do not depend
/// on chunking or on the SIMD path; reductions (Gram, histograms) combine per-chunk partials in chunk order, so every
/// result is bit-identical for 1 or many threads.
/// </summary>
internal sealed unsafe class CpuMergeKernels : IMergeKernels
{
    public const int BlockElements = 1024;

    /// <summary>Scratch rows are padded by a cache line so rows read together do not alias at 4 KiB strides.</summary>
    private const int RowStride = BlockElements + 16;
    public const int DefaultChunkElements = 1 << 18;

    public CpuMergeKernels() : this(SimdPaths.Default)
    {
    }

    /// <param name="path">SIMD width (must be available: see <see cref="SimdPaths.Available"/>).</param>
    /// <param name="threads">Most threads one tensor may use; 0 means <see cref="Environment.ProcessorCount"/>.</param>
    /// <param name="chunkElements">Elements per parallel work item, a multiple of <see cref="BlockElements"/>.</param>
    public CpuMergeKernels(SimdPath path, int threads = 0, int chunkElements = DefaultChunkElements)
    {
        if (!SimdPaths.IsAvailable(path))
        {
            throw new RecyclingException($"SIMD path {path} is not accelerated on this machine.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        if (chunkElements <= 0 || chunkElements % BlockElements != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(chunkElements), $"must be a positive multiple of {BlockElements}");
        }

        Path = path;
        Threads = threads == 0 ? Environment.ProcessorCount : threads;
        ChunkElements = chunkElements;
    }

    public SimdPath Path { get; }

    public int Threads { get; }

    public int ChunkElements { get; }

    public string Name => $"cpu/{Path} x{Threads}";

    public void Dispose()
    {
    }

    public void WeightedSum(ReadOnlySpan<TensorSource> inputs, ReadOnlySpan<float> weights, TensorSource? baseline,
        DareMask? dare, Span<float> output)
    {
        Check.WeightedSumArguments(inputs, weights.Length, baseline, dare, output.Length);

        ulong* keys = stackalloc ulong[inputs.Length];
        DareMask mask = FillDareKeys(dare, keys, inputs.Length);

        byte** bits = stackalloc byte*[inputs.Length];
        var pins = PinRecorded(dare, inputs.Length, output.Length, bits);
        try
        {
            fixed (float* w = weights)
            fixed (float* o = output)
            {
                var kernel = new WeightedSumKernel
                {
                    Weights = w,
                    Output = o,
                    HasBase = baseline is not null,
                    DareKeys = dare is null ? null : keys,
                    DareBits = pins.Length == 0 ? null : bits,
                    DareBitOffset = mask.ElementOffset,
                    DropThreshold = mask.DropThreshold,
                    Scale = mask.Scale,
                };
                Run(kernel, new Sources(inputs, baseline, default), output.Length, dare is null ? 0 : inputs.Length);
            }
        }
        finally
        {
            Unpin(pins);
        }
    }

    public void Ties(ReadOnlySpan<TensorSource> inputs, TensorSource baseline, ReadOnlySpan<uint> thresholdBits,
        float lambda, DareMask? dare, Span<float> output, TiesSigns? signs = null)
    {
        Check.Inputs(inputs, baseline, output.Length);
        Check.SameCount(thresholdBits.Length, inputs.Length, "thresholds");
        ulong* keys = stackalloc ulong[inputs.Length];
        DareMask mask = FillDareKeys(dare, keys, inputs.Length);

        var tally = signs ?? new TiesSigns();
        byte** bits = stackalloc byte*[inputs.Length];
        var pins = PinRecorded(dare, inputs.Length, output.Length, bits);
        try
        {
            fixed (uint* thresholds = thresholdBits)
            fixed (float* o = output)
            {
                var kernel = new TiesKernel
                {
                    Thresholds = thresholds,
                    Lambda = lambda,
                    Output = o,
                    DareKeys = dare is null ? null : keys,
                    DareBits = pins.Length == 0 ? null : bits,
                    DareBitOffset = mask.ElementOffset,
                    DropThreshold = mask.DropThreshold,
                    Scale = mask.Scale,
                    Tally = tally,
                };
                Run(kernel, new Sources(inputs, baseline, default), output.Length, dare is null ? 0 : inputs.Length);
            }
        }
        finally
        {
            Unpin(pins);
        }

        if (signs is null && tally.Majority < 0)
        {
            foreach ((long index, float value) in tally.Patches)
            {
                output[(int)index] = value;
            }
        }
    }

    public void Fisher(ReadOnlySpan<TensorSource> inputs, ReadOnlySpan<TensorSource> fishers,
        ReadOnlySpan<float> coefficients, float floor, Span<float> output)
    {
        Check.Inputs(inputs, null, output.Length);
        Check.Inputs(fishers, null, output.Length);
        Check.SameCount(fishers.Length, inputs.Length, "Fisher tensors");
        Check.SameCount(coefficients.Length, inputs.Length, "coefficients");
        fixed (float* c = coefficients)
        fixed (float* o = output)
        {
            var kernel = new FisherKernel { Coefficients = c, Floor = floor, Output = o };
            Run(kernel, new Sources(inputs, null, fishers), output.Length, 0);
        }
    }

    public void Gram(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, Span<double> gram)
    {
        long length = inputs.Length == 0 ? 0 : inputs[0].Length;
        Check.Inputs(inputs, baseline, length);
        int n = inputs.Length;
        Check.SameCount(gram.Length, n * n, "Gram cells (N×N)");
        long chunks = ChunkCount(length);
        double[] partials = new double[chunks * n * n];
        fixed (double* p = partials)
        {
            var kernel = new GramKernel { Partials = p, Count = n, HasBase = baseline is not null };
            Run(kernel, new Sources(inputs, baseline, default), length, baseline is null ? 0 : n);
        }

        gram.Clear();
        for (long c = 0; c < chunks; c++)
        {
            for (int cell = 0; cell < n * n; cell++)
            {
                gram[cell] += partials[c * n * n + cell];
            }
        }

        for (int a = 0; a < n; a++)
        {
            for (int b = 0; b < a; b++)
            {
                gram[a * n + b] = gram[b * n + a];
            }
        }
    }

    public void CountMagnitudes(ReadOnlySpan<TensorSource> inputs, TensorSource baseline, DareMask? dare,
        ReadOnlySpan<long> windowStarts, long[][] coarse, long[][] fine, long[] below)
    {
        Check.Inputs(inputs, baseline, baseline.Length);
        Check.CountArguments(inputs.Length, windowStarts, coarse, fine, below);
        ulong* keys = stackalloc ulong[inputs.Length];
        DareMask mask = FillDareKeys(dare, keys, inputs.Length);

        fixed (long* w = windowStarts)
        {
            var kernel = new CountKernel
            {
                Coarse = coarse,
                Fine = fine,
                Below = below,
                WindowStarts = w,
                DareKeys = dare is null ? null : keys,
                DropThreshold = mask.DropThreshold,
                Scale = mask.Scale,
            };
            Run(kernel, new Sources(inputs, baseline, default), baseline.Length, 2);
        }
    }

    private long ChunkCount(long length) => (length + ChunkElements - 1) / ChunkElements;

    private void Run<TKernel>(TKernel kernel, Sources sources, long length, int extraRows)
        where TKernel : struct, IChunkKernel
    {
        switch (Path)
        {
            case SimdPath.Vector512:
                Run<TKernel, Vector512F>(kernel, sources, length, extraRows);
                break;
            case SimdPath.Vector256:
                Run<TKernel, Vector256F>(kernel, sources, length, extraRows);
                break;
            case SimdPath.Vector128:
                Run<TKernel, Vector128F>(kernel, sources, length, extraRows);
                break;
            default:
                Run<TKernel, ScalarVector>(kernel, sources, length, extraRows);
                break;
        }
    }

    private void Run<TKernel, TV>(TKernel kernel, Sources sources, long length, int extraRows)
        where TKernel : struct, IChunkKernel
        where TV : unmanaged, IFloatVector<TV>
    {
        long chunks = ChunkCount(length);
        if (chunks <= 1 || Threads == 1)
        {
            for (long c = 0; c < chunks; c++)
            {
                RunChunk<TKernel, TV>(kernel, sources, length, extraRows, c);
            }

            return;
        }

        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = Threads },
            c => RunChunk<TKernel, TV>(kernel, sources, length, extraRows, c));
    }

    private void RunChunk<TKernel, TV>(TKernel kernel, Sources sources, long length, int extraRows, long chunk)
        where TKernel : struct, IChunkKernel
        where TV : unmanaged, IFloatVector<TV>
    {
        int n = sources.Inputs.Length;
        int f = sources.Fishers.Length;
        int rows = n + 1 + f + extraRows;
        float[] scratch = ArrayPool<float>.Shared.Rent(rows * RowStride);
        try
        {
            fixed (float* s = scratch)
            {
                float** pointers = stackalloc float*[n + f];
                long start = chunk * ChunkElements;
                var cursor = new BlockCursor(sources, start, Math.Min(ChunkElements, length - start), s, pointers,
                    chunk, &TV.DecodeFloat16, &TV.DecodeBFloat16);
                kernel.Chunk<TV>(ref cursor);
                sources.ReleaseMapped(start, Math.Min(ChunkElements, length - start));
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scratch);
        }
    }

    private sealed class Sources(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, ReadOnlySpan<TensorSource> fishers)
    {
        public TensorSource[] Inputs { get; } = inputs.ToArray();

        public TensorSource? Baseline { get; } = baseline;

        public TensorSource[] Fishers { get; } = fishers.ToArray();

        /// <summary>Drops the read elements [start, start + count) of file-mapped sources from the resident set.</summary>
        public void ReleaseMapped(long start, long count)
        {
            foreach (var source in Inputs)
            {
                Release(source, start, count);
            }

            if (Baseline is { } baseline)
            {
                Release(baseline, start, count);
            }

            foreach (var source in Fishers)
            {
                Release(source, start, count);
            }
        }

        private static void Release(TensorSource source, long start, long count)
        {
            if (source.IsMapped)
            {
                long size = TensorSource.ElementSize(source.DataType);
                IO.MappedFile.ReleaseResidentPages(source.Data + (start * size), count * size);
            }
        }
    }

    /// <summary>Walks one chunk block by block, widening each 16-bit source block into scratch.</summary>
    private ref struct BlockCursor
    {
        private readonly Sources _sources;
        private readonly float* _scratch;
        private readonly long _end;
        private readonly delegate*<ushort*, float*, int, void> _decodeHalf;
        private readonly delegate*<ushort*, float*, int, void> _decodeBFloat16;
        private long _next;

        public BlockCursor(Sources sources, long start, long count, float* scratch, float** pointers, long chunk,
            delegate*<ushort*, float*, int, void> decodeHalf, delegate*<ushort*, float*, int, void> decodeBFloat16)
        {
            _sources = sources;
            _scratch = scratch;
            _next = start;
            _end = start + count;
            _decodeHalf = decodeHalf;
            _decodeBFloat16 = decodeBFloat16;
            Inputs = pointers;
            Fishers = pointers + sources.Inputs.Length;
            Chunk = chunk;
            int rows = sources.Inputs.Length + 1 + sources.Fishers.Length;
            Extra = scratch + (long)rows * RowStride;
        }

        public long Chunk { get; }

        public int InputCount => _sources.Inputs.Length;

        /// <summary>Absolute index of the block's first element in the tensor.</summary>
        public long Start { get; private set; }

        public int Length { get; private set; }

        public float** Inputs { get; }

        public float* Baseline { get; private set; }

        public float** Fishers { get; }

        /// <summary>Kernel-owned scratch: rows of <see cref="BlockElements"/> floats, <see cref="RowStride"/> apart.</summary>
        public float* Extra { get; }

        public bool MoveNext()
        {
            if (_next >= _end)
            {
                return false;
            }

            Start = _next;
            Length = (int)Math.Min(BlockElements, _end - _next);
            _next += Length;
            int n = _sources.Inputs.Length;
            for (int k = 0; k < n; k++)
            {
                Inputs[k] = Decode(_sources.Inputs[k], _scratch + (long)k * RowStride);
            }

            Baseline = _sources.Baseline is { } b ? Decode(b, _scratch + (long)n * RowStride) : null;
            for (int k = 0; k < _sources.Fishers.Length; k++)
            {
                Fishers[k] = Decode(_sources.Fishers[k], _scratch + (long)(n + 1 + k) * RowStride);
            }

            return true;
        }

        private readonly float* Decode(TensorSource source, float* row)
        {
            switch (source.DataType)
            {
                case OnnxDataType.Float:
                    return (float*)source.Data + Start;
                case OnnxDataType.Float16:
                    _decodeHalf((ushort*)source.Data + Start, row, Length);
                    return row;
                default:
                    _decodeBFloat16((ushort*)source.Data + Start, row, Length);
                    return row;
            }
        }
    }

    private interface IChunkKernel
    {
        void Chunk<TV>(ref BlockCursor cursor) where TV : unmanaged, IFloatVector<TV>;
    }

    /// <summary>
    /// Each model's DARE factors for the block (scale where kept, else 0): read from the recorded mask when there is one
    /// (<paramref name="bits"/>, element index shifted by <paramref name="bitOffset"/>), else drawn.
    /// </summary>
    private static void FillDareScales<TV>(ref BlockCursor cursor, ulong* keys, byte** bits, long bitOffset, uint dropThreshold, float scale, float** rows)
        where TV : unmanaged, IFloatVector<TV>
    {
        for (int k = 0; k < cursor.InputCount; k++)
        {
            rows[k] = cursor.Extra + (long)k * RowStride;
            if (bits != null)
            {
                DareMask.ScalesFromBits(bits[k], bitOffset + cursor.Start, cursor.Length, scale, rows[k]);
            }
            else
            {
                TV.DareScales(keys[k], cursor.Start, cursor.Length, dropThreshold, scale, rows[k]);
            }
        }
    }

    /// <summary>Each model's counter key of <paramref name="dare"/> (0 without DARE); returns the mask (default without).</summary>
    private static DareMask FillDareKeys(DareMask? dare, ulong* keys, int models)
    {
        DareMask mask = dare.GetValueOrDefault();
        for (int k = 0; k < models; k++)
        {
            keys[k] = dare is null ? 0 : mask.KeyFor(k);
        }

        return mask;
    }

    /// <summary>
    /// Pins the recorded mask of <paramref name="dare"/> (<see cref="DareMask.Recorded"/>) for one call and points
    /// <paramref name="bits"/> at it; no handles when the mask has none (the kernels then draw).
    /// </summary>
    private static GCHandle[] PinRecorded(DareMask? dare, int models, long length, byte** bits)
    {
        if (dare?.Recorded is not { } recorded)
        {
            return [];
        }

        Check.SameCount(recorded.Count, models, "recorded DARE masks");
        long end = dare.Value.ElementOffset + length;
        var pins = new GCHandle[models];
        for (int k = 0; k < models; k++)
        {
            if (dare.Value.ElementOffset < 0 || (long)recorded[k].Length * 8 < end)
            {
                Unpin(pins);
                throw new ArgumentException($"the recorded DARE mask of model {k} holds {(long)recorded[k].Length * 8} elements, not [{dare.Value.ElementOffset}, {end})", nameof(dare));
            }

            pins[k] = GCHandle.Alloc(recorded[k], GCHandleType.Pinned);
            bits[k] = (byte*)pins[k].AddrOfPinnedObject();
        }

        return pins;
    }

    private static void Unpin(GCHandle[] pins)
    {
        foreach (var pin in pins)
        {
            if (pin.IsAllocated)
            {
                pin.Free();
            }
        }
    }

    private struct WeightedSumKernel : IChunkKernel
    {
        public float* Weights;
        public float* Output;
        public bool HasBase;
        public ulong* DareKeys;
        public byte** DareBits;
        public long DareBitOffset;
        public uint DropThreshold;
        public float Scale;

        // Fully optimised from the first call: a merge calls each kernel only a few hundred times, too few for tiering.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly void Chunk<TV>(ref BlockCursor cursor) where TV : unmanaged, IFloatVector<TV>
        {
            int n = cursor.InputCount;
            float** scales = stackalloc float*[n];
            while (cursor.MoveNext())
            {
                int length = cursor.Length;
                int vectorEnd = length - length % TV.Count;
                float* output = Output + cursor.Start;
                if (!HasBase)
                {
                    Sum<TV>(cursor.Inputs, n, output, 0, vectorEnd);
                    Sum<ScalarVector>(cursor.Inputs, n, output, vectorEnd, length);
                }
                else if (DareKeys == null)
                {
                    SumDeltas<TV>(cursor.Inputs, n, cursor.Baseline, output, 0, vectorEnd);
                    SumDeltas<ScalarVector>(cursor.Inputs, n, cursor.Baseline, output, vectorEnd, length);
                }
                else
                {
                    FillDareScales<TV>(ref cursor, DareKeys, DareBits, DareBitOffset, DropThreshold, Scale, scales);
                    SumMaskedDeltas<TV>(cursor.Inputs, n, cursor.Baseline, scales, output, 0, vectorEnd);
                    SumMaskedDeltas<ScalarVector>(cursor.Inputs, n, cursor.Baseline, scales, output, vectorEnd, length);
                }
            }
        }

        private readonly void Sum<TV>(float** inputs, int n, float* output, int from, int to)
            where TV : unmanaged, IFloatVector<TV>
        {
            float* w = Weights;
            for (int i = from; i < to; i += TV.Count)
            {
                TV acc = TV.Create(w[0]) * TV.Load(inputs[0] + i);
                for (int k = 1; k < n; k++)
                {
                    acc += TV.Create(w[k]) * TV.Load(inputs[k] + i);
                }

                TV.Store(acc, output + i);
            }
        }

        private readonly void SumDeltas<TV>(float** inputs, int n, float* baseline, float* output, int from, int to)
            where TV : unmanaged, IFloatVector<TV>
        {
            float* w = Weights;
            for (int i = from; i < to; i += TV.Count)
            {
                TV b = TV.Load(baseline + i);
                TV acc = TV.Create(w[0]) * (TV.Load(inputs[0] + i) - b);
                for (int k = 1; k < n; k++)
                {
                    acc += TV.Create(w[k]) * (TV.Load(inputs[k] + i) - b);
                }

                TV.Store(b + acc, output + i);
            }
        }

        private readonly void SumMaskedDeltas<TV>(float** inputs, int n, float* baseline, float** scales, float* output,
            int from, int to)
            where TV : unmanaged, IFloatVector<TV>
        {
            float* w = Weights;
            for (int i = from; i < to; i += TV.Count)
            {
                TV b = TV.Load(baseline + i);
                TV acc = TV.Create(w[0]) * ((TV.Load(inputs[0] + i) - b) * TV.Load(scales[0] + i));
                for (int k = 1; k < n; k++)
                {
                    acc += TV.Create(w[k]) * ((TV.Load(inputs[k] + i) - b) * TV.Load(scales[k] + i));
                }

                TV.Store(b + acc, output + i);
            }
        }
    }

    private struct TiesKernel : IChunkKernel
    {
        public uint* Thresholds;
        public float Lambda;
        public float* Output;
        public ulong* DareKeys;
        public byte** DareBits;
        public long DareBitOffset;
        public uint DropThreshold;
        public float Scale;
        public TiesSigns Tally;

        // Fully optimised from the first call: a merge calls each kernel only a few hundred times, too few for tiering.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly void Chunk<TV>(ref BlockCursor cursor) where TV : unmanaged, IFloatVector<TV>
        {
            int n = cursor.InputCount;
            float** scales = stackalloc float*[n];
            long tally = 0;
            List<(long, float)>? patches = null;
            while (cursor.MoveNext())
            {
                int length = cursor.Length;
                int vectorEnd = length - length % TV.Count;
                if (DareKeys != null)
                {
                    FillDareScales<TV>(ref cursor, DareKeys, DareBits, DareBitOffset, DropThreshold, Scale, scales);
                }

                float** s = DareKeys == null ? null : scales;
                tally += Merge<TV>(ref cursor, s, 0, vectorEnd, ref patches);
                tally += Merge<ScalarVector>(ref cursor, s, vectorEnd, length, ref patches);
            }

            Tally.Add(tally, patches);
        }

        private readonly long Merge<TV>(ref BlockCursor cursor, float** scales, int from, int to,
            ref List<(long, float)>? patches)
            where TV : unmanaged, IFloatVector<TV>
        {
            int n = cursor.InputCount;
            float** inputs = cursor.Inputs;
            float* baseline = cursor.Baseline;
            float* output = Output + cursor.Start;
            TV zero = TV.Create(0f), one = TV.Create(1f), lambda = TV.Create(Lambda);
            TV tally = zero;
            float* lanes = stackalloc float[2 * TV.Count];
            for (int i = from; i < to; i += TV.Count)
            {
                TV b = TV.Load(baseline + i);
                TV sum = zero, positiveSum = zero, positiveCount = zero, negativeSum = zero, negativeCount = zero;
                for (int k = 0; k < n; k++)
                {
                    TV delta = TV.Load(inputs[k] + i) - b;
                    if (scales != null)
                    {
                        delta *= TV.Load(scales[k] + i);
                    }

                    delta = TV.Select(TV.MagnitudeAtLeast(delta, Thresholds[k]), delta, zero);
                    sum += delta;
                    TV positive = TV.GreaterThan(delta, zero), negative = TV.LessThan(delta, zero);
                    positiveSum += TV.Select(positive, delta, zero);
                    positiveCount += TV.Select(positive, one, zero);
                    negativeSum += TV.Select(negative, delta, zero);
                    negativeCount += TV.Select(negative, one, zero);
                }

                TV positiveMean = positiveSum / TV.Select(TV.GreaterThan(positiveCount, one), positiveCount, one);
                TV negativeMean = negativeSum / TV.Select(TV.GreaterThan(negativeCount, one), negativeCount, one);
                TV elected = TV.GreaterThan(sum, zero), rejected = TV.LessThan(sum, zero);
                TV poison = sum - sum; // 0, or NaN when a kept entry was NaN or ±Inf
                TV merged = TV.Select(rejected, negativeMean, positiveMean) + poison;
                TV.Store(b + lambda * merged, output + i);
                tally += TV.Select(elected, one, zero) - TV.Select(rejected, one, zero);

                TV tie = TV.Select(TV.EqualsMask(sum, zero), TV.GreaterThan(positiveCount + negativeCount, zero), zero);
                if (TV.AnyTrue(tie))
                {
                    TV.Store(tie, lanes);
                    TV.Store(b + lambda * negativeMean, lanes + TV.Count);
                    for (int lane = 0; lane < TV.Count; lane++)
                    {
                        if (BitConverter.SingleToInt32Bits(lanes[lane]) != 0)
                        {
                            (patches ??= []).Add((cursor.Start + i + lane, lanes[TV.Count + lane]));
                        }
                    }
                }
            }

            TV.Store(tally, lanes);
            long total = 0;
            for (int lane = 0; lane < TV.Count; lane++)
            {
                total += (long)lanes[lane];
            }

            return total;
        }
    }

    private struct FisherKernel : IChunkKernel
    {
        public float* Coefficients;
        public float Floor;
        public float* Output;

        // Fully optimised from the first call: a merge calls each kernel only a few hundred times, too few for tiering.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly void Chunk<TV>(ref BlockCursor cursor) where TV : unmanaged, IFloatVector<TV>
        {
            while (cursor.MoveNext())
            {
                int length = cursor.Length;
                int vectorEnd = length - length % TV.Count;
                Merge<TV>(ref cursor, 0, vectorEnd);
                Merge<ScalarVector>(ref cursor, vectorEnd, length);
            }
        }

        private readonly void Merge<TV>(ref BlockCursor cursor, int from, int to) where TV : unmanaged, IFloatVector<TV>
        {
            int n = cursor.InputCount;
            float* output = Output + cursor.Start;
            TV floor = TV.Create(Floor);
            for (int i = from; i < to; i += TV.Count)
            {
                TV numerator = TV.Create(0f), denominator = TV.Create(0f);
                for (int k = 0; k < n; k++)
                {
                    TV fisher = TV.Load(cursor.Fishers[k] + i);
                    TV weight = TV.Create(Coefficients[k]) * TV.Select(TV.GreaterThan(fisher, floor), fisher, floor);
                    numerator += weight * TV.Load(cursor.Inputs[k] + i);
                    denominator += weight;
                }

                TV.Store(numerator / denominator, output + i);
            }
        }
    }

    private struct GramKernel : IChunkKernel
    {
        public double* Partials;
        public int Count;
        public bool HasBase;

        // Fully optimised from the first call: a merge calls each kernel only a few hundred times, too few for tiering.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly void Chunk<TV>(ref BlockCursor cursor) where TV : unmanaged, IFloatVector<TV>
        {
            int n = Count;
            double* partial = Partials + cursor.Chunk * n * n;
            float** rows = stackalloc float*[n];
            while (cursor.MoveNext())
            {
                int length = cursor.Length;
                for (int k = 0; k < n; k++)
                {
                    if (!HasBase)
                    {
                        rows[k] = cursor.Inputs[k];
                        continue;
                    }

                    rows[k] = cursor.Extra + (long)k * RowStride;
                    int vectorEnd = length - length % TV.Count;
                    Subtract<TV>(cursor.Inputs[k], cursor.Baseline, rows[k], 0, vectorEnd);
                    Subtract<ScalarVector>(cursor.Inputs[k], cursor.Baseline, rows[k], vectorEnd, length);
                }

                for (int a = 0; a < n; a++)
                {
                    for (int b = a; b < n; b++)
                    {
                        partial[a * n + b] += TV.Dot(rows[a], rows[b], length);
                    }
                }
            }
        }

        private static void Subtract<TV>(float* left, float* right, float* destination, int from, int to)
            where TV : unmanaged, IFloatVector<TV>
        {
            for (int i = from; i < to; i += TV.Count)
            {
                TV.Store(TV.Load(left + i) - TV.Load(right + i), destination + i);
            }
        }
    }

    private const int HistogramTables = 4;

    private struct CountKernel : IChunkKernel
    {
        public long[][] Coarse;
        public long[][] Fine;
        public long[] Below;
        public long* WindowStarts;
        public ulong* DareKeys;
        public uint DropThreshold;
        public float Scale;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly void Chunk<TV>(ref BlockCursor cursor) where TV : unmanaged, IFloatVector<TV>
        {
            int n = cursor.InputCount;
            var coarse = new int[]?[n];
            var fine = new WindowMatches?[n];
            var below = new long[n];
            for (int k = 0; k < n; k++)
            {
                if (Coarse[k].Length != 0)
                {
                    // Pooled: a fresh table per chunk and model would be hundreds of MB of garbage per pass on a large model.
                    coarse[k] = ArrayPool<int>.Shared.Rent(HistogramTables * MagnitudeThreshold.CoarseBins);
                    Array.Clear(coarse[k]!, 0, HistogramTables * MagnitudeThreshold.CoarseBins);
                }

                if (WindowStarts[k] != MagnitudeThreshold.NoWindow)
                {
                    fine[k] = new WindowMatches();
                }
            }

            float* deltas = cursor.Extra;
            float* scale = cursor.Extra + RowStride;
            while (cursor.MoveNext())
            {
                int length = cursor.Length;
                int vectorEnd = length - length % TV.Count;
                for (int k = 0; k < n; k++)
                {
                    if (coarse[k] is null && fine[k] is null)
                    {
                        continue;
                    }

                    float* s = null;
                    if (DareKeys != null)
                    {
                        TV.DareScales(DareKeys[k], cursor.Start, length, DropThreshold, Scale, scale);
                        s = scale;
                    }

                    Deltas<TV>(cursor.Inputs[k], cursor.Baseline, s, deltas, 0, vectorEnd);
                    Deltas<ScalarVector>(cursor.Inputs[k], cursor.Baseline, s, deltas, vectorEnd, length);
                    if (coarse[k] is { } counts)
                    {
                        fixed (int* c = counts)
                        {
                            Histogram((uint*)deltas, length, c);
                        }
                    }

                    if (fine[k] is { } matches)
                    {
                        uint start = (uint)WindowStarts[k];
                        fixed (uint* m = matches.Buffer)
                        {
                            below[k] += Window<TV>(deltas, start, m, ref matches.Count, 0, vectorEnd)
                                + Window<ScalarVector>(deltas, start, m, ref matches.Count, vectorEnd, length);
                        }

                        if (matches.Count >= WindowMatches.FlushAt)
                        {
                            matches.Flush(Fine[k]);
                        }
                    }
                }
            }

            for (int k = 0; k < n; k++)
            {
                if (coarse[k] is { } counts)
                {
                    long[] shared = Coarse[k];
                    lock (shared)
                    {
                        const int bins = MagnitudeThreshold.CoarseBins;
                        for (int i = 0; i < bins; i++)
                        {
                            shared[i] += counts[i] + counts[bins + i] + counts[(2 * bins) + i] + counts[(3 * bins) + i];
                        }
                    }

                    ArrayPool<int>.Shared.Return(counts);
                }

                if (fine[k] is { } matches)
                {
                    matches.Flush(Fine[k]);
                    matches.Return();
                    Interlocked.Add(ref Below[k], below[k]);
                }
            }
        }

        /// <summary>Coarse bins of <paramref name="length"/> magnitudes into <see cref="HistogramTables"/> interleaved tables,
        /// so neighbouring entries that fall into one bin do not wait on each other's increment.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void Histogram(uint* bits, int length, int* counts)
        {
            const int bins = MagnitudeThreshold.CoarseBins, shift = MagnitudeThreshold.CoarseShift;
            int* c1 = counts + bins, c2 = counts + (2 * bins), c3 = counts + (3 * bins);
            int j = 0;
            for (; j <= length - HistogramTables; j += HistogramTables)
            {
                counts[(bits[j] & HalfBits.MagnitudeMask) >> shift]++;
                c1[(bits[j + 1] & HalfBits.MagnitudeMask) >> shift]++;
                c2[(bits[j + 2] & HalfBits.MagnitudeMask) >> shift]++;
                c3[(bits[j + 3] & HalfBits.MagnitudeMask) >> shift]++;
            }

            for (; j < length; j++)
            {
                counts[(bits[j] & HalfBits.MagnitudeMask) >> shift]++;
            }
        }

        /// <summary>
        /// Counts the magnitudes below <paramref name="start"/> and collects (bits − start) of the few in the window.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static long Window<TV>(float* deltas, uint start, uint* matches, ref int count, int from, int to)
            where TV : unmanaged, IFloatVector<TV>
        {
            long below = 0;
            for (int i = from; i < to; i += TV.Count)
            {
                TV value = TV.Load(deltas + i);
                below += BitOperations.PopCount(TV.MaskBits(TV.MagnitudeBelow(value, start)));
                // Only the lanes in the window (a few percent) are visited, by their mask bits.
                for (uint lanes = TV.MaskBits(TV.MagnitudeInWindow(value, start)); lanes != 0; lanes &= lanes - 1)
                {
                    int lane = i + BitOperations.TrailingZeroCount(lanes);
                    matches[count++] = (BitConverter.SingleToUInt32Bits(deltas[lane]) & HalfBits.MagnitudeMask) - start;
                }
            }

            return below;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Deltas<TV>(float* input, float* baseline, float* scale, float* destination, int from, int to)
            where TV : unmanaged, IFloatVector<TV>
        {
            for (int i = from; i < to; i += TV.Count)
            {
                TV delta = TV.Load(input + i) - TV.Load(baseline + i);
                if (scale != null)
                {
                    delta *= TV.Load(scale + i);
                }

                TV.Store(delta, destination + i);
            }
        }
    }

    /// <summary>A chunk's window entries (bits − start) waiting to be counted into the shared histogram: a pooled
    /// buffer, flushed when it holds <see cref="FlushAt"/>, so a pass allocates nothing per chunk.</summary>
    private sealed class WindowMatches
    {
        public const int FlushAt = 1 << 14;

        public uint[] Buffer { get; } = ArrayPool<uint>.Shared.Rent(FlushAt + BlockElements);

        public int Count;

        public void Flush(long[] shared)
        {
            lock (shared)
            {
                for (int i = 0; i < Count; i++)
                {
                    shared[Buffer[i]]++;
                }
            }

            Count = 0;
        }

        public void Return() => ArrayPool<uint>.Shared.Return(Buffer);
    }
}

/// <summary>Argument checks shared by the kernel implementations.</summary>
internal static class Check
{
    public static void Inputs(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, long length)
    {
        if (inputs.Length == 0)
        {
            throw new ArgumentException("at least one input tensor is needed", nameof(inputs));
        }

        for (int k = 0; k < inputs.Length; k++)
        {
            if (inputs[k].Length != length)
            {
                throw new ArgumentException(
                    $"input {k} has {inputs[k].Length} elements where {length} are expected", nameof(inputs));
            }
        }

        if (baseline is { } b && b.Length != length)
        {
            throw new ArgumentException($"the base has {b.Length} elements where {length} are expected", nameof(baseline));
        }
    }

    public static void WeightedSumArguments(ReadOnlySpan<TensorSource> inputs, int weightCount, TensorSource? baseline,
        DareMask? dare, long length)
    {
        Inputs(inputs, baseline, length);
        SameCount(weightCount, inputs.Length, "weights");
        if (dare is not null && baseline is null)
        {
            throw new ArgumentException("DARE masks task vectors, so it needs a base.", nameof(dare));
        }
    }

    public static void CountArguments(int inputCount, ReadOnlySpan<long> windowStarts, long[][] coarse, long[][] fine, long[] below)
    {
        SameCount(windowStarts.Length, inputCount, "window starts");
        SameCount(coarse.Length, inputCount, "coarse histograms");
        SameCount(fine.Length, inputCount, "fine histograms");
        SameCount(below.Length, inputCount, "below counts");
        for (int k = 0; k < inputCount; k++)
        {
            if (coarse[k].Length != 0)
            {
                SameCount(coarse[k].Length, MagnitudeThreshold.CoarseBins, $"coarse histogram bins of model {k}");
            }

            if (windowStarts[k] == MagnitudeThreshold.NoWindow)
            {
                continue;
            }

            if (windowStarts[k] < 0 || windowStarts[k] > HalfBits.MagnitudeMask + 1L - MagnitudeThreshold.FineBins)
            {
                throw new ArgumentOutOfRangeException(nameof(windowStarts), $"window start {windowStarts[k]} of model {k}");
            }

            SameCount(fine[k].Length, MagnitudeThreshold.FineBins, $"fine histogram bins of model {k}");
        }
    }

    public static void SameCount(int actual, int expected, string what)
    {
        if (actual != expected)
        {
            throw new ArgumentException($"{actual} {what} given where {expected} are needed");
        }
    }
}
