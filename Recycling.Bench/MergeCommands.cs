using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recycling.Onnx.Merging;

namespace Recycling.Bench;

/// <summary>
/// Measurements that need a fresh process rather than BenchmarkDotNet's harness:
/// <list type="bullet">
/// <item><c>merge-rss [--size 1GiB] [--method uniform|ties|dare|REGISTRY-NAME[:param=value,...][,...]] [--floor] [--repeat N]</c>: N rounds (default 1)
/// of merging the 4 generated models with each listed method in turn, then per method the peak RSS (VmHWM, reset before
/// each merge so generation does not count; its anonymous and file-backed parts and the GC's committed bytes sampled by
/// <see cref="MemorySampler"/>), median wall time and CPU time (all threads), and its paired wall and CPU ratios
/// to the first method, as JSON; all methods of a run merge the same files (<see cref="EndToEndMerge.InputsFor"/>); with --floor, the I/O floor at the start of each round, timed the same way, so a loaded
/// machine still gives a CPU ratio.</item>
/// <item><c>merge-methods [--size 1GiB] [--repeat N] [--methods SPEC,...] [--out PREFIX]</c>: every registered method
/// against uniform, one fresh merge-rss process per method (<see cref="MethodBench"/>).</item>
/// <item><c>peer [--size 1GiB]</c>: the Python peer (scripts/bench/python_peer_merge.py: onnx + numpy, load, average,
/// save) and our merge, each in a fresh process on the same files, wall clock and peak RSS side by side.</item>
/// <item><c>generate [--size 1GiB]</c>: only generates the models (in $RECYCLING_BENCH_DIR or /tmp/recycling-mergebench).</item>
/// </list>
/// </summary>
internal static class MergeCommands
{
    private const string PythonPath = "/usr/bin/python3";

    /// <summary>Each command's options; the values shown in a usage are the defaults.</summary>
    private static readonly Dictionary<string, BenchCommand> Commands = new(StringComparer.Ordinal)
    {
        ["merge-rss"] = new("merge-rss [--size 256MiB] [--method uniform|ties|dare|REGISTRY-NAME[:param=value,...][,...]] [--floor] [--repeat 1]\n"
            + "  merges the generated models with each method in turn, in this process: peak RSS, wall and CPU time, I/O, as JSON",
            ["--size", "--method", "--repeat"], ["--floor"]),
        ["merge-methods"] = new("merge-methods [--size 256MiB] [--repeat 1] [--methods SPEC,...] [--out merge-methods-<MiB>MiB]\n"
            + "  every registered method (or those of --methods) against uniform, one fresh merge-rss process each; writes PREFIX.json and PREFIX.md",
            ["--size", "--repeat", "--methods", "--out"], []),
        ["peer"] = new("peer [--size 256MiB]\n  the Python peer (onnx + numpy) and our merge on the same files, each in a fresh process", ["--size"], []),
        ["generate"] = new("generate [--size 256MiB]\n  only generates the models (in $RECYCLING_BENCH_DIR or /tmp/recycling-mergebench)", ["--size"], []),
    };

    public static bool TryRun(string[] args, out int exitCode)
    {
        exitCode = 0;
        if (args.Length == 0 || !Commands.TryGetValue(args[0], out var command))
        {
            return false;
        }

        exitCode = BenchSupport.CheckArguments(args, command) ?? Run(args);
        return true;
    }

    private static int Run(string[] args)
    {
        var size = SyntheticModels.ParseSize(BenchSupport.Option(args, "--size") ?? EndToEndMerge.DefaultSize);
        var method = BenchSupport.Option(args, "--method") ?? "uniform";
        var repeat = int.Parse(BenchSupport.Option(args, "--repeat") ?? "1", CultureInfo.InvariantCulture);
        return args[0] switch
        {
            "merge-methods" => MethodBench.Run(size, repeat, BenchSupport.Option(args, "--methods"), BenchSupport.Option(args, "--out") ?? $"merge-methods-{size >> 20}MiB"),
            "merge-rss" => MergeRss(size, method, args.Contains("--floor"), repeat),
            "peer" => Peer(size),
            _ => Generate(size),
        };
    }

