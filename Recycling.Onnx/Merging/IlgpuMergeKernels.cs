using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace Recycling.Onnx.Merging;

/// <summary>
/// <see cref="IMergeKernels"/> as ILGPU kernels: on an NVIDIA GPU (<see cref="CreateCuda"/>) or on ILGPU's CPU
/// accelerator (<see cref="CreateCpuAccelerator"/>, which runs the same kernels in tests). Tensors are streamed to the
/// device in chunks of <see cref="ChunkElements"/> elements as raw bytes (16-bit inputs travel at half size) and widened
/// there with the same bit-exact conversion as the CPU. The element math mirrors <see cref="CpuMergeKernels"/>; results
/// agree within fp32 rounding (the GPU compiler may contract a·b + c into an FMA) and DARE masks are identical
/// (<see cref="DareMask.Keeps"/> runs unchanged on the device).
/// </summary>
internal sealed unsafe class IlgpuMergeKernels : IMergeKernels
{
    /// <summary>Threads of the fixed-shape reductions (Gram, TIES sign tally): partials are summed on the host in order.</summary>
    private const int ReductionThreads = 4096;

    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<ushort>, ArrayView<float>, int> _decode;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ulong>, ArrayView<float>, Shape> _weightedSum;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<ulong>, ArrayView<float>, Shape> _ties;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<ulong>, ArrayView<long>, Shape> _tiesTally;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape> _fisher;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<double>, Shape> _gram;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ulong>, ArrayView<int>, ArrayView<long>, ArrayView<long>, Shape> _count;

    private IlgpuMergeKernels(Context context, Accelerator accelerator, int chunkElements)
    {
        _context = context;
        _accelerator = accelerator;
        ChunkElements = chunkElements;
        _decode = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<ushort>, ArrayView<float>, int>(DecodeKernel);
        _weightedSum = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<ulong>, ArrayView<float>, Shape>(WeightedSumKernel);
        _ties = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<uint>,
            ArrayView<ulong>, ArrayView<float>, Shape>(TiesKernel);
        _tiesTally = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<uint>,
            ArrayView<ulong>, ArrayView<long>, Shape>(TiesTallyKernel);
        _fisher = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, Shape>(FisherKernel);
        _gram = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<double>, Shape>(GramKernel);
        _count = accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ulong>,
            ArrayView<int>, ArrayView<long>, ArrayView<long>, Shape>(CountKernel);
    }

    /// <summary>Threads of the TIES sign tally: enough to keep a GPU's memory busy. The tally is an integer sum, so
    /// the thread count cannot change the result.</summary>
    private const int TallyThreads = 1 << 16;

    private readonly Lock _lock = new();

    /// <summary>Two chunks in flight: while one slot's stream copies and merges a chunk, the CPU packs the next chunk
    /// into the other slot's page-locked buffer.</summary>
    private readonly ChunkSlot[] _slots = [new(), new()];

    public int ChunkElements { get; }

    public string Name => $"ilgpu/{_accelerator.AcceleratorType} {_accelerator.Name}";

