using System.Globalization;
using System.Text;
using Recycling.MLNet.Diagnostics;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using ScottPlot;

namespace Recycling.Training.Recipes;

/// <summary>One method's accuracies (%, by data set) under one seed of a recipe; <see cref="Detail"/> says what was measured (e.g. the run chosen).</summary>
public sealed record RecipeScore(string Method, int Seed, IReadOnlyDictionary<string, double> Accuracy)
{
    public string Detail { get; init; } = "";
}

/// <summary>A greedy soup of one method and seed: its pool, the order tried (val accuracy, %), the accepted runs and the soup's val accuracy (%).</summary>
public sealed record RecipeSoup(string Method, int Seed, string Rule, IReadOnlyList<string> Members, IReadOnlyList<string> Order, IReadOnlyList<double> OrderValAccuracy,
    IReadOnlyList<string> Accepted, double ValAccuracy);

/// <summary>A method's accuracy on one data set over the seeds: mean, sample standard deviation (0 for one seed), range.</summary>
public sealed record RecipeSummary(string Method, string Split, int Seeds, double Mean, double StandardDeviation, double Min, double Max);

/// <summary>
/// A recipe's report folder, one writer for every recipe (fuse, ratatouille): README.md (settings, mean ± sd table,
/// per-seed table, greedy soups, notes), summary.csv and scores.csv (accuracy %), results.csv (one row per
/// fine-tuning, accuracies as fractions), report.json (the <c>--json</c> document), accuracy.png (per method: mean,
/// ± sd, every seed) and, when there are soup curves, soup_ingredients.png.
/// </summary>
public sealed record RecipeReport
{
    public const string JsonFile = "report.json";

    /// <summary>The recipe's command name ("fuse", "ratatouille").</summary>
    public required string Recipe { get; init; }

    public required string Title { get; init; }

    /// <summary>Data set labels, the selection set ("val") first.</summary>
    public required IReadOnlyList<string> Splits { get; init; }

    public required IReadOnlyList<RecipeScore> Scores { get; init; }

    public IReadOnlyList<RecipeRun> Runs { get; init; } = [];

    public IReadOnlyList<RecipeSoup> Soups { get; init; } = [];

    /// <summary>Soup accuracy against ingredients (mean over seeds), one curve per method and data set.</summary>
    public IReadOnlyList<IngredientCurve> Curves { get; init; } = [];

    public IReadOnlyDictionary<string, string> Settings { get; init; } = new Dictionary<string, string>();

    public IReadOnlyList<string> Notes { get; init; } = [];

    public double Seconds { get; init; }

