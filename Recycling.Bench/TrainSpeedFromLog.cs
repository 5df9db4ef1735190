using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Recycling.Bench;

/// <summary>
/// <c>train-speed --from-log LOG[,LOG...] [the run's --batch/--steps/--warmup/--threads] [--md FILE]</c>: the report of
/// a run from its stderr log (each worker's JSON line), for a run stopped before it wrote its report (a time limit),
/// or of several runs of the same configuration pooled: the rounds that completed are summarised exactly as a whole
/// run is, an incomplete one dropped.
/// </summary>
internal static partial class TrainSpeed
{
    private static int FromLog(string[] args, string log)
    {
        var config = Config.From(args);
        var round = new Regex(@"^train-speed: (\S+) round (\d+) (\S+): (\{.*\})$");
        var paired = new Regex(@"^train-speed: (\S+) in one process: (\{.*\})$");
        var byModel = new Dictionary<string, SortedDictionary<int, Dictionary<string, JsonNode>>>(StringComparer.Ordinal);
        var inProcess = new Dictionary<string, JsonNode>(StringComparer.Ordinal);
        var files = log.Split(',', StringSplitOptions.RemoveEmptyEntries);
        foreach (var (line, file) in files.SelectMany((f, k) => File.ReadLines(f).Select(line => (line, k))))
        {
            if (round.Match(line) is { Success: true } m)
            {
                // Rounds of several logs (runs of the same configuration) are pooled, each file's rounds kept apart.
                var (model, number) = (m.Groups[1].Value, (file * 100_000) + int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
                var rounds = byModel.TryGetValue(model, out var r) ? r : byModel[model] = [];
                var impls = rounds.TryGetValue(number, out var i) ? i : rounds[number] = [];
                impls[m.Groups[3].Value] = JsonNode.Parse(m.Groups[4].Value)!;
            }
            else if (paired.Match(line) is { Success: true } p)
            {
                inProcess[p.Groups[1].Value] = JsonNode.Parse(p.Groups[2].Value)!;
            }
        }

        var models = new JsonObject();
        var completed = 0;
        foreach (var (model, rounds) in byModel)
        {
            // A round is complete when it holds every implementation that its file's first round ran; pooled files
            // keep only the implementations that all of them ran, so that every ratio stays paired within a round.
            var complete = rounds.GroupBy(r => r.Key / 100_000)
                .SelectMany(g => g.Select(r => r.Value).Where(r => g.First().Value.Keys.ToHashSet(StringComparer.Ordinal).SetEquals(r.Keys))).ToList();
            var common = complete.Select(r => r.Keys.ToHashSet(StringComparer.Ordinal)).Aggregate((a, b) => [.. a.Intersect(b)]);
            completed = complete.Count;
            var runs = new Dictionary<string, List<JsonNode>> { ["ours"] = [], ["hand"] = [], ["torch"] = [], ["unfused"] = [], ["default"] = [] };
            foreach (var r in complete)
            {
                foreach (var (impl, node) in r.Where(i => common.Contains(i.Key)))
                {
                    runs[impl].Add(node);
                }
            }

            var summary = complete.Count > 0 ? Summarise(runs, runs["ours"][0]["loss0"]!.GetValue<double>(), runs["torch"].Count > 0) : [];
            if (inProcess.TryGetValue(model, out var p))
            {
                summary["in_process"] = p.DeepClone();
            }

            models[model] = summary;
        }

        var report = new JsonObject
        {
            ["batch"] = config.Batch, ["steps"] = config.Steps, ["warmup"] = config.Warmup, ["warmup_seconds"] = config.WarmupSeconds,
            ["threads"] = config.Threads, ["optimizer"] = config.Optimizer, ["rounds"] = completed, ["load_average_start"] = "?", ["load_average_end"] = "?",
            ["from_log"] = string.Join(", ", files.Select(Path.GetFileName)), ["models"] = models,
        };
        Console.WriteLine(report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        if (BenchSupport.Option(args, "--md") is { } md)
        {
            File.WriteAllText(md, Markdown(report));
        }

        return 0;
    }
}