    /// <summary>ILGPU's CPU accelerator: the GPU kernels run on CPU threads (for tests without a GPU).</summary>
    public static IlgpuMergeKernels CreateCpuAccelerator(int chunkElements = 1 << 22)
    {
        Context context = Context.Create(builder => builder.CPU());
        try
        {
            return new IlgpuMergeKernels(context, context.CreateCPUAccelerator(0), chunkElements);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>Elements per source in one chunk on a GPU: 16 MiB of fp32, large enough that each copy and launch runs
    /// far past its overhead, small enough that two chunks of 17 sources stay near half a GiB of page-locked memory.</summary>
    public const int CudaChunkElements = 1 << 22;

    /// <summary>The first CUDA device; a <see cref="RecyclingException"/> (never a crash) when none is usable.</summary>
    public static IlgpuMergeKernels CreateCuda(int chunkElements = CudaChunkElements) =>
        TryCreateCuda(chunkElements, out string? reason) ?? throw new RecyclingException($"--device cuda: {reason}");

    /// <summary>The first CUDA device, or null with the reason none is usable.</summary>
    public static IlgpuMergeKernels? TryCreateCuda(int chunkElements, out string? reason)
    {
        Context? context = null;
        try
        {
            context = Context.Create(builder => builder.Cuda());
            if (context.GetCudaDevices().Count == 0)
            {
                reason = "no CUDA device found (ILGPU needs an NVIDIA GPU and its driver's libcuda).";
                context.Dispose();
                return null;
            }

            reason = null;
            return new IlgpuMergeKernels(context, context.CreateCudaAccelerator(0), chunkElements);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            context?.Dispose();
            reason = $"CUDA could not be initialised: {e.GetType().Name}: {e.Message}";
            return null;
        }
    }

    public void Dispose()
    {
        foreach (ChunkSlot slot in _slots)
        {
            slot.Dispose();
        }

        _accelerator.Dispose();
        _context.Dispose();
    }

    /// <summary>Scalars of a kernel launch (ILGPU kernels take at most eight parameters).</summary>
    internal struct Shape
    {
        public int Count;
        public int Length;
        public long Offset;
        public int HasBase;
        public uint DropThreshold;
        public float Scale;
        public float Lambda;
        public int Majority;
        public int Filter;
        public int Threads;
        public float Floor;
    }

    public void WeightedSum(ReadOnlySpan<TensorSource> inputs, ReadOnlySpan<float> weights, TensorSource? baseline,
        DareMask? dare, Span<float> output)
    {
        Check.WeightedSumArguments(inputs, weights.Length, baseline, dare, output.Length);

        using var w = Upload(weights);
        using var keys = Upload(DareKeys(dare, inputs.Length));
        var shape = Base(inputs.Length, dare);
        shape.HasBase = baseline is null ? 0 : 1;
        ForEachOutputChunk(inputs, baseline, default, shape, output,
            (stream, x, b, _, result, s) => _weightedSum(stream, s.Length, x, b, w.View, keys.View, result, s));
    }

    public void Ties(ReadOnlySpan<TensorSource> inputs, TensorSource baseline, ReadOnlySpan<uint> thresholdBits,
        float lambda, DareMask? dare, Span<float> output, TiesSigns? signs = null)
    {
        Check.Inputs(inputs, baseline, output.Length);
        Check.SameCount(thresholdBits.Length, inputs.Length, "thresholds");
        using var thresholds = Upload(thresholdBits);
        using var keys = Upload(DareKeys(dare, inputs.Length));
        var shape = Base(inputs.Length, dare);
        shape.Lambda = lambda;
        shape.Threads = ReductionThreads;
        long tally = 0;
        ForEachChunk(inputs, baseline, default, output.Length, (stream, slot, x, b, _, offset, length) =>
        {
            int threads = Math.Min(TallyThreads, length);
            var partials = Reuse(ref slot.Tally, TallyThreads);
            Shape s = shape;
            s.Offset = offset;
            s.Length = length;
            s.Threads = threads;
            _tiesTally(stream, threads, x, b, thresholds.View, keys.View, partials.View, s);
            return () =>
            {
                foreach (long partial in partials.View.SubView(0, threads).GetAsArray1D())
                {
                    tally += partial;
                }
            };
        });

        if (signs is null)
        {
            shape.Majority = tally > 0 ? 1 : -1;
            ForEachOutputChunk(inputs, baseline, default, shape, output,
                (stream, x, b, _, result, s) => _ties(stream, s.Length, x, b, thresholds.View, keys.View, result, s));
            return;
        }

        // A chunk of a larger tensor: positive-majority values out, and the elements where a negative majority would
        // differ (the exact ties) as patches.
        shape.Majority = 1;
        ForEachOutputChunk(inputs, baseline, default, shape, output,
            (stream, x, b, _, result, s) => _ties(stream, s.Length, x, b, thresholds.View, keys.View, result, s));
        float[] negative = new float[output.Length];
        shape.Majority = -1;
        ForEachOutputChunk(inputs, baseline, default, shape, negative,
            (stream, x, b, _, result, s) => _ties(stream, s.Length, x, b, thresholds.View, keys.View, result, s));
        List<(long, float)> patches = [];
        for (int i = 0; i < output.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(output[i]) != BitConverter.SingleToInt32Bits(negative[i]))
            {
                patches.Add((i, negative[i]));
            }
        }

        signs.Add(tally, patches);
    }

    public void Fisher(ReadOnlySpan<TensorSource> inputs, ReadOnlySpan<TensorSource> fishers,
        ReadOnlySpan<float> coefficients, float floor, Span<float> output)
    {
        Check.Inputs(inputs, null, output.Length);
        Check.Inputs(fishers, null, output.Length);
        Check.SameCount(fishers.Length, inputs.Length, "Fisher tensors");
        Check.SameCount(coefficients.Length, inputs.Length, "coefficients");
        using var c = Upload(coefficients);
        var shape = Base(inputs.Length, null);
        shape.Floor = floor;
        ForEachOutputChunk(inputs, null, fishers, shape, output,
            (stream, x, _, f, result, s) => _fisher(stream, s.Length, x, f, c.View, result, s));
    }

    // ---- Kernels on data already on the device, for benchmarks that separate the kernels from the transfers. ----

    internal Accelerator Accelerator => _accelerator;

    /// <summary>Σ wₖ·xₖ over the <paramref name="count"/> stacked inputs (no base).</summary>
    internal void WeightedSumOnDevice(ArrayView<float> stacked, int count, ArrayView<float> weights, ArrayView<ulong> keys,
        ArrayView<float> output)
    {
        var shape = Base(count, null);
        shape.HasBase = 0;
        shape.Length = (int)output.Length;
        _weightedSum(_accelerator.DefaultStream, shape.Length, stacked, output, weights, keys, output, shape);
    }

    /// <summary>TIES as the host path runs it: the sign tally, its host sum, then the merge.</summary>
    internal void TiesOnDevice(ArrayView<float> stacked, int count, ArrayView<float> baseline, ArrayView<uint> thresholds,
        ArrayView<ulong> keys, float lambda, ArrayView<long> partials, ArrayView<float> output)
    {
        var shape = Base(count, null);
        shape.Lambda = lambda;
        shape.Length = (int)output.Length;
        shape.Threads = (int)Math.Min(partials.Length, shape.Length);
        _tiesTally(_accelerator.DefaultStream, shape.Threads, stacked, baseline, thresholds, keys, partials, shape);
        long[] host = new long[shape.Threads];
        partials.SubView(0, shape.Threads).CopyToCPU(host);
        long tally = host.Sum();
        shape.Majority = tally > 0 ? 1 : -1;
        _ties(_accelerator.DefaultStream, shape.Length, stacked, baseline, thresholds, keys, output, shape);
    }

    internal void FisherOnDevice(ArrayView<float> stacked, ArrayView<float> fishers, int count, ArrayView<float> coefficients,
        float floor, ArrayView<float> output)
    {
        var shape = Base(count, null);
        shape.Floor = floor;
        shape.Length = (int)output.Length;
        _fisher(_accelerator.DefaultStream, shape.Length, stacked, fishers, coefficients, output, shape);
    }

    public void Gram(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, Span<double> gram)
    {
        long total = inputs.Length == 0 ? 0 : inputs[0].Length;
        Check.Inputs(inputs, baseline, total);
        int n = inputs.Length;
        Check.SameCount(gram.Length, n * n, "Gram cells (N×N)");
        var shape = Base(n, null);
        shape.HasBase = baseline is null ? 0 : 1;
        shape.Threads = ReductionThreads;
        double[] sums = new double[n * n];
        ForEachChunk(inputs, baseline, default, total, (stream, slot, x, b, _, offset, length) =>
        {
            var partials = Reuse(ref slot.Gram, (long)ReductionThreads * n * n);
            Shape s = shape;
            s.Length = length;
            _gram(stream, ReductionThreads, x, b, partials.View, s);
            return () =>
            {
                double[] host = partials.View.SubView(0, (long)ReductionThreads * n * n).GetAsArray1D();
                for (int t = 0; t < ReductionThreads; t++)
                {
                    for (int cell = 0; cell < n * n; cell++)
                    {
                        sums[cell] += host[t * n * n + cell];
                    }
                }
            };
        });

        for (int a = 0; a < n; a++)
        {
            for (int b = 0; b < n; b++)
            {
                gram[a * n + b] = a <= b ? sums[a * n + b] : sums[b * n + a];
            }
        }
    }

    public void CountMagnitudes(ReadOnlySpan<TensorSource> inputs, TensorSource baseline, DareMask? dare,
        ReadOnlySpan<long> windowStarts, long[][] coarse, long[][] fine, long[] below)
    {
        Check.Inputs(inputs, baseline, baseline.Length);
        Check.CountArguments(inputs.Length, windowStarts, coarse, fine, below);
        int n = inputs.Length;
        int[] countsCoarse = coarse.Select(c => c.Length == 0 ? 0 : 1).ToArray();
        using var keys = Upload(DareKeys(dare, n));
        using var modelWindows = Upload(windowStarts);
        using var modelCoarse = Upload(countsCoarse);
        using var histograms = _accelerator.Allocate1D<long>((long)n * HistogramLength);
        histograms.MemSetToZero();
        _accelerator.Synchronize(); // the slots' streams must not count into it before it is zero
        var shape = Base(n, dare);
        ForEachChunk(inputs, baseline, default, baseline.Length, (stream, _, x, b, _, offset, length) =>
        {
            Shape s = shape;
            s.Offset = offset;
            s.Length = length;
            _count(stream, length, x, b, keys.View, modelCoarse.View, modelWindows.View, histograms.View, s);
            return null;
        });
        long[] host = histograms.GetAsArray1D();
        for (int k = 0; k < n; k++)
        {
            long histogram = (long)k * HistogramLength;
            for (int i = 0; i < coarse[k].Length; i++)
            {
                coarse[k][i] += host[histogram + i];
            }

            if (windowStarts[k] != MagnitudeThreshold.NoWindow)
            {
                for (int i = 0; i < MagnitudeThreshold.FineBins; i++)
                {
                    fine[k][i] += host[histogram + MagnitudeThreshold.CoarseBins + i];
                }

                for (int i = 0; i < BelowSlots; i++)
                {
                    below[k] += host[histogram + MagnitudeThreshold.CoarseBins + MagnitudeThreshold.FineBins + i];
                }
            }
        }
    }

    /// <summary>Counters of "below the window", spread over this many slots so that threads do not all hit one address.</summary>
    private const int BelowSlots = 256;

    /// <summary>Per model on the device: its coarse histogram, its window's histogram, then its below counters.</summary>
    private const int HistogramLength = MagnitudeThreshold.CoarseBins + MagnitudeThreshold.FineBins + BelowSlots;

    private delegate void OutputLaunch(AcceleratorStream stream, ArrayView<float> inputs, ArrayView<float> baseline,
        ArrayView<float> fishers, ArrayView<float> result, Shape chunkShape);

    /// <summary>Runs an elementwise kernel chunk by chunk (<paramref name="shape"/> with the chunk's offset and length)
    /// into the slot's device buffer, which is copied back through the slot's page-locked buffer into
    /// <paramref name="output"/>.</summary>
    private void ForEachOutputChunk(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, ReadOnlySpan<TensorSource> fishers,
        Shape shape, Span<float> output, OutputLaunch launch)
    {
        fixed (float* pinned = output)
        {
            nint o = (nint)pinned;
            ForEachChunk(inputs, baseline, fishers, output.Length, (stream, slot, x, b, f, offset, length) =>
            {
                ArrayView<float> result = slot.Result!.View.SubView(0, length);
                Shape s = shape;
                s.Offset = offset;
                s.Length = length;
                launch(stream, x, b, f, result, s);
                result.CopyToCPUUnsafeAsync(stream, ref Unsafe.AsRef<float>((float*)slot.OutputPointer), length);
                return () => Buffer.MemoryCopy((float*)slot.OutputPointer, (float*)o + offset, length * 4L, length * 4L);
            });
        }
    }

    /// <summary>Enqueues a chunk's work on <paramref name="stream"/>; returns what the host does with its results once
    /// that stream has finished (or null).</summary>
    private delegate Action? ChunkLaunch(AcceleratorStream stream, ChunkSlot slot, ArrayView<float> inputs,
        ArrayView<float> baseline, ArrayView<float> fishers, long offset, int length);

    /// <summary>
    /// Streams every source through the device chunk by chunk, two chunks in flight: the CPU copies a chunk of each
    /// source into a slot's page-locked buffer, the slot's stream copies it to the device asynchronously (16-bit
    /// sources travel at half size and are widened there), and <paramref name="launch"/> enqueues the kernels, while the
    /// other slot's chunk is still in flight. Chunk results are handed to the host in chunk order.
    /// </summary>
    private void ForEachChunk(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, ReadOnlySpan<TensorSource> fishers,
        long total, ChunkLaunch launch)
    {
        int n = inputs.Length, f = fishers.Length;
        TensorSource[] sources = [.. inputs, .. fishers, .. (baseline is { } b ? [b] : Array.Empty<TensorSource>())];
        int chunk = (int)Math.Max(1, Math.Min(ChunkElements, total));
        using Lock.Scope scope = _lock.EnterScope(); // one set of slots and cached buffers
        foreach (ChunkSlot slot in _slots)
        {
            Prepare(slot, n, f, sources.Length, chunk);
        }

        int index = 0;
        try
        {
            for (long offset = 0; offset < total; offset += chunk, index++)
            {
                ChunkSlot slot = _slots[index & 1];
                Finish(slot);
                int length = (int)Math.Min(chunk, total - offset);
                Pack(slot, sources, offset, length, chunk);
                Upload(slot, sources, n, f, length, chunk);
                slot.Complete = launch(slot.Stream!, slot, slot.Stacked!.View.SubView(0, (long)n * length),
                    slot.Base!.View.SubView(0, length), slot.Fishers!.View.SubView(0, Math.Max(1L, (long)f * length)), offset, length);
            }

            Finish(_slots[index & 1]); // the older chunk first, so that results reach the host in chunk order
            Finish(_slots[(index + 1) & 1]);
        }
        finally
        {
            foreach (ChunkSlot slot in _slots)
            {
                slot.Stream?.Synchronize();
                slot.Complete = null;
            }
        }
    }

    private static void Finish(ChunkSlot slot)
    {
        slot.Stream!.Synchronize();
        Action? complete = slot.Complete;
        slot.Complete = null;
        complete?.Invoke();
    }

    private void Prepare(ChunkSlot slot, int n, int f, int sources, int chunk)
    {
        slot.Stream ??= _accelerator.CreateStream();
        Reuse(ref slot.Stacked, (long)n * chunk);
        Reuse(ref slot.Fishers, Math.Max(1L, (long)f * chunk));
        Reuse(ref slot.Base, chunk);
        Reuse(ref slot.Result, chunk);
        Reuse(ref slot.Raw, (long)sources * chunk);
        slot.HostPointer = ReusePageLocked(ref slot.Host, (long)sources * chunk * sizeof(float));
        slot.OutputPointer = ReusePageLocked(ref slot.Output, (long)chunk * sizeof(float));
    }

    /// <summary>Bytes a worker copies at a time when packing a chunk into page-locked memory.</summary>
    private const long PackPiece = 4 << 20;

    /// <summary>Copies each source's chunk into the slot's page-locked buffer (source q at q · chunk · 4 bytes), on
    /// several threads when there is enough to copy: host memory bandwidth, not one core, should bound it.</summary>
    private static void Pack(ChunkSlot slot, TensorSource[] sources, long offset, int length, int chunk)
    {
        byte* host = (byte*)slot.HostPointer;
        long[] bytes = sources.Select(source => (long)length * TensorSource.ElementSize(source.DataType)).ToArray();
        int[] pieces = bytes.Select(count => (int)((count + PackPiece - 1) / PackPiece)).ToArray();
        int totalPieces = pieces.Sum();
        void CopyPiece(int piece)
        {
            int q = 0;
            while (piece >= pieces[q])
            {
                piece -= pieces[q++];
            }

            long start = piece * PackPiece, count = Math.Min(PackPiece, bytes[q] - start);
            int size = TensorSource.ElementSize(sources[q].DataType);
            Buffer.MemoryCopy(sources[q].Data + offset * size + start, host + (long)q * chunk * sizeof(float) + start, count, count);
        }

        if (totalPieces <= 1)
        {
            for (int piece = 0; piece < totalPieces; piece++)
            {
                CopyPiece(piece);
            }
        }
        else
        {
            Parallel.For(0, totalPieces, CopyPiece);
        }
    }

    /// <summary>Enqueues the copies of the packed chunk to the device on the slot's stream: fp32 sources land in
    /// their stacked buffer, 16-bit ones in the raw buffer and are widened there.</summary>
    private void Upload(ChunkSlot slot, TensorSource[] sources, int n, int f, int length, int chunk)
    {
        AcceleratorStream stream = slot.Stream!;
        for (int q = 0; q < sources.Length; q++)
        {
            ArrayView<float> destination = q < n ? slot.Stacked!.View.SubView((long)q * length, length)
                : q < n + f ? slot.Fishers!.View.SubView((long)(q - n) * length, length)
                : slot.Base!.View.SubView(0, length);
            byte* host = (byte*)slot.HostPointer + (long)q * chunk * sizeof(float);
            if (sources[q].DataType == OnnxDataType.Float)
            {
                destination.CopyFromCPUUnsafeAsync(stream, ref Unsafe.AsRef<float>((float*)host), length);
                continue;
            }

            ArrayView<ushort> raw = slot.Raw!.View.SubView((long)q * chunk, length);
            raw.CopyFromCPUUnsafeAsync(stream, ref Unsafe.AsRef<ushort>((ushort*)host), length);
            _decode(stream, length, raw, destination, sources[q].DataType == OnnxDataType.BFloat16 ? 1 : 0);
        }
    }

    /// <summary>A cached device buffer of at least <paramref name="length"/> elements (grown, never shrunk, until disposal).</summary>
    private MemoryBuffer1D<T, Stride1D.Dense> Reuse<T>(ref MemoryBuffer1D<T, Stride1D.Dense>? slot, long length)
        where T : unmanaged
    {
        if (slot is null || slot.Length < length)
        {
            slot?.Dispose();
            slot = _accelerator.Allocate1D<T>(Math.Max(1, length));
        }

        return slot;
    }

    /// <summary>A cached page-locked host buffer of at least <paramref name="length"/> elements; returns its address.</summary>
    private nint ReusePageLocked<T>(ref PageLockedArray1D<T>? slot, long length) where T : unmanaged
    {
        if (slot is null || slot.Length < length)
        {
            slot?.Dispose();
            slot = _accelerator.AllocatePageLocked1D<T>(Math.Max(1, length), true);
        }

        return (nint)Unsafe.AsPointer(ref slot[0L]);
    }

    /// <summary>What one chunk in flight owns: its stream, page-locked host buffers and device buffers.</summary>
    private sealed class ChunkSlot : IDisposable
    {
        public AcceleratorStream? Stream;
        public PageLockedArray1D<byte>? Host;
        public PageLockedArray1D<float>? Output;
        public nint HostPointer, OutputPointer;
        public MemoryBuffer1D<float, Stride1D.Dense>? Stacked, Fishers, Base, Result;
        public MemoryBuffer1D<ushort, Stride1D.Dense>? Raw;
        public MemoryBuffer1D<long, Stride1D.Dense>? Tally;
        public MemoryBuffer1D<double, Stride1D.Dense>? Gram;
        public Action? Complete;

        public void Dispose()
        {
            foreach (IDisposable? owned in new IDisposable?[] { Stacked, Fishers, Base, Result, Raw, Tally, Gram, Host, Output, Stream })
            {
                owned?.Dispose();
            }
        }
    }

    private MemoryBuffer1D<T, Stride1D.Dense> Upload<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        var buffer = _accelerator.Allocate1D<T>(Math.Max(1, values.Length));
        if (values.Length > 0)
        {
            buffer.View.SubView(0, values.Length).CopyFromCPU(ref Unsafe.AsRef(in values[0]), values.Length);
        }

        _accelerator.Synchronize(); // the slots' streams read it
        return buffer;
    }