    private static int Generate(long size)
    {
        var set = EndToEndMerge.Models(size, Console.Error);
        Console.WriteLine(set.Folder);
        return 0;
    }

    private static int MergeRss(long size, string methodList, bool floor, int repeat)
    {
        var methods = MethodBench.SplitSpecs(methodList);
        var set = EndToEndMerge.Models(size, Console.Error);
        var inputs = EndToEndMerge.InputsFor(methods);
        var output = Path.Combine(set.Folder, "out", $"merged-rss-{Environment.ProcessId}.onnx");
        Directory.CreateDirectory(Path.GetDirectoryName(output)!);
        try
        {
            var result = new JsonObject { ["method"] = methodList, ["models"] = set.FineTunings.Count, ["bytes_per_model"] = size, ["repeat"] = repeat, ["inputs"] = inputs.ToString() };
            var floors = new List<(double Wall, double Cpu)>();
            var runs = methods.ToDictionary(m => m, _ => new List<(double Wall, double Cpu, long Peak)>());
            var memory = methods.ToDictionary(m => m, _ => new JsonArray());
            var io = methods.ToDictionary(m => m, _ => new List<(long Read, long Disk)>());
            var summaries = new Dictionary<string, MergeSummary>();
            var before = BenchSupport.ProcessStatus();
            // Floor and methods alternate, so a change in the machine's load or the disk's write-back hits all alike.
            for (var r = 0; r < repeat; r++)
            {
                if (floor)
                {
                    floors.Add(Timed(() => EndToEndMerge.IoFloor(set.FineTuningFiles, new FileInfo(set.Base + ".data").Length, output + ".data")));
                    EndToEndMerge.DeleteOutput(output);
                }

                foreach (var method in methods)
                {
                    // Earlier merges' garbage would otherwise count in this merge's peak: a fresh process has none.
                    GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
                    ResetPeak();
                    var sampler = MemorySampler.Start();
                    var ioBefore = BenchSupport.ProcessIo();
                    var (wall, cpu) = Timed(() => summaries[method] = EndToEndMerge.Merge(set, method, output, inputs));
                    var ioAfter = BenchSupport.ProcessIo();
                    io[method].Add((ioAfter.GetValueOrDefault("rchar") - ioBefore.GetValueOrDefault("rchar"), ioAfter.GetValueOrDefault("read_bytes") - ioBefore.GetValueOrDefault("read_bytes")));
                    runs[method].Add((wall, cpu, BenchSupport.ProcessStatus().GetValueOrDefault("VmHWM")));
                    memory[method].Add(sampler.Stop());
                    EndToEndMerge.DeleteOutput(output);
                }
            }

            var after = BenchSupport.ProcessStatus();
            result["rss_before_merge_bytes"] = before.GetValueOrDefault("VmRSS");
            result["rss_end_anon_bytes"] = after.GetValueOrDefault("RssAnon");
            result["rss_end_file_bytes"] = after.GetValueOrDefault("RssFile");
            result["peak_reset"] = PeakWasReset;
            result["native_libraries_loaded"] = MemorySampler.LoadedLibraries("onnxruntime", "torch", "c10", "ilgpu", "cuda");
            result["process_s"] = (DateTime.Now - Process.GetCurrentProcess().StartTime).TotalSeconds;
            // The first method's figures at the top level (what `peer` reads), every method's under "methods".
            var byMethod = new JsonObject();
            foreach (var method in methods)
            {
                var m = runs[method];
                var summary = summaries[method];
                var entry = new JsonObject
                {
                    ["merge_s"] = BenchSupport.Median(m.Select(x => x.Wall)),
                    ["merge_cpu_s"] = BenchSupport.Median(m.Select(x => x.Cpu)),
                    ["merge_runs_s"] = new JsonArray([.. m.Select(x => JsonValue.Create(x.Wall))]),
                    ["merge_cpu_runs_s"] = new JsonArray([.. m.Select(x => JsonValue.Create(x.Cpu))]),
                    ["peak_rss_bytes"] = m.Max(x => x.Peak),
                    ["peak_rss_runs_bytes"] = new JsonArray([.. m.Select(x => JsonValue.Create(x.Peak))]),
                    ["peak_rss_anon_bytes"] = memory[method].Max(x => x!["rss_anon_peak_bytes"]!.GetValue<long>()),
                    ["peak_rss_file_bytes"] = memory[method].Max(x => x!["rss_file_peak_bytes"]!.GetValue<long>()),
                    ["memory_runs"] = memory[method].DeepClone(),
                    ["bytes_read"] = summary.BytesRead, // the merge's own count: tensor bytes read, once per input tensor
                    // The process's counters over each merge (the memory sampler's /proc reads included): read and
                    // pread calls, served from the page cache or the disk; and what was fetched from the disk.
                    ["io_rchar_runs_bytes"] = new JsonArray([.. io[method].Select(x => JsonValue.Create(x.Read))]),
                    ["io_read_from_disk_runs_bytes"] = new JsonArray([.. io[method].Select(x => JsonValue.Create(x.Disk))]),
                    ["bytes_written"] = summary.BytesWritten,
                    ["kernels"] = summary.Kernels,
                    ["notes"] = new JsonArray([.. summary.Notes.Select(n => JsonValue.Create(n))]),
                };
                if (method != methods[0])
                {
                    // Paired: run r of this method against run r of the first, which ran just before it.
                    var ratios = m.Zip(runs[methods[0]], (x, first) => x.Wall / first.Wall).ToArray();
                    entry[$"over_{methods[0]}"] = BenchSupport.Median(ratios);
                    entry[$"over_{methods[0]}_runs"] = new JsonArray([.. ratios.Select(x => JsonValue.Create(x))]);
                    var cpuRatios = m.Zip(runs[methods[0]], (x, first) => x.Cpu / first.Cpu).ToArray();
                    entry[$"over_{methods[0]}_cpu"] = BenchSupport.Median(cpuRatios);
                    entry[$"over_{methods[0]}_cpu_runs"] = new JsonArray([.. cpuRatios.Select(x => JsonValue.Create(x))]);
                }

                byMethod[method] = entry;
            }

            foreach (var (key, value) in byMethod[methods[0]]!.AsObject())
            {
                result[key] = value?.DeepClone();
            }

            result["methods"] = byMethod;
            if (floor)
            {
                var merges = runs[methods[0]];
                result["floor_s"] = BenchSupport.Median(floors.Select(f => f.Wall));
                result["floor_cpu_s"] = BenchSupport.Median(floors.Select(f => f.Cpu));
                result["floor_runs_s"] = new JsonArray([.. floors.Select(f => JsonValue.Create(f.Wall))]);
                result["merge_over_floor"] = result["merge_s"]!.GetValue<double>() / result["floor_s"]!.GetValue<double>();
                result["merge_over_floor_cpu"] = result["merge_cpu_s"]!.GetValue<double>() / result["floor_cpu_s"]!.GetValue<double>();
                // Fastest against fastest: what is left when neither run met the machine's occasional slow page-cache writes.
                result["merge_over_floor_best"] = merges.Min(m => m.Wall) / floors.Min(f => f.Wall);
            }

            Console.WriteLine(result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        finally
        {
            EndToEndMerge.DeleteOutput(output);
        }
    }

    private static bool PeakWasReset { get; set; }

    /// <summary>Wall-clock and CPU seconds (all threads of this process) of <paramref name="action"/>.</summary>
    private static (double Wall, double Cpu) Timed(Action action)
    {
        var process = Process.GetCurrentProcess();
        var cpu = process.TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        action();
        clock.Stop();
        process.Refresh();
        return (clock.Elapsed.TotalSeconds, (process.TotalProcessorTime - cpu).TotalSeconds);
    }

    /// <summary>Writing 5 to /proc/self/clear_refs resets VmHWM (Linux ≥ 4.0), so generation does not count.</summary>
    private static void ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            PeakWasReset = true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            PeakWasReset = false;
        }
    }

