using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Bench;

/// <summary>
/// <c>merge-methods [--size 1GiB] [--repeat 3] [--methods SPEC;SPEC...] [--out PREFIX]</c>: every registered merge
/// method end to end against the uniform merge, each in its own fresh process (<c>merge-rss --method uniform,SPEC</c>:
/// uniform and the method alternate for N rounds, paired ratios per round, peak RSS reset before each merge). A
/// method that merges at most 2 models runs on 2 fine-tunings, a one-model method on the base and one fine-tuning,
/// and its uniform merge on the same files. Writes PREFIX.json (every child's raw output) and PREFIX.md (the table).
/// </summary>
internal static class MethodBench
{
    /// <summary>
    /// Parameters for the methods whose defaults would make the bench trivial (density 1 keeps every entry): mergekit's
    /// documented example values. Methods not listed run with their defaults.
    /// </summary>
    private static readonly Dictionary<string, string[]> Specs = new(StringComparer.Ordinal)
    {
        ["ties"] = ["ties:density=0.5", "ties:density=0.2,trim=global"],
        ["dare_linear"] = ["dare_linear:density=0.5"],
        ["dare_ties"] = ["dare_ties:density=0.5"],
        ["dare_average"] = ["dare_average:density=0.5"],
        ["magnitude_prune"] = ["magnitude_prune:density=0.5"],
        ["breadcrumbs"] = ["breadcrumbs:density=0.9,gamma=0.01"],
        ["breadcrumbs_ties"] = ["breadcrumbs_ties:density=0.9,gamma=0.01"],
        ["della"] = ["della:density=0.5,epsilon=0.1"],
        ["della_linear"] = ["della_linear:density=0.5,epsilon=0.1"],
        ["model_stock"] = ["model_stock", "model_stock:filter_wise=true"],
    };

    /// <summary>The default list: every registered method, in name order, with <see cref="Specs"/>' parameters.</summary>
    public static IReadOnlyList<string> DefaultSpecs() =>
        [.. MergeMethods.All.SelectMany(m => Specs.TryGetValue(m.Name, out var specs) ? specs : [m.Name])];

