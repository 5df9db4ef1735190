using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Exporters.Json;
using BenchmarkDotNet.Running;
using Recycling.Bench;

if (MergeCommands.TryRun(args, out var exitCode) || TrainSpeed.TryRun(args, out exitCode) || OpSpeed.TryRun(args, out exitCode) || GpuBench.TryRun(args, out exitCode))
{
    return exitCode;
}

IConfig config = DefaultConfig.Instance
    .AddColumn(new BandwidthColumn())
    .AddExporter(JsonExporter.Full);
BenchmarkSwitcher.FromAssembly(typeof(BandwidthColumn).Assembly).Run(args, config);
return 0;
