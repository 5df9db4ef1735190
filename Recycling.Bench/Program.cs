using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Exporters.Json;
using BenchmarkDotNet.Running;
using Recycling.Bench;

IConfig config = DefaultConfig.Instance
    .AddColumn(new BandwidthColumn())
    .AddExporter(JsonExporter.Full);
BenchmarkSwitcher.FromAssembly(typeof(BandwidthColumn).Assembly).Run(args, config);