    private static ulong[] DareKeys(DareMask? dare, int count)
    {
        var keys = new ulong[count];
        for (int k = 0; k < count && dare is { } mask; k++)
        {
            keys[k] = mask.KeyFor(k);
        }

        return keys;
    }

    private static Shape Base(int count, DareMask? dare) => new()
    {
        Count = count,
        HasBase = 1,
        DropThreshold = dare?.DropThreshold ?? 0,
        Scale = dare?.Scale ?? 1f,
        Filter = -1,
        Majority = 1,
    };

    // ---- Kernels. They mirror CpuMergeKernels element by element; keep the two in step. ----

    private static void DecodeKernel(Index1D i, ArrayView<ushort> source, ArrayView<float> destination, int bfloat16)
    {
        uint bits = source[i];
        destination[i] = bfloat16 != 0 ? Interop.IntAsFloat(bits << 16) : HalfToSingle(bits);
    }

    private static float HalfToSingle(uint half)
    {
        uint sign = (half & 0x8000u) << 16;
        uint bits = (half & 0x7FFFu) << 13;
        uint exponent = bits & HalfBits.ShiftedExponent;
        bits += HalfBits.Rebias;
        if (exponent == HalfBits.ShiftedExponent)
        {
            bits += HalfBits.Rebias;
        }
        else if (exponent == 0)
        {
            bits = Interop.FloatAsInt(Interop.IntAsFloat(bits + (1u << 23)) - Interop.IntAsFloat(HalfBits.SubnormalMagic));
        }

        return Interop.IntAsFloat(bits | sign);
    }

