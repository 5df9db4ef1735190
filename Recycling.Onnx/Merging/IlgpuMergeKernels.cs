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
    private readonly Action<Index1D, ArrayView<ushort>, ArrayView<float>, int> _decode;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ulong>, ArrayView<float>, Shape> _weightedSum;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<ulong>, ArrayView<float>, Shape> _ties;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<ulong>, ArrayView<long>, Shape> _tiesTally;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape> _fisher;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<double>, Shape> _gram;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ulong>, ArrayView<int>, ArrayView<long>, ArrayView<long>, Shape> _count;

    private IlgpuMergeKernels(Context context, Accelerator accelerator, int chunkElements)
    {
        _context = context;
        _accelerator = accelerator;
        ChunkElements = chunkElements;
        _decode = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, ArrayView<float>, int>(DecodeKernel);
        _weightedSum = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<ulong>, ArrayView<float>, Shape>(WeightedSumKernel);
        _ties = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<uint>,
            ArrayView<ulong>, ArrayView<float>, Shape>(TiesKernel);
        _tiesTally = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<uint>,
            ArrayView<ulong>, ArrayView<long>, Shape>(TiesTallyKernel);
        _fisher = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, Shape>(FisherKernel);
        _gram = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<double>, Shape>(GramKernel);
        _count = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ulong>,
            ArrayView<int>, ArrayView<long>, ArrayView<long>, Shape>(CountKernel);
    }

    private readonly Lock _lock = new();
    private MemoryBuffer1D<float, Stride1D.Dense>? _stacked, _fisherStack, _base, _result;
    private MemoryBuffer1D<ushort, Stride1D.Dense>? _staging;

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

    /// <summary>The first CUDA device; a <see cref="RecyclingException"/> (never a crash) when none is usable.</summary>
    public static IlgpuMergeKernels CreateCuda(int chunkElements = 1 << 24) =>
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
        foreach (IDisposable? buffer in new IDisposable?[] { _stacked, _fisherStack, _base, _result, _staging })
        {
            buffer?.Dispose();
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
            (x, b, _, result, s) => _weightedSum(s.Length, x, b, w.View, keys.View, result, s));
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
        ForEachChunk(inputs, baseline, default, output.Length, (x, b, _, offset, length) =>
        {
            using var partials = _accelerator.Allocate1D<long>(ReductionThreads);
            Shape s = shape;
            s.Offset = offset;
            s.Length = length;
            _tiesTally(ReductionThreads, x, b, thresholds.View, keys.View, partials.View, s);
            foreach (long partial in partials.GetAsArray1D())
            {
                tally += partial;
            }
        });

        if (signs is null)
        {
            shape.Majority = tally > 0 ? 1 : -1;
            ForEachOutputChunk(inputs, baseline, default, shape, output,
                (x, b, _, result, s) => _ties(s.Length, x, b, thresholds.View, keys.View, result, s));
            return;
        }

        // A chunk of a larger tensor: positive-majority values out, and the elements where a negative majority would
        // differ (the exact ties) as patches.
        shape.Majority = 1;
        ForEachOutputChunk(inputs, baseline, default, shape, output,
            (x, b, _, result, s) => _ties(s.Length, x, b, thresholds.View, keys.View, result, s));
        float[] negative = new float[output.Length];
        shape.Majority = -1;
        ForEachOutputChunk(inputs, baseline, default, shape, negative,
            (x, b, _, result, s) => _ties(s.Length, x, b, thresholds.View, keys.View, result, s));
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
            (x, _, f, result, s) => _fisher(s.Length, x, f, c.View, result, s));
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
        ForEachChunk(inputs, baseline, default, total, (x, b, _, offset, length) =>
        {
            using var partials = _accelerator.Allocate1D<double>((long)ReductionThreads * n * n);
            Shape s = shape;
            s.Length = length;
            _gram(ReductionThreads, x, b, partials.View, s);
            double[] host = partials.GetAsArray1D();
            for (int t = 0; t < ReductionThreads; t++)
            {
                for (int cell = 0; cell < n * n; cell++)
                {
                    sums[cell] += host[t * n * n + cell];
                }
            }
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
        var shape = Base(n, dare);
        ForEachChunk(inputs, baseline, default, baseline.Length, (x, b, _, offset, length) =>
        {
            Shape s = shape;
            s.Offset = offset;
            s.Length = length;
            _count(length, x, b, keys.View, modelCoarse.View, modelWindows.View, histograms.View, s);
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

    private delegate void OutputLaunch(ArrayView<float> inputs, ArrayView<float> baseline, ArrayView<float> fishers,
        ArrayView<float> result, Shape chunkShape);

    /// <summary>Runs an elementwise kernel chunk by chunk (<paramref name="shape"/> with the chunk's offset and length) into a
    /// reused device buffer, downloading each chunk's result into <paramref name="output"/>.</summary>
    private void ForEachOutputChunk(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, ReadOnlySpan<TensorSource> fishers,
        Shape shape, Span<float> output, OutputLaunch launch)
    {
        fixed (float* pinned = output)
        {
            nint o = (nint)pinned;
            ForEachChunk(inputs, baseline, fishers, output.Length, (x, b, f, offset, length) =>
            {
                var result = Reuse(ref _result, length);
                Shape s = shape;
                s.Offset = offset;
                s.Length = length;
                launch(x, b, f, result.View, s);
                Download(result, (float*)o + offset, length);
            });
        }
    }

    private delegate void ChunkAction(ArrayView<float> inputs, ArrayView<float> baseline, ArrayView<float> fishers,
        long offset, int length);

    /// <summary>Uploads and widens each chunk of every source into stacked fp32 device buffers, then runs <paramref name="action"/>.</summary>
    private void ForEachChunk(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, ReadOnlySpan<TensorSource> fishers,
        long total, ChunkAction action)
    {
        int n = inputs.Length, f = fishers.Length;
        int chunk = (int)Math.Max(1, Math.Min(ChunkElements, total));
        using Lock.Scope scope = _lock.EnterScope(); // one accelerator stream and one set of cached buffers
        var stacked = Reuse(ref _stacked, (long)n * chunk);
        var fisherStack = Reuse(ref _fisherStack, Math.Max(1L, (long)f * chunk));
        var baseBuffer = Reuse(ref _base, chunk);
        var staging = Reuse(ref _staging, chunk);
        for (long offset = 0; offset < total; offset += chunk)
        {
            int length = (int)Math.Min(chunk, total - offset);
            for (int k = 0; k < n; k++)
            {
                Stage(inputs[k], offset, length, stacked.View.SubView((long)k * length, length), staging);
            }

            for (int k = 0; k < f; k++)
            {
                Stage(fishers[k], offset, length, fisherStack.View.SubView((long)k * length, length), staging);
            }

            if (baseline is { } b)
            {
                Stage(b, offset, length, baseBuffer.View.SubView(0, length), staging);
            }

            action(stacked.View.SubView(0, (long)n * length), baseBuffer.View.SubView(0, length),
                fisherStack.View.SubView(0, Math.Max(1L, (long)f * length)), offset, length);
        }

        _accelerator.Synchronize();
    }

    private void Stage(TensorSource source, long offset, int length, ArrayView<float> destination,
        MemoryBuffer1D<ushort, Stride1D.Dense> staging)
    {
        if (source.DataType == OnnxDataType.Float)
        {
            destination.CopyFromCPU(ref Unsafe.AsRef<float>((float*)source.Data + offset), length);
            return;
        }

        ArrayView<ushort> raw = staging.View.SubView(0, length);
        raw.CopyFromCPU(ref Unsafe.AsRef<ushort>((ushort*)source.Data + offset), length);
        _decode(length, raw, destination, source.DataType == OnnxDataType.BFloat16 ? 1 : 0);
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

    private void Download(MemoryBuffer1D<float, Stride1D.Dense> result, float* destination, int length)
    {
        result.View.SubView(0, length).CopyToCPU(ref Unsafe.AsRef<float>(destination), length);
    }

    private MemoryBuffer1D<T, Stride1D.Dense> Upload<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        var buffer = _accelerator.Allocate1D<T>(Math.Max(1, values.Length));
        if (values.Length > 0)
        {
            buffer.View.SubView(0, values.Length).CopyFromCPU(ref Unsafe.AsRef(in values[0]), values.Length);
        }

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
