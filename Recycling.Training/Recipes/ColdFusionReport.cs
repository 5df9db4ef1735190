using System.Globalization;
using System.Text;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using ScottPlot;

namespace Recycling.Training.Recipes;

/// <summary>
/// ColD fusion's report in the recipe folder: the target score per round and seed (cold-fusion.csv), the same with
/// the settings and a per-round summary (cold-fusion.json), the summary as a Markdown table (cold-fusion.md: mean ±
/// sample standard deviation over seeds, and the change from round 0), and a plot of it (cold-fusion.png).
/// </summary>
internal static class ColdFusionReport
{
    public const string Stem = "cold-fusion";

    /// <summary>One score series: how the shared model was evaluated ("probe", "fine-tuning") on which data.</summary>
    private sealed record Series(string Evaluation, string Data)
    {
        public string Name => $"{Evaluation} {Data}";
    }

    public static string Write(ColdFusionOptions options, IReadOnlyList<ColdFusionRound> rounds)
    {
        var folder = Path.GetFullPath(options.Folder);
        var series = SeriesOf(rounds);
        var summary = Summary(rounds, series);
        OutputFile.WriteAllText(Path.Combine(folder, Stem + ".csv"), Csv(rounds, series));
        OutputFile.WriteAllText(Path.Combine(folder, Stem + ".md"), Markdown(options, summary, series, rounds.Select(r => r.Seed).Distinct().Count()));
        OutputFile.WriteAllText(Path.Combine(folder, Stem + ".json"), JsonStyle.Serialize(Document(options, rounds, summary, series)) + "\n");
        Plot(Path.Combine(folder, Stem + ".png"), summary, series, rounds);
        return folder;
    }

    private static List<Series> SeriesOf(IReadOnlyList<ColdFusionRound> rounds)
    {
        var list = rounds.SelectMany(r => r.Probe.Keys).Distinct().Select(k => new Series("probe", k)).ToList();
        list.AddRange(rounds.Where(r => r.Finetune is not null).SelectMany(r => r.Finetune!.Figures.Keys).Distinct().Select(k => new Series("fine-tuning", k)));
        return list;
    }

    /// <summary>A round's score (in %) of one series, NaN when absent.</summary>
    private static double Score(ColdFusionRound round, Series s)
    {
        var figures = s.Evaluation == "probe" ? round.Probe : round.Finetune?.Figures;
        return figures is not null && figures.TryGetValue(s.Data, out var v) ? v * 100 : double.NaN;
    }

    private sealed record Cell(double Mean, double Sd, double Delta);