    private static float DareScale(ArrayView<ulong> keys, int model, long element, Shape s) =>
        DareMask.Keeps(keys[model], element, s.DropThreshold) ? s.Scale : 0f;

    private static void WeightedSumKernel(Index1D j, ArrayView<float> x, ArrayView<float> baseline, ArrayView<float> w,
        ArrayView<ulong> keys, ArrayView<float> output, Shape s)
    {
        float b = s.HasBase != 0 ? baseline[j] : 0f;
        float acc = 0f;
        for (int k = 0; k < s.Count; k++)
        {
            float value = x[(long)k * s.Length + j];
            if (s.HasBase != 0)
            {
                value -= b;
                if (s.DropThreshold != 0)
                {
                    value *= DareScale(keys, k, s.Offset + j, s);
                }
            }

            float term = w[k] * value;
            acc = k == 0 ? term : acc + term;
        }

        output[j] = s.HasBase != 0 ? b + acc : acc;
    }

    private static float TiesElement(int j, ArrayView<float> x, ArrayView<float> baseline, ArrayView<uint> thresholds,
        ArrayView<ulong> keys, Shape s, out float sum, out float positiveMean, out float negativeMean, out int kept)
    {
        float b = baseline[j];
        sum = 0f;
        float positiveSum = 0f, negativeSum = 0f, positiveCount = 0f, negativeCount = 0f;
        for (int k = 0; k < s.Count; k++)
        {
            float delta = x[(long)k * s.Length + j] - b;
            if (s.DropThreshold != 0)
            {
                delta *= DareScale(keys, k, s.Offset + j, s);
            }

            if ((Interop.FloatAsInt(delta) & HalfBits.MagnitudeMask) < thresholds[k])
            {
                delta = 0f;
            }

            sum += delta;
            if (delta > 0f)
            {
                positiveSum += delta;
                positiveCount += 1f;
            }
            else if (delta < 0f)
            {
                negativeSum += delta;
                negativeCount += 1f;
            }
        }

        positiveMean = positiveSum / (positiveCount > 1f ? positiveCount : 1f);
        negativeMean = negativeSum / (negativeCount > 1f ? negativeCount : 1f);
        kept = (int)(positiveCount + negativeCount);
        return b;
    }

