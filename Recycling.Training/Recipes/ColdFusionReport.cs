using System.Globalization;
using System.Text;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using ScottPlot;

namespace Recycling.Training.Recipes;

/// <summary>
/// ColD fusion's part of its report (<see cref="RecipeReport"/> writes it): a result per seed and round (the target's
/// linear probe, and its fine-tuning when asked), every contributor run and target fine-tuning, the score per round
/// as a table (mean ± sample standard deviation over seeds, and the change from round 0), and a plot of it.
/// </summary>
internal static class ColdFusionReport
{
    public const string Name = "cold-fusion";

    /// <summary>One score series: how the shared model was evaluated ("probe", "fine-tuning") on which data (its label).</summary>
    private sealed record Series(string Evaluation, string Data)
    {
        public string Name => $"{Evaluation} {Data}";
    }

    /// <summary>A round's scores as accuracies (%) by data set label: its probe's and, when asked, its fine-tuning's.</summary>
    private sealed record Scored(ColdFusionRound Round, IReadOnlyDictionary<string, double> Probe, IReadOnlyDictionary<string, double>? Finetune);

    public static RecipeReport Build(ColdFusionOptions options, IReadOnlyList<ColdFusionRound> rounds, double seconds)
    {
        var labels = RecipeReport.SplitLabels(options.TargetValidation, options.TargetTests);
        var scored = rounds.Select(r => new Scored(r, RecipeReport.Percent(r.Probe, labels), r.Finetune is null ? null : RecipeReport.Percent(r.Finetune.Figures, labels))).ToList();
        var series = labels.Values.Select(l => new Series("probe", l)).ToList();
        if (scored.Any(r => r.Finetune is not null))
        {
            series.AddRange(labels.Values.Select(l => new Series("fine-tuning", l)));
        }

        var summary = Summary(scored, series);
        var seeds = rounds.Select(r => r.Seed).Distinct().Count();
        return new RecipeReport
        {
            Recipe = "cold_fusion",
            Name = Name,
            Title = "ColD fusion: the target score of the shared model per round",
            Splits = [.. labels.Values],
            Scores =
            [
                .. scored.Select(r => new RecipeScore($"round {r.Round.Round}: probe", r.Round.Seed, r.Probe) { Detail = Path.GetFileName(r.Round.Model), Model = r.Round.Model }),
                .. scored.Where(r => r.Finetune is not null).Select(r => new RecipeScore($"round {r.Round.Round}: fine-tuned", r.Round.Seed, r.Finetune!) { Detail = Path.GetFileName(r.Round.Model), Model = r.Round.Finetune!.Model }),
            ],
            Runs = Runs(options, rounds),
            Settings = Settings(options),
            Notes =
            [
                "Round 0 is the base. Each round every contributor fine-tunes the shared model on its own task (a new linear-probe head each round) and the bodies are averaged; "
                    + "a result scores one round's shared model on the target by a linear probe on its features (and by a fine-tuning when asked), one per seed.",
            ],
            Seconds = seconds,
            Tables = [Markdown(options, summary, series, seeds)],
            Plots = [new($"{Name}.png", "target score per round", path => Plot(path, summary, series, scored))],
        };
    }

    /// <summary>Every contributor run (from the previous round's shared model) and every target fine-tuning.</summary>
    private static List<RecipeRun> Runs(ColdFusionOptions options, IReadOnlyList<ColdFusionRound> rounds)
    {
        var previous = rounds.ToDictionary(r => (r.Seed, r.Round), r => r.Model);
        var runs = rounds.SelectMany(r => r.Contributions.Select((c, i) => new RecipeRun($"contributor {options.Contributors[i].Name}", previous[(r.Seed, r.Round - 1)], r.Seed, c))).ToList();
        runs.AddRange(rounds.Where(r => r.Finetune is not null).Select(r => new RecipeRun($"round {r.Round}: fine-tuned", r.Model, r.Seed, r.Finetune!)));
        return runs;
    }

    private static Dictionary<string, string> Settings(ColdFusionOptions options)
    {
        string Budget(TargetTraining t) => string.Create(CultureInfo.InvariantCulture, $"{t.Optimizer}, lr {t.LearningRate:G}, {t.Epochs} epoch(s), batch {t.BatchSize}, head at '{t.FeatureAt ?? "features"}' (LP-FT)");
        var settings = new Dictionary<string, string>
        {
            ["base"] = Path.GetFullPath(options.Base),
            ["contributors"] = string.Join(", ", options.Contributors.Select(c => $"{c.Name} ({c.Train}{(c.Validation is null ? "" : ", val " + c.Validation)}{(c.Training is null ? "" : "; " + Budget(c.Training))})")),
            ["rounds"] = options.Rounds.ToString(CultureInfo.InvariantCulture),
            ["seeds"] = string.Join(", ", options.Seeds),
            ["contributors' fine-tuning"] = Budget(options.Training),
            ["target train"] = options.TargetTrain,
            ["target val"] = options.TargetValidation,
            ["target tests"] = string.Join(", ", options.TargetTests),
        };
        if (options.TargetFinetune is { } target)
        {
            settings["target fine-tuning"] = Budget(target);
        }

        return settings;
    }

    /// <summary>A round's score (in %) of one series, NaN when absent.</summary>
    private static double Score(Scored round, Series s)
    {
        var figures = s.Evaluation == "probe" ? round.Probe : round.Finetune;
        return figures is not null && figures.TryGetValue(s.Data, out var v) ? v : double.NaN;
    }

    private sealed record Cell(double Mean, double Sd, double Delta);

    /// <summary>Per round and series: mean and sample standard deviation over seeds, and the mean's change from round 0.</summary>
    private static SortedDictionary<int, Dictionary<string, Cell>> Summary(IReadOnlyList<Scored> rounds, List<Series> series)
    {
        var result = new SortedDictionary<int, Dictionary<string, Cell>>();
        var first = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var group in rounds.GroupBy(r => r.Round.Round).OrderBy(g => g.Key))
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

    private static string Markdown(ColdFusionOptions options, SortedDictionary<int, Dictionary<string, Cell>> summary, List<Series> series, int seeds)
    {
        var md = new StringBuilder();
        md.Append("### Target score per round\n\n");
        md.Append(CultureInfo.InvariantCulture, $"Base `{Path.GetFileName(options.Base)}`, {MessageText.Count(options.Contributors.Count, "contributor")} ({string.Join(", ", options.Contributors.Select(c => c.Name))}), ");
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

    /// <summary>One panel per data set: the score per round, mean over seeds with ± sd error bars, one line per evaluation, each seed as faint points.</summary>
    private static void Plot(string path, SortedDictionary<int, Dictionary<string, Cell>> summary, List<Series> series, IReadOnlyList<Scored> rounds)
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
                var seedPoints = plot.Add.ScatterPoints(rounds.Select(r => (double)r.Round.Round).ToArray(), rounds.Select(r => Score(r, s)).ToArray(), color.WithAlpha(0.35));
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