    /// <summary>
    /// Splits a list of method specs separated by ',' or ';' where a ',' may also separate one method's parameters:
    /// "uniform,ties:density=0.2,trim=global,dare" is uniform, ties with two parameters, dare.
    /// </summary>
    public static List<string> SplitSpecs(string list)
    {
        var specs = new List<string>();
        foreach (var token in list.Split([',', ';'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (token.Contains('=', StringComparison.Ordinal) && !token.Contains(':', StringComparison.Ordinal) && specs.Count > 0 && specs[^1].Contains(':', StringComparison.Ordinal))
            {
                specs[^1] += "," + token;
            }
            else
            {
                specs.Add(token);
            }
        }

        return specs;
    }

    public static int Run(long size, int repeat, string? methodList, string prefix)
    {
        var specs = methodList is null ? DefaultSpecs() : SplitSpecs(methodList);
        foreach (var spec in specs)
        {
            _ = EndToEndMerge.Options(spec); // a typo fails here, not after an hour of measuring
        }

        var set = EndToEndMerge.Models(size, Console.Error);
        var started = DateTime.UtcNow;
        var runs = new JsonArray();
        foreach (var spec in specs)
        {
            Console.Error.WriteLine($"{DateTime.UtcNow:HH:mm:ss} {spec} ({Load()})");
            try
            {
                var (json, _) = MergeCommands.RunJson(MergeCommands.SelfCommand(), [.. MergeCommands.SelfArguments(),
                    "merge-rss", "--size", size.ToString(CultureInfo.InvariantCulture), "--method", "uniform," + spec,
                    "--repeat", repeat.ToString(CultureInfo.InvariantCulture)]);
                json["spec"] = spec;
                json["load_after"] = Load();
                runs.Add(json);
            }
            catch (InvalidOperationException e)
            {
                runs.Add(new JsonObject { ["spec"] = spec, ["error"] = e.Message.Split('\n')[0] });
            }

            Write(prefix, set, size, repeat, started, runs); // after each method, so an interrupted run keeps what it measured
        }

        Console.WriteLine(File.ReadAllText(prefix + ".md"));
        return 0;
    }

    private static void Write(string prefix, SyntheticModelSet set, long size, int repeat, DateTime started, JsonArray runs)
    {
        var report = new JsonObject
        {
            ["machine"] = Machine(),
            ["started_utc"] = started.ToString("u", CultureInfo.InvariantCulture),
            ["finished_utc"] = DateTime.UtcNow.ToString("u", CultureInfo.InvariantCulture),
            ["bytes_per_model"] = size,
            ["model"] = $"d={set.Width}, {set.Blocks} blocks, V={set.Vocabulary}",
            ["repeat"] = repeat,
            ["runs"] = runs.DeepClone(),
        };
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(prefix))!);
        File.WriteAllText(prefix + ".json", report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        File.WriteAllText(prefix + ".md", Table(runs));
    }

    /// <summary>One row per method: medians of its rounds, paired ratios to the uniform merge run just before it.</summary>
    internal static string Table(JsonArray runs)
    {
        var md = new StringBuilder();
        md.AppendLine("| method | inputs | uniform wall | method wall | wall / uniform, paired median (range) | CPU / uniform, paired median (range) | peak RSS uniform, per round | peak RSS method, per round | method's peak anonymous / file-backed |");
        md.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var run in runs.Select(r => r!.AsObject()))
        {
            var spec = run["spec"]!.GetValue<string>();
            if (run["error"] is { } error)
            {
                md.AppendLine(CultureInfo.InvariantCulture, $"| {spec} | | | | failed: {error.GetValue<string>().Replace("|", "\\|", StringComparison.Ordinal)} | | | | |");
                continue;
            }

            var methods = run["methods"]!.AsObject();
            var uniform = methods["uniform"]!;
            var method = methods[spec]!;
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| `{spec}` | {run["inputs"]} | {S(uniform["merge_s"])} | {S(method["merge_s"])} | {Ratio(method, "over_uniform")} | {Ratio(method, "over_uniform_cpu")} | {Rounds(uniform["peak_rss_runs_bytes"])} | {Rounds(method["peak_rss_runs_bytes"])} | {Split(method)} |");
        }

        return md.ToString();
    }

    private static string S(JsonNode? seconds) => string.Create(CultureInfo.InvariantCulture, $"{seconds!.GetValue<double>():0.00} s");

    private static string MiB(JsonNode? bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes!.GetValue<long>() / (double)(1 << 20):0} MiB");

    /// <summary>Each round's figure, "101 / 157 MiB": later rounds of a process may hold what earlier merges left.</summary>
    private static string Rounds(JsonNode? runs) =>
        string.Join(" / ", runs!.AsArray().Select(x => (x!.GetValue<long>() >> 20).ToString(CultureInfo.InvariantCulture))) + " MiB";

    /// <summary>The sampled anonymous (heaps, buffers, stacks) and file-backed (mapped files, libraries) peaks, largest over rounds.</summary>
    private static string Split(JsonNode method) => method["peak_rss_anon_bytes"] is { } anon
        ? $"{MiB(anon)} / {MiB(method["peak_rss_file_bytes"])}"
        : "";

    private static string Ratio(JsonNode method, string key)
    {
        var runs = method[key + "_runs"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        return string.Create(CultureInfo.InvariantCulture, $"{method[key]!.GetValue<double>():0.00}× ({runs.Min():0.00}–{runs.Max():0.00})");
    }

    private static string Load() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "";

    private static string Machine()
    {
        var cpu = File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim()
            : null;
        return $"{cpu ?? "unknown CPU"}, {Environment.ProcessorCount} cores, {GC.GetGCMemoryInfo().TotalAvailableMemoryBytes >> 30} GiB";
    }
}
