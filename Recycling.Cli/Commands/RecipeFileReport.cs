using System.Globalization;
using System.Text;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using ScottPlot;

namespace Recycling.Cli.Commands;

/// <summary>One result of a recipe: a fine-tuned run (with its seed), a soup or a merge; figures are accuracies 0..1 by data set ("val", "test0 (ood_test)", ...).</summary>
internal sealed record RecipeRow(string Method, int? Seed, IReadOnlyDictionary<string, double> Figures, string Detail, string? Model);

/// <summary>What one recipe produced, for the report.</summary>
internal sealed record RecipeOutcome(string Name, string Recipe, IReadOnlyList<RecipeRow> Rows, IReadOnlyList<string> Notes, double Seconds)
{
    /// <summary>The recipe wrote its own report folder (README.md, results.csv ...) where it ran: do not write over it.</summary>
    public bool WroteReport { get; init; }
}

/// <summary>
/// A recipe's report folder, as `recycle demo` writes its study: README.md (per method the mean ± sample standard
/// deviation over seeds, min–max, per data set), results.csv and results.json (one row per run or soup), and one PNG
/// per recipe (each run's accuracy per method and data set, the mean marked).
/// </summary>
internal static class RecipeFileReport
{
    public static void Write(string folder, string title, IReadOnlyList<RecipeOutcome> outcomes, IReadOnlyList<string> preamble)
    {
        Directory.CreateDirectory(folder);
        var md = new StringBuilder();
        md.AppendLine($"# {title}");
        md.AppendLine();
        foreach (var line in preamble)
        {
            md.AppendLine(line);
            md.AppendLine();
        }

        foreach (var outcome in outcomes)
        {
            md.AppendLine(Inv($"## {outcome.Name} ({outcome.Recipe}, {outcome.Seconds:F1} s)"));
            md.AppendLine();
            md.AppendLine(Markdown(outcome));
            foreach (var note in outcome.Notes)
            {
                md.AppendLine($"- {note}");
            }

            if (outcome.Rows.Count > 0 && outcome.Rows[0].Figures.Count > 0)
            {
                var png = $"{outcome.Name}.png";
                Plot(Path.Combine(folder, png), outcome);
                md.AppendLine();
                md.AppendLine($"![{outcome.Name}]({png})");
            }

            md.AppendLine();
        }

        OutputFile.WriteAllText(Path.Combine(folder, "README.md"), md.ToString());
        OutputFile.WriteAllText(Path.Combine(folder, "results.csv"), Csv(outcomes));
        OutputFile.WriteAllText(Path.Combine(folder, "results.json"), JsonStyle.Serialize(outcomes.Select(o => new
        {
            name = o.Name,
            recipe = o.Recipe,
            seconds = o.Seconds,
            notes = o.Notes,
            rows = o.Rows.Select(r => new { method = r.Method, seed = r.Seed, detail = r.Detail, model = r.Model, accuracy = r.Figures }),
        })));
    }

    /// <summary>Per method: results, then mean ± sd and min–max (percent) for each data set.</summary>
    public static string Markdown(RecipeOutcome outcome)
    {
        var sets = DataSets(outcome);
        var md = new StringBuilder();
        md.AppendLine($"| method | results | {string.Join(" | ", sets.Select(s => $"{s} % (mean ± sd) | {s} min–max"))} |");
        md.AppendLine($"|---|---:|{string.Concat(sets.Select(_ => "---:|---:|"))}");
        foreach (var (method, rows) in Groups(outcome))
        {
            var cells = sets.Select(s =>
            {
                var values = rows.Where(r => r.Figures.ContainsKey(s)).Select(r => r.Figures[s] * 100).ToList();
                if (values.Count == 0)
                {
                    return " | ";
                }

                var (mean, sd) = MeanSd(values);
                return Inv($"{mean:F2} ± {sd:F2} | {values.Min():F2}–{values.Max():F2}");
            });
            md.AppendLine($"| {method} | {rows.Count} | {string.Join(" | ", cells)} |");
        }

        return md.ToString();
    }

    internal static (double Mean, double Sd) MeanSd(IReadOnlyList<double> values)
    {
        var mean = values.Average();
        var sd = values.Count > 1 ? Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1)) : 0;
        return (mean, sd);
    }

    private static string Csv(IReadOnlyList<RecipeOutcome> outcomes)
    {
        var sets = outcomes.SelectMany(DataSets).Distinct().ToList();
        var lines = new List<string> { $"recipe,method,seed,detail,{string.Join(",", sets.Select(Quote))},model" };
        foreach (var o in outcomes)
        {
            lines.AddRange(o.Rows.Select(r => Inv(
                $"{Quote(o.Name)},{Quote(r.Method)},{r.Seed},{Quote(r.Detail)},{string.Join(",", sets.Select(s => r.Figures.TryGetValue(s, out var v) ? v.ToString("R", CultureInfo.InvariantCulture) : ""))},{Quote(r.Model ?? "")}")));
        }

        return string.Join("\n", lines) + "\n";
    }

    /// <summary>Each run's accuracy (a dot) per method, one colour per data set, with each method's mean as a bar across its dots.</summary>
    private static void Plot(string path, RecipeOutcome outcome)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var sets = DataSets(outcome);
        var groups = Groups(outcome);
        var width = 0.8 / sets.Count;
        for (var d = 0; d < sets.Count; d++)
        {
            var xs = new List<double>();
            var ys = new List<double>();
            for (var m = 0; m < groups.Count; m++)
            {
                var values = groups[m].Rows.Where(r => r.Figures.ContainsKey(sets[d])).Select(r => r.Figures[sets[d]] * 100).ToList();
                var x = m - 0.4 + (width * (d + 0.5));
                xs.AddRange(values.Select(_ => x));
                ys.AddRange(values);
                if (values.Count > 0)
                {
                    var mean = plot.Add.Line(x - (width * 0.4), values.Average(), x + (width * 0.4), values.Average());
                    mean.Color = palette.GetColor(d);
                    mean.LineWidth = 3;
                }
            }

            var dots = plot.Add.Scatter(xs.ToArray(), ys.ToArray(), palette.GetColor(d));
            dots.LineWidth = 0;
            dots.MarkerSize = 7;
            dots.LegendText = sets[d];
        }

        plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, groups.Count).Select(i => (double)i)], [.. groups.Select(g => g.Method)]);
        plot.Title($"{outcome.Name}: accuracy per run (dots) and mean (bars)");
        plot.YLabel("accuracy (%)");
        plot.ShowLegend(Edge.Bottom);
        OutputFile.WriteAllBytes(path, plot.GetImageBytes(Math.Max(700, 160 * groups.Count), 600, ImageFormat.Png));
    }

    private static List<string> DataSets(RecipeOutcome outcome) => [.. outcome.Rows.SelectMany(r => r.Figures.Keys).Distinct()];

    private static List<(string Method, List<RecipeRow> Rows)> Groups(RecipeOutcome outcome) =>
        [.. outcome.Rows.Select(r => r.Method).Distinct().Select(m => (m, outcome.Rows.Where(r => r.Method == m).ToList()))];

    private static string Quote(string text) => text.Contains(',', StringComparison.Ordinal) || text.Contains('"', StringComparison.Ordinal) || text.Contains('\n', StringComparison.Ordinal)
        ? $"\"{text.Replace("\"", "\"\"", StringComparison.Ordinal)}\""
        : text;

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
