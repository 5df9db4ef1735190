using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Bench;

/// <summary>
/// Merge-kernel benchmarks (issue 6). Sizes are bytes per input, from RECYCLING_BENCH_MIB (default "4" for a quick run;
/// the figures use <c>RECYCLING_BENCH_MIB=64,512</c>, which needs about 5 GiB of RAM for N = 8 at 512; add
/// <c>RECYCLING_BENCH_PATHS=Vector512,Vector512xT</c> to measure only the widest path at 512).
/// The GB/s column is bytes read + bytes written per operation over its mean time; compare kernels through it, since
/// the STREAM-like baseline (<see cref="KernelBaselineBenchmarks"/>) moves a different number of bytes.
/// <code>dotnet run -c Release --project Recycling.Bench -- --filter '*Kernel*' -j short</code>
/// </summary>
public static class KernelSizes
{
    public static IEnumerable<int> MiB =>
        (Environment.GetEnvironmentVariable("RECYCLING_BENCH_MIB") ?? "4").Split(',').Select(int.Parse);

    /// <summary>SIMD paths this machine runs single-threaded, and the widest one on every core ("…xT"); RECYCLING_BENCH_PATHS
    /// (e.g. "Vector512,Vector512xT") keeps only the named ones, for long runs at large sizes.</summary>
    public static IEnumerable<string> Paths
    {
        get
        {
            var all = SimdPaths.Available.Select(p => p.ToString()).Append($"{SimdPaths.Available[^1]}xT");
            var wanted = Environment.GetEnvironmentVariable("RECYCLING_BENCH_PATHS")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            return wanted is { Length: > 0 } ? all.Where(wanted.Contains) : all;
        }
    }

    internal static CpuMergeKernels Kernels(string path) => path.EndsWith("xT", StringComparison.Ordinal)
        ? new CpuMergeKernels(Enum.Parse<SimdPath>(path[..^2]))
        : new CpuMergeKernels(Enum.Parse<SimdPath>(path), threads: 1);

    /// <summary>Random task-vector-like values (normal, scale 0.5) encoded as <paramref name="type"/>, in 64-byte aligned native memory.</summary>
    internal static unsafe TensorSource Allocate(long bytes, OnnxDataType type, int seed)
    {
        int size = TensorSource.ElementSize(type);
        long elements = bytes / size;
        byte* data = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        var random = new Random(seed);
        float[] block = new float[1 << 16];
        for (long start = 0; start < elements; start += block.Length)
        {
            int count = (int)Math.Min(block.Length, elements - start);
            for (int i = 0; i < count; i++)
            {
                block[i] = (float)((random.NextDouble() - 0.5) * 1.0);
            }

            ElementCodec.Encode(block.AsSpan(0, count), type, new Span<byte>(data + start * size, count * size));
        }

        return new TensorSource(data, elements, type);
    }

    internal static unsafe void Free(TensorSource source) => NativeMemory.AlignedFree(source.Data);
}

/// <summary>Effective bandwidth: bytes read + written per operation over the mean time.</summary>
public sealed class BandwidthColumn : IColumn
{
    public string Id => nameof(BandwidthColumn);

    public string ColumnName => "GB/s";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => 0;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => "Bytes read + written per operation / mean time (10^9 bytes per second)";

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public bool IsAvailable(Summary summary) => true;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        double? meanNs = summary[benchmarkCase]?.ResultStatistics?.Mean;
        if (meanNs is null)
        {
            return "-";
        }

        if (benchmarkCase.Descriptor.Type != typeof(KernelBaselineBenchmarks) && benchmarkCase.Descriptor.Type != typeof(KernelMeanBenchmarks)
            && benchmarkCase.Descriptor.Type != typeof(KernelTiesBenchmarks))
        {
            return "-"; // the byte counts below are the kernels'; other benchmarks in the run (OnnxIoBenchmarks) move other amounts
        }

        var parameters = benchmarkCase.Parameters;
        long inputBytes = (long)(int)parameters["MiB"] << 20;
        string method = benchmarkCase.Descriptor.WorkloadMethod.Name;
        double bytes;
        if (benchmarkCase.Descriptor.Type == typeof(KernelBaselineBenchmarks))
        {
            bytes = 3.0 * inputBytes; // a + b -> destination
        }
        else
        {
            int n = parameters.Items.Any(p => p.Name == "N") ? (int)parameters["N"] : KernelTiesBenchmarks.Inputs;
            var type = parameters.Items.Any(p => p.Name == "DataType") ? (OnnxDataType)parameters["DataType"] : OnnxDataType.Float;
            long elements = inputBytes / TensorSource.ElementSize(type);
            bool hasBase = method != nameof(KernelMeanBenchmarks.Mean) && method != nameof(KernelTiesBenchmarks.UniformMean);
            bytes = (n + (hasBase ? 1 : 0)) * (double)inputBytes + 4.0 * elements;
        }

        return (bytes / meanNs.Value).ToString("F2", System.Globalization.CultureInfo.InvariantCulture);
    }
}