    private static void TiesTallyKernel(Index1D t, ArrayView<float> x, ArrayView<float> baseline, ArrayView<uint> thresholds,
        ArrayView<ulong> keys, ArrayView<long> partials, Shape s)
    {
        long tally = 0;
        for (int j = t; j < s.Length; j += s.Threads)
        {
            TiesElement(j, x, baseline, thresholds, keys, s, out float sum, out _, out _, out _);
            tally += sum > 0f ? 1 : sum < 0f ? -1 : 0;
        }

        partials[t] = tally;
    }

    private static void TiesKernel(Index1D j, ArrayView<float> x, ArrayView<float> baseline, ArrayView<uint> thresholds,
        ArrayView<ulong> keys, ArrayView<float> output, Shape s)
    {
        float b = TiesElement(j, x, baseline, thresholds, keys, s, out float sum, out float positiveMean,
            out float negativeMean, out int kept);
        bool negative = sum < 0f || (sum == 0f && kept > 0 && s.Majority < 0);
        float merged = (negative ? negativeMean : positiveMean) + (sum - sum);
        output[j] = b + s.Lambda * merged;
    }

    private static void FisherKernel(Index1D j, ArrayView<float> x, ArrayView<float> fishers, ArrayView<float> c,
        ArrayView<float> output, Shape s)
    {
        float numerator = 0f, denominator = 0f;
        for (int k = 0; k < s.Count; k++)
        {
            float fisher = fishers[(long)k * s.Length + j];
            float weight = c[k] * (fisher > s.Floor ? fisher : s.Floor);
            numerator += weight * x[(long)k * s.Length + j];
            denominator += weight;
        }

        output[j] = numerator / denominator;
    }

