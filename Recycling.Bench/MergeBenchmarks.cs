using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Exporters.Json;
using BenchmarkDotNet.Jobs;

namespace Recycling.Bench;

/// <summary>
/// End-to-end merge of 4 generated fp32 transformer-like models with external data (issue 3's benchmark), next to the
/// I/O floor measured in the same run. The size per model comes from $RECYCLING_MERGE_SIZE (default 256MiB; the
/// issue's configuration is 1GiB). Inputs are page-cache warm for the floor and the merges alike (nothing is dropped
/// between iterations); outputs are written and fsynced like any merge, then deleted.
/// <code>RECYCLING_MERGE_SIZE=1GiB dotnet run -c Release --project Recycling.Bench -- --filter '*MergeBenchmarks*'</code>
/// </summary>
[Config(typeof(MergeBenchmarkConfig))]
[MemoryDiagnoser]
public class MergeBenchmarks
{
    private SyntheticModelSet _set = null!;
    private string _output = null!;

    public static IEnumerable<string> Sizes => [Environment.GetEnvironmentVariable("RECYCLING_MERGE_SIZE") is { Length: > 0 } size ? size : EndToEndMerge.DefaultSize];

    [ParamsSource(nameof(Sizes))]
    public string Size { get; set; } = EndToEndMerge.DefaultSize;

    [GlobalSetup]
    public void Setup()
    {
        _set = EndToEndMerge.Models(SyntheticModels.ParseSize(Size), Console.Out);
        _output = Path.Combine(_set.Folder, "out", "merged.onnx");
        Directory.CreateDirectory(Path.GetDirectoryName(_output)!);
    }

    [IterationCleanup]
    public void DeleteOutput() => EndToEndMerge.DeleteOutput(_output);

    /// <summary>Reads the 4 inputs' files once and writes (and fsyncs) one model's worth of bytes.</summary>
    [Benchmark(Baseline = true)]
    public long IoFloor() => EndToEndMerge.IoFloor(_set.FineTuningFiles, new FileInfo(_set.Base + ".data").Length, _output + ".data");

    [Benchmark]
    public long Uniform() => EndToEndMerge.Merge(_set, "uniform", _output).BytesWritten;

    /// <summary>TIES, density 0.2, global trim (a 1/64 sample, one counting pass, then the merge; reads the base too).</summary>
    [Benchmark]
    public long Ties() => EndToEndMerge.Merge(_set, "ties", _output).BytesWritten;

    /// <summary>DARE p = 0.9, seed 1, over task arithmetic (reads the base too).</summary>
    [Benchmark]
    public long Dare() => EndToEndMerge.Merge(_set, "dare", _output).BytesWritten;
}

/// <summary>
/// Each operation moves gigabytes: one warm-up and three measured runs ($RECYCLING_MERGE_ITERATIONS to change) of one
/// invocation each.
/// </summary>
public sealed class MergeBenchmarkConfig : ManualConfig
{
    public MergeBenchmarkConfig()
    {
        var iterations = int.TryParse(Environment.GetEnvironmentVariable("RECYCLING_MERGE_ITERATIONS"), out var n) && n > 0 ? n : 3;
        AddJob(Job.Default.WithStrategy(RunStrategy.Monitoring).WithLaunchCount(1).WithWarmupCount(1).WithIterationCount(iterations)
            .WithInvocationCount(1).WithUnrollFactor(1).WithId("EndToEnd"));
        AddExporter(JsonExporter.Full);
    }
}