/// <summary>STREAM-like add over fp32 arrays of the same size as one input: destination = a + b.</summary>
[MemoryDiagnoser]
public class KernelBaselineBenchmarks
{
    private float[] _a = [], _b = [], _destination = [];

    [ParamsSource(typeof(KernelSizes), nameof(KernelSizes.MiB))]
    public int MiB { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        int elements = (MiB << 20) / 4;
        var random = new Random(1);
        _a = Enumerable.Range(0, elements).Select(_ => random.NextSingle()).ToArray();
        _b = Enumerable.Range(0, elements).Select(_ => random.NextSingle()).ToArray();
        _destination = new float[elements];
    }

    [Benchmark(Baseline = true, Description = "TensorPrimitives.Add 1 thread")]
    public void Add() => TensorPrimitives.Add(_a, _b, _destination);

    [Benchmark(Description = "TensorPrimitives.Add all threads")]
    public void AddParallel()
    {
        const int chunk = CpuMergeKernels.DefaultChunkElements;
        int chunks = (_a.Length + chunk - 1) / chunk;
        Parallel.For(0, chunks, c =>
        {
            int start = c * chunk, count = Math.Min(chunk, _a.Length - start);
            TensorPrimitives.Add(_a.AsSpan(start, count), _b.AsSpan(start, count), _destination.AsSpan(start, count));
        });
    }
}

/// <summary>N-way uniform mean (the fused weighted-sum kernel) per dtype and SIMD path.</summary>
[MemoryDiagnoser]
public class KernelMeanBenchmarks
{
    private TensorSource[] _inputs = [];
    private float[] _weights = [];
    private float[] _output = [];
    private CpuMergeKernels? _kernels;

    [Params(2, 4, 8)]
    public int N { get; set; }

    [Params(OnnxDataType.Float, OnnxDataType.Float16, OnnxDataType.BFloat16)]
    public OnnxDataType DataType { get; set; }

    [ParamsSource(typeof(KernelSizes), nameof(KernelSizes.Paths))]
    public string Path { get; set; } = "";

    [ParamsSource(typeof(KernelSizes), nameof(KernelSizes.MiB))]
    public int MiB { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _inputs = Enumerable.Range(0, N).Select(k => KernelSizes.Allocate((long)MiB << 20, DataType, k)).ToArray();
        _weights = Enumerable.Repeat(1f / N, N).ToArray();
        _output = new float[_inputs[0].Length];
        _kernels = KernelSizes.Kernels(Path);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (TensorSource input in _inputs)
        {
            KernelSizes.Free(input);
        }

        _kernels?.Dispose();
    }

    [Benchmark]
    public void Mean() => _kernels!.WeightedSum(_inputs, _weights, null, null, _output);
}

/// <summary>TIES and DARE on 4 fp32 inputs (plus base) against the uniform mean of the same inputs, widest path, all threads.</summary>
[MemoryDiagnoser]
public class KernelTiesBenchmarks
{
    public const int Inputs = 4;
    private TensorSource[] _inputs = [];
    private TensorSource _base;
    private float[] _output = [];
    private CpuMergeKernels? _kernels;
    private TensorMerger? _ties;
    private TensorMerger? _dare;
    private uint[] _thresholds = [];

    [ParamsSource(typeof(KernelSizes), nameof(KernelSizes.MiB))]
    public int MiB { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _inputs = Enumerable.Range(0, Inputs).Select(k => KernelSizes.Allocate((long)MiB << 20, OnnxDataType.Float, k)).ToArray();
        _base = KernelSizes.Allocate((long)MiB << 20, OnnxDataType.Float, 99);
        _output = new float[_base.Length];
        _kernels = new CpuMergeKernels();
        _ties = new TensorMerger(new MergeOptions { Method = MergeMethod.Ties, TrimScope = TiesTrimScope.PerTensor }, Inputs, _kernels);
        _dare = new TensorMerger(new MergeOptions { Method = MergeMethod.Dare, DropRate = 0.9 }, Inputs, _kernels);
        _thresholds = Enumerable.Repeat(BitConverter.SingleToUInt32Bits(0.3f), Inputs).ToArray();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (TensorSource input in _inputs.Append(_base))
        {
            KernelSizes.Free(input);
        }

        _kernels?.Dispose();
    }

    [Benchmark(Baseline = true)]
    public void UniformMean() => _kernels!.WeightedSum(_inputs, [0.25f, 0.25f, 0.25f, 0.25f], null, null, _output);

    /// <summary>The TIES merge step alone (thresholds known, as after the global prepasses).</summary>
    [Benchmark]
    public void TiesMergeStep() => _kernels!.Ties(_inputs, _base, _thresholds, 1f, null, _output);

    /// <summary>Per-tensor TIES: a sample, then one windowed counting pass per tensor (three when the sample misleads) for the exact top-20% threshold, then the merge.</summary>
    [Benchmark]
    public void TiesWithSelection() => _ties!.Merge(1, _inputs, _base, default, _output);

    [Benchmark]
    public void DareTaskArithmetic() => _dare!.Merge(1, _inputs, _base, default, _output);
}