    private static void GramKernel(Index1D t, ArrayView<float> x, ArrayView<float> baseline, ArrayView<double> partials, Shape s)
    {
        int n = s.Count;
        long cells = (long)n * n;
        for (int a = 0; a < n; a++)
        {
            for (int c = a; c < n; c++)
            {
                double sum = 0;
                for (int j = t; j < s.Length; j += s.Threads)
                {
                    float b = s.HasBase != 0 ? baseline[j] : 0f;
                    sum += (double)(x[(long)a * s.Length + j] - b) * (x[(long)c * s.Length + j] - b);
                }

                partials[t * cells + a * n + c] = sum;
            }
        }
    }

    private static void CountKernel(Index1D j, ArrayView<float> x, ArrayView<float> baseline, ArrayView<ulong> keys,
        ArrayView<int> countsCoarse, ArrayView<long> windowStarts, ArrayView<long> counts, Shape s)
    {
        for (int k = 0; k < s.Count; k++)
        {
            long window = windowStarts[k];
            bool coarse = countsCoarse[k] != 0;
            if (!coarse && window == MagnitudeThreshold.NoWindow)
            {
                continue;
            }

            float delta = x[(long)k * s.Length + j] - baseline[j];
            if (s.DropThreshold != 0)
            {
                delta *= DareScale(keys, k, s.Offset + j, s);
            }

            uint magnitude = Interop.FloatAsInt(delta) & HalfBits.MagnitudeMask;
            long histogram = (long)k * HistogramLength;
            if (coarse)
            {
                Atomic.Add(ref counts[histogram + (magnitude >> MagnitudeThreshold.CoarseShift)], 1L);
            }

            if (window != MagnitudeThreshold.NoWindow)
            {
                uint offset = magnitude - (uint)window;
                if (magnitude < (uint)window)
                {
                    Atomic.Add(ref counts[histogram + MagnitudeThreshold.CoarseBins + MagnitudeThreshold.FineBins + (j.X & (BelowSlots - 1))], 1L);
                }
                else if (offset < MagnitudeThreshold.FineBins)
                {
                    Atomic.Add(ref counts[histogram + MagnitudeThreshold.CoarseBins + offset], 1L);
                }
            }
        }
    }
}