    /// <summary>Per round and series: mean and sample standard deviation over seeds, and the mean's change from round 0.</summary>
    private static SortedDictionary<int, Dictionary<string, Cell>> Summary(IReadOnlyList<ColdFusionRound> rounds, List<Series> series)
    {
        var result = new SortedDictionary<int, Dictionary<string, Cell>>();
        var first = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var group in rounds.GroupBy(r => r.Round).OrderBy(g => g.Key))
        {
            var cells = new Dictionary<string, Cell>(StringComparer.Ordinal);
            foreach (var s in series)
            {
                var values = group.Select(r => Score(r, s)).ToList();
                var mean = values.Average();
                var sd = values.Count > 1 ? Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1)) : 0;
                first.TryAdd(s.Name, mean);
                cells[s.Name] = new Cell(mean, sd, mean - first[s.Name]);
            }

            result[group.Key] = cells;
        }

        return result;
    }

    private static string Csv(IReadOnlyList<ColdFusionRound> rounds, List<Series> series)
    {
        var lines = new List<string> { $"seed,round,{string.Join(",", series.Select(s => Quote(s.Name + " accuracy %")))},model" };
        lines.AddRange(rounds.Select(r => string.Create(CultureInfo.InvariantCulture,
            $"{r.Seed},{r.Round},{string.Join(",", series.Select(s => Score(r, s).ToString("R", CultureInfo.InvariantCulture)))},{Quote(r.Model)}")));
        return string.Join("\n", lines) + "\n";
    }

    private static string Quote(string text) => text.Contains(',', StringComparison.Ordinal) || text.Contains('"', StringComparison.Ordinal) || text.Contains('\n', StringComparison.Ordinal)
        ? "\"" + text.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : text;

    private static string Markdown(ColdFusionOptions options, SortedDictionary<int, Dictionary<string, Cell>> summary, List<Series> series, int seeds)
    {
        var md = new StringBuilder();
        md.Append("# ColD fusion: target score per round\n\n");
        md.Append(CultureInfo.InvariantCulture, $"Base `{Path.GetFileName(options.Base)}`, {options.Contributors.Count} contributors ({string.Join(", ", options.Contributors.Select(c => c.Name))}), ");
        md.Append(CultureInfo.InvariantCulture, $"{options.Rounds} round(s), {seeds} seed(s). Accuracy in %, mean ± sample sd over seeds; Δ: change of the mean from round 0 (the base).\n\n");
        md.Append("| round | ").Append(string.Join(" | ", series.Select(s => $"{s.Name} | Δ"))).Append(" |\n");
        md.Append("|---|").Append(string.Concat(series.Select(_ => "---|---|"))).Append('\n');
        foreach (var (round, cells) in summary)
        {
            md.Append(CultureInfo.InvariantCulture, $"| {round} | ");
            md.Append(string.Join(" | ", series.Select(s => string.Create(CultureInfo.InvariantCulture, $"{cells[s.Name].Mean:F2} ± {cells[s.Name].Sd:F2} | {cells[s.Name].Delta:+0.00;-0.00;0.00}"))));
            md.Append(" |\n");
        }

        return md.ToString();
    }

    private static object Document(ColdFusionOptions options, IReadOnlyList<ColdFusionRound> rounds, SortedDictionary<int, Dictionary<string, Cell>> summary, List<Series> series) => new
    {
        @base = Path.GetFullPath(options.Base),
        contributors = options.Contributors.Select(c => new { c.Name, train = c.Train, validation = c.Validation, training = c.Training ?? options.Training }),
        options.Rounds,
        seeds = options.Seeds,
        target = new { train = options.TargetTrain, validation = options.TargetValidation, tests = options.TargetTests },
        training = options.Training,
        targetFinetune = options.TargetFinetune,
        series = series.Select(s => s.Name),
        summary = summary.Select(p => new { round = p.Key, scores = p.Value.ToDictionary(c => c.Key, c => new { mean = c.Value.Mean, sd = c.Value.Sd, delta = c.Value.Delta }) }),
        runs = rounds.Select(r => new
        {
            r.Seed,
            r.Round,
            model = r.Model,
            scores = series.ToDictionary(s => s.Name, s => Score(r, s)),
            contributions = r.Contributions.Select(c => new { label = c.Label, folder = c.Folder, figures = c.Figures, seconds = c.Seconds, reused = c.Reused }),
        }),
    };

    /// <summary>One panel per data set: the score per round, mean over seeds with ± sd error bars, one line per evaluation, each seed as faint points.</summary>
    private static void Plot(string path, SortedDictionary<int, Dictionary<string, Cell>> summary, List<Series> series, IReadOnlyList<ColdFusionRound> rounds)
    {
        var palette = new ScottPlot.Palettes.Category10();
        var evaluations = series.Select(s => s.Evaluation).Distinct().ToList();
        var panels = new List<Plot>();
        var xs = summary.Keys.Select(k => (double)k).ToArray();
        foreach (var data in series.Select(s => s.Data).Distinct())
        {
            var plot = new Plot();
            panels.Add(plot);
            foreach (var s in series.Where(s => s.Data == data))
            {
                var color = palette.GetColor(evaluations.IndexOf(s.Evaluation));
                var seedPoints = plot.Add.ScatterPoints(rounds.Select(r => (double)r.Round).ToArray(), rounds.Select(r => Score(r, s)).ToArray(), color.WithAlpha(0.35));
                seedPoints.MarkerSize = 5;
                var means = summary.Values.Select(c => c[s.Name].Mean).ToArray();
                var line = plot.Add.Scatter(xs, means, color);
                line.LegendText = $"{s.Evaluation} (mean ± sd over seeds)";
                var bars = plot.Add.ErrorBar(xs, means, summary.Values.Select(c => c[s.Name].Sd).ToArray());
                bars.Color = color;
            }

            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
            plot.Title($"ColD fusion: target {data}");
            plot.XLabel("round (0 = the base)");
            plot.YLabel($"{data} accuracy (%)");
            plot.ShowLegend(Edge.Bottom);
        }

        var multiplot = new Multiplot();
        multiplot.Reset(panels[0]);
        foreach (var panel in panels.Skip(1))
        {
            multiplot.AddPlot(panel);
        }

        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();
        OutputFile.WriteAllBytes(path, multiplot.Render(panels.Count * 700, 500).GetImageBytes(ImageFormat.Png));
    }
}