    private static int Peer(long size)
    {
        var script = FindScript();
        if (!PythonHasOnnx(out var why))
        {
            Console.WriteLine($"peer skipped: {PythonPath} cannot import onnx and numpy ({why}); install Debian's python3-onnx and python3-numpy");
            return 0;
        }

        var set = EndToEndMerge.Models(size, Console.Error);
        var output = Path.Combine(set.Folder, "out", "peer-merged.onnx");
        Directory.CreateDirectory(Path.GetDirectoryName(output)!);
        JsonNode ours, peer;
        double oursWall, peerWall;
        try
        {
            (peer, peerWall) = RunJson(PythonPath, [script, output, .. set.FineTunings]);
        }
        finally
        {
            EndToEndMerge.DeleteOutput(output);
        }

        (ours, oursWall) = RunJson(SelfCommand(), [.. SelfArguments(), "merge-rss", "--size", size.ToString(CultureInfo.InvariantCulture)]);
        var report = new JsonObject
        {
            ["bytes_per_model"] = size,
            ["models"] = set.FineTunings.Count,
            ["python_wall_s"] = peerWall,
            ["python_merge_s"] = peer["merge_s"]?.GetValue<double>(),
            ["python_cpu_s"] = peer["cpu_s"]?.GetValue<double>(),
            ["python_peak_rss_bytes"] = peer["peak_rss_bytes"]?.GetValue<long>(),
            ["ours_wall_s"] = oursWall,
            ["ours_merge_s"] = ours["merge_s"]?.GetValue<double>(),
            ["ours_cpu_s"] = ours["merge_cpu_s"]?.GetValue<double>(),
            ["ours_peak_rss_bytes"] = ours["peak_rss_bytes"]?.GetValue<long>(),
            ["speedup_wall"] = peerWall / oursWall,
            ["speedup_merge"] = peer["merge_s"]!.GetValue<double>() / ours["merge_s"]!.GetValue<double>(),
        };
        Console.WriteLine(report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }

    /// <summary>This bench's executable: the apphost, or dotnet with <see cref="SelfArguments"/> naming the assembly.</summary>
    internal static string SelfCommand() => Environment.ProcessPath!;

    internal static string[] SelfArguments() =>
        Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? [typeof(MergeCommands).Assembly.Location] : [];

    /// <summary>Runs a process whose last stdout line block is a JSON object; returns it and the wall time seen from outside.</summary>
    internal static (JsonNode Result, double WallSeconds) RunJson(string file, IEnumerable<string> arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in arguments)
        {
            start.ArgumentList.Add(a);
        }

        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {file}");
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        clock.Stop();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', start.ArgumentList)} exited with {process.ExitCode}:\n{stdout}");
        }

        var json = stdout[stdout.IndexOf('{', StringComparison.Ordinal)..];
        return (JsonNode.Parse(json)!, clock.Elapsed.TotalSeconds);
    }

    private static bool PythonHasOnnx(out string why)
    {
        why = "";
        if (!File.Exists(PythonPath))
        {
            why = $"{PythonPath} not found";
            return false;
        }

        var start = new ProcessStartInfo(PythonPath, ["-c", "import onnx, numpy"]) { RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        why = error.Trim().Split('\n').LastOrDefault() ?? "";
        return process.ExitCode == 0;
    }

    private static string FindScript()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "scripts", "bench", "python_peer_merge.py");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException("scripts/bench/python_peer_merge.py not found above " + AppContext.BaseDirectory);
    }
}