    /// <summary>Mean ± sample standard deviation over seeds, per method (in order of first appearance) and data set.</summary>
    public IReadOnlyList<RecipeSummary> Summary =>
        [.. Scores.Select(s => s.Method).Distinct().SelectMany(method => Splits.Select(split =>
        {
            var values = Scores.Where(s => s.Method == method && s.Accuracy.ContainsKey(split)).Select(s => s.Accuracy[split]).ToList();
            var mean = values.Count == 0 ? double.NaN : values.Average();
            var sd = values.Count > 1 ? Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1)) : 0;
            return new RecipeSummary(method, split, values.Count, mean, sd, values.Count == 0 ? double.NaN : values.Min(), values.Count == 0 ? double.NaN : values.Max());
        }))];

    /// <summary>Labels for test data sets: their file names, with the index added where two share one.</summary>
    public static IReadOnlyList<string> TestLabels(IReadOnlyList<string> tests)
    {
        ArgumentNullException.ThrowIfNull(tests);
        var names = tests.Select(t => Path.GetFileName(Path.TrimEndingDirectorySeparator(t))).ToList();
        return [.. names.Select((n, i) => n.Length == 0 || n == "val" || names.Count(m => m == n) > 1 ? $"test{i} ({n})" : n)];
    }

    /// <summary>
    /// A report whose scores are the runs themselves (one score per method and seed: the run's accuracies in %),
    /// for recipes that compare single fine-tunings (fusing, intertraining, the base). Runs scored on
    /// <paramref name="validation"/> and <paramref name="tests"/> as <see cref="TargetRuns"/> names them.
    /// </summary>
    public static RecipeReport FromRuns(string recipe, string title, IReadOnlyList<RecipeRun> runs, string validation, IReadOnlyList<string> tests,
        IReadOnlyDictionary<string, string>? settings = null, IReadOnlyList<string>? notes = null, double seconds = 0)
    {
        ArgumentNullException.ThrowIfNull(runs);
        ArgumentNullException.ThrowIfNull(tests);
        var labels = TestLabels(tests);
        var splits = new List<(string Key, string Label)> { (TargetRuns.FigureKey("val", validation), "val") };
        splits.AddRange(tests.Select((t, i) => (TargetRuns.FigureKey($"test{i}", t), labels[i])));
        return new RecipeReport
        {
            Recipe = recipe,
            Title = title,
            Splits = [.. splits.Select(s => s.Label)],
            Scores = [.. runs.Select(r => new RecipeScore(r.Method, r.Seed, splits.Where(s => r.Run.Figures.ContainsKey(s.Key)).ToDictionary(s => s.Label, s => r.Run.Figures[s.Key] * 100, StringComparer.Ordinal))
            {
                Detail = Path.GetFileName(r.Start),
            })],
            Runs = runs,
            Settings = settings ?? new Dictionary<string, string>(),
            Notes = notes ?? [],
            Seconds = seconds,
        };
    }

    /// <summary>Writes the report files into <paramref name="folder"/> (created if needed), each atomically.</summary>
    public void Write(string folder)
    {
        Directory.CreateDirectory(folder);
        OutputFile.WriteAllText(Path.Combine(folder, "README.md"), Markdown());
        OutputFile.WriteAllText(Path.Combine(folder, "summary.csv"), SummaryCsv());
        OutputFile.WriteAllText(Path.Combine(folder, "scores.csv"), ScoresCsv());
        OutputFile.WriteAllText(Path.Combine(folder, "results.csv"), RunsCsv(Runs));
        OutputFile.WriteAllText(Path.Combine(folder, JsonFile), ToJson());
        SaveAccuracyPlot(Path.Combine(folder, "accuracy.png"));
        if (Curves.Count > 0)
        {
            DiagnosticPlots.SaveIngredientCurves(Path.Combine(folder, "soup_ingredients.png"), Curves, $"{Recipe}: uniform soups of the top-k runs by val (mean over seeds)");
        }
    }

    /// <summary>The summary as text: one line per method, mean ± sd per data set.</summary>
    public string Table()
    {
        var summary = Summary;
        var lines = new List<string> { $"method | seeds | {string.Join(" | ", Splits.Select(s => s + " accuracy % (mean ± sd)"))}" };
        foreach (var method in summary.Select(s => s.Method).Distinct())
        {
            var mine = summary.Where(s => s.Method == method).ToList();
            lines.Add($"{method} | {mine.Max(s => s.Seeds)} | {string.Join(" | ", mine.Select(s => Inv($"{s.Mean:F2} ± {s.StandardDeviation:F2}")))}");
        }

        return string.Join(Environment.NewLine, lines);
    }

    public string ToJson() => JsonStyle.Serialize(new
    {
        recipe = Recipe,
        title = Title,
        seconds = Seconds,
        splits = Splits,
        settings = Settings,
        summary = Summary.Select(s => new { method = s.Method, split = s.Split, seeds = s.Seeds, mean = s.Mean, sd = s.StandardDeviation, min = s.Min, max = s.Max }),
        scores = Scores.Select(s => new { method = s.Method, seed = s.Seed, detail = s.Detail, accuracy = s.Accuracy }),
        soups = Soups.Select(s => new { method = s.Method, seed = s.Seed, rule = s.Rule, members = s.Members, order = s.Order, orderValAccuracy = s.OrderValAccuracy, accepted = s.Accepted, valAccuracy = s.ValAccuracy }),
        curves = Curves.Select(c => new { method = c.Label, split = c.Split, accuracy = c.Accuracy }),
        runs = Runs.Select(r => new
        {
            method = r.Method,
            start = Path.GetFullPath(r.Start),
            seed = r.Seed,
            label = r.Run.Label,
            key = r.Run.Key,
            model = r.Run.Model,
            accuracy = r.Run.Figures.ToDictionary(f => f.Key, f => f.Value * 100, StringComparer.Ordinal),
            seconds = r.Run.Seconds,
            reused = r.Run.Reused,
        }),
        notes = Notes,
    });

    /// <summary>One row per fine-tuning: method, start, seed, each figure (accuracy as a fraction), seconds, reused, folder.</summary>
    internal static string RunsCsv(IReadOnlyList<RecipeRun> runs)
    {
        var sets = runs.SelectMany(r => r.Run.Figures.Keys).Distinct().ToList();
        var lines = new List<string> { $"method,start,seed,{string.Join(",", sets.Select(Csv))},seconds,reused,folder" };
        lines.AddRange(runs.Select(r => Inv(
            $"{Csv(r.Method)},{Csv(Path.GetFileName(r.Start))},{r.Seed},{string.Join(",", sets.Select(s => r.Run.Figures.TryGetValue(s, out var v) ? v.ToString("R", CultureInfo.InvariantCulture) : ""))},{r.Run.Seconds:F1},{r.Run.Reused},{Csv(r.Run.Folder)}")));
        return string.Join("\n", lines) + "\n";
    }

    private string SummaryCsv()
    {
        var csv = new StringBuilder("method,split,seeds,mean,sd,min,max\n");
        foreach (var s in Summary)
        {
            csv.Append(Inv($"{Csv(s.Method)},{Csv(s.Split)},{s.Seeds},{s.Mean:R},{s.StandardDeviation:R},{s.Min:R},{s.Max:R}")).Append('\n');
        }

        return csv.ToString();
    }

    private string ScoresCsv()
    {
        var csv = new StringBuilder($"method,seed,{string.Join(",", Splits.Select(Csv))},detail\n");
        foreach (var s in Scores)
        {
            csv.Append(Inv($"{Csv(s.Method)},{s.Seed},{string.Join(",", Splits.Select(split => s.Accuracy.TryGetValue(split, out var v) ? v.ToString("R", CultureInfo.InvariantCulture) : ""))},{Csv(s.Detail)}")).Append('\n');
        }

        return csv.ToString();
    }

    private string Markdown()
    {
        var md = new StringBuilder();
        var seeds = Scores.Select(s => s.Seed).Distinct().ToList();
        md.AppendLine($"# {Title}").AppendLine();
        md.AppendLine(Inv($"`recycle {Recipe}`: {Runs.Select(r => r.Run.Key).Distinct().Count()} fine-tunings ({Runs.Count(r => r.Run.Reused)} of {Runs.Count} run entries reused from earlier calls), seeds {string.Join(", ", seeds)}, {Seconds:F1} s. Accuracy in % (ONNX Runtime on the written models)."));
        md.AppendLine();
        if (Settings.Count > 0)
        {
            md.AppendLine("| setting | value |").AppendLine("|---|---|");
            foreach (var (key, value) in Settings)
            {
                md.AppendLine($"| {Cell(key)} | {Cell(value)} |");
            }

            md.AppendLine();
        }

        md.AppendLine("## Mean ± sample standard deviation over seeds").AppendLine();
        md.AppendLine($"| method | seeds | {string.Join(" | ", Splits.Select(Cell))} |");
        md.AppendLine($"|---|---:|{string.Concat(Splits.Select(_ => "---:|"))}");
        var summary = Summary;
        foreach (var method in summary.Select(s => s.Method).Distinct())
        {
            var mine = summary.Where(s => s.Method == method).ToList();
            md.AppendLine($"| {Cell(method)} | {mine.Max(s => s.Seeds)} | {string.Join(" | ", mine.Select(s => Inv($"{s.Mean:F2} ± {s.StandardDeviation:F2}")))} |");
        }

        md.AppendLine().AppendLine("## Per seed").AppendLine();
        md.AppendLine($"| method | seed | {string.Join(" | ", Splits.Select(Cell))} | detail |");
        md.AppendLine($"|---|---:|{string.Concat(Splits.Select(_ => "---:|"))}---|");
        foreach (var s in Scores)
        {
            md.AppendLine($"| {Cell(s.Method)} | {s.Seed} | {string.Join(" | ", Splits.Select(split => s.Accuracy.TryGetValue(split, out var v) ? Inv($"{v:F2}") : ""))} | {Cell(s.Detail)} |");
        }

        if (Soups.Count > 0)
        {
            md.AppendLine().AppendLine("## Greedy soups").AppendLine();
            foreach (var s in Soups)
            {
                md.AppendLine(Inv($"- {Cell(s.Method)}, seed {s.Seed} ({s.Rule}): order {string.Join(", ", s.Order.Select((n, i) => $"{n} ({s.OrderValAccuracy[i]:F2})"))}; accepted {string.Join(", ", s.Accepted)} (val {s.ValAccuracy:F2})"));
            }
        }

        if (Notes.Count > 0)
        {
            md.AppendLine().AppendLine("## Notes").AppendLine();
            foreach (var note in Notes)
            {
                md.AppendLine($"- {note}");
            }
        }

        md.AppendLine().AppendLine("![accuracy per method](accuracy.png)");
        if (Curves.Count > 0)
        {
            md.AppendLine().AppendLine("![soup accuracy against ingredients](soup_ingredients.png)");
        }

        md.AppendLine().AppendLine("Files: summary.csv (mean, sd, range per method and data set), scores.csv (per seed), results.csv (one row per fine-tuning; accuracies as fractions), report.json (all of it), runs/KEY/ (each fine-tuning's model.onnx and run.json).");
        return md.ToString();
    }

    /// <summary>One panel per data set: per method a bar at the mean over seeds, an error bar of ± one sample sd, and a dot per seed.</summary>
    private void SaveAccuracyPlot(string path)
    {
        var methods = Scores.Select(s => s.Method).Distinct().ToList();
        var summary = Summary;
        var panels = new List<Plot>();
        var palette = new ScottPlot.Palettes.Category10();
        foreach (var split in Splits)
        {
            var plot = new Plot();
            var bars = methods.Select((m, i) =>
            {
                var s = summary.Single(x => x.Method == m && x.Split == split);
                return new Bar { Position = i, Value = double.IsFinite(s.Mean) ? s.Mean : 0, Error = s.StandardDeviation, FillColor = palette.GetColor(i).WithAlpha(0.5) };
            }).ToList();
            plot.Add.Bars(bars);
            for (var i = 0; i < methods.Count; i++)
            {
                var values = Scores.Where(s => s.Method == methods[i] && s.Accuracy.ContainsKey(split)).Select(s => s.Accuracy[split]).ToArray();
                if (values.Length > 0)
                {
                    plot.Add.Markers(values.Select(_ => (double)i).ToArray(), values, MarkerShape.FilledCircle, 6, Colors.Black);
                }
            }

            var finite = Scores.SelectMany(s => s.Accuracy.TryGetValue(split, out var v) ? [v] : Array.Empty<double>()).Where(double.IsFinite).ToList();
            if (finite.Count > 0)
            {
                var spread = Math.Max(1, finite.Max() - finite.Min());
                plot.Axes.SetLimitsY(Math.Max(0, finite.Min() - spread), Math.Min(100, finite.Max() + (spread / 2)));
            }

            plot.Axes.SetLimitsX(-0.6, methods.Count - 0.4);
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. methods.Select((m, i) => new Tick(i, m))]);
            plot.Axes.Bottom.TickLabelStyle.Rotation = 90;
            plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
            plot.Axes.Bottom.MinimumSize = 12 + (7 * methods.DefaultIfEmpty("").Max(m => m.Length));
            plot.Title($"{Recipe}: {split} accuracy (bar: mean, line: ± sd, dots: seeds)");
            plot.YLabel($"{split} accuracy (%)");
            panels.Add(plot);
        }

        var multiplot = new Multiplot();
        multiplot.Reset(panels.Count > 0 ? panels[0] : new Plot());
        foreach (var panel in panels.Skip(1))
        {
            multiplot.AddPlot(panel);
        }

        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();
        var width = Math.Max(600, 90 * methods.Count);
        OutputFile.WriteAllBytes(path, multiplot.Render(Math.Max(1, panels.Count) * width, 700).GetImageBytes(ImageFormat.Png));
    }

    private static string Csv(string value) =>
        value.IndexOfAny([',', '"', '\n', '\r']) >= 0 || value.Length == 0 ? "\"" + value.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : value;

    private static string Cell(string value) => value.Replace("|", "\\|", StringComparison.Ordinal).Replace("\n", " ", StringComparison.Ordinal).Replace("\r", " ", StringComparison.Ordinal);

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
