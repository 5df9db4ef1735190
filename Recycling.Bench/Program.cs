using BenchmarkDotNet.Running;
using Recycling.Bench;

if (MergeCommands.TryRun(args, out var exitCode))
{
    return exitCode;
}

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
