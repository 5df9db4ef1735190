using System.Globalization;
using System.Text;
using Recycling.MLNet.Diagnostics;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using ScottPlot;

namespace Recycling.Training.Recipes;

/// <summary>
/// One result of a recipe under one seed (null: a result of all seeds, e.g. a soup of every seed's run): accuracies
/// in % by data set label; <see cref="Detail"/> says what was measured (the run chosen, the runs kept), <see cref="Model"/>
/// the model written, where there is one.
/// </summary>
public sealed record RecipeScore(string Method, int? Seed, IReadOnlyDictionary<string, double> Accuracy)
{
    public string Detail { get; init; } = "";

    public string? Model { get; init; }
}

/// <summary>A greedy soup of one method and seed: its pool, the order tried (val accuracy, %), the accepted runs and the soup's val accuracy (%).</summary>
public sealed record RecipeSoup(string Method, int Seed, string Rule, IReadOnlyList<string> Members, IReadOnlyList<string> Order, IReadOnlyList<double> OrderValAccuracy,
    IReadOnlyList<string> Accepted, double ValAccuracy);

/// <summary>A method's accuracy on one data set over its results (one per seed, for methods run per seed): mean, sample standard deviation (0 for one), range.</summary>
public sealed record RecipeSummary(string Method, string Split, int Seeds, double Mean, double StandardDeviation, double Min, double Max);

/// <summary>A plot a recipe supplies for its report: the file name in the report folder, its caption, and how it is drawn into a path.</summary>
internal sealed record RecipePlot(string File, string Caption, Action<string> Save);

/// <summary>
/// A recipe's report, and the one writer of every recipe's report folder (fuse, ratatouille, lo-fi, ColD fusion,
/// learned soups, merges; one recipe or several, as `recycle demo --recipes` writes them). Each recipe supplies its
/// results (<see cref="Scores"/>), fine-tunings, greedy soups, settings, notes and, where the default accuracy plot
/// does not fit, its own tables and plots; <see cref="WriteFolder"/> writes README.md (per recipe: settings, mean ±
/// sd and range per method and data set, every result, its tables, greedy soups, notes, plots), summary.csv and
/// results.csv (accuracy %), runs.csv (one row per fine-tuning, accuracies as fractions, as run.json holds them),
/// NAME.json per recipe (the <c>--json</c> document) and NAME.png per recipe (per method: mean, ± sd, every result),
/// every file through the shared atomic writer.
/// </summary>
public sealed record RecipeReport
{
    /// <summary>The recipe: fuse, ratatouille, lofi, cold_fusion, learned_soup, merge (as a recipe file names it).</summary>
    public required string Recipe { get; init; }

    public required string Title { get; init; }

    /// <summary>The report's name in its folder (its JSON and PNG files, its README section); default: <see cref="Recipe"/>.</summary>
    public string Name
    {
        get => _name ?? Recipe;
        init => _name = value;
    }

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

    /// <summary>The recipe's own Markdown tables, each with its heading (e.g. ColD fusion's score per round), after the results.</summary>
    internal IReadOnlyList<string> Tables { get; init; } = [];

    /// <summary>The recipe's own plots; null: the accuracy plot (NAME.png) and, with curves, NAME-soup_ingredients.png.</summary>
    internal IReadOnlyList<RecipePlot>? Plots { get; init; }

    private readonly string? _name;

    /// <summary>Mean ± sample standard deviation over the results, per method (in order of first appearance) and data set.</summary>
    public IReadOnlyList<RecipeSummary> Summary =>
        [.. Methods.SelectMany(method => Splits.Select(split =>
        {
            var values = Values(method, split);
            var mean = values.Count == 0 ? double.NaN : values.Average();
            var sd = values.Count > 1 ? Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1)) : 0;
            return new RecipeSummary(method, split, values.Count, mean, sd, values.Count == 0 ? double.NaN : values.Min(), values.Count == 0 ? double.NaN : values.Max());
        }))];

    private List<string> Methods => [.. Scores.Select(s => s.Method).Distinct()];

    /// <summary>The recipe's plots, else the accuracy plot (when anything was scored) and the soup curves (when there are any).</summary>
    private IReadOnlyList<RecipePlot> PlotsOrDefault =>
        Plots ??
        [
            .. Scores.Any(s => s.Accuracy.Count > 0) ? [new RecipePlot($"{Name}.png", "accuracy per method", SaveAccuracyPlot)] : Array.Empty<RecipePlot>(),
            .. Curves.Count == 0 ? Array.Empty<RecipePlot>() :
                [new($"{Name}-soup_ingredients.png", "soup accuracy against ingredients", p => DiagnosticPlots.SaveIngredientCurves(p, Curves, $"{Name}: uniform soups of the top-k runs by val (mean over seeds)"))],
        ];

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
        var splits = SplitLabels(validation, tests);
        return new RecipeReport
        {
            Recipe = recipe,
            Title = title,
            Splits = [.. splits.Values],
            Scores = [.. runs.Select(r => new RecipeScore(r.Method, r.Seed, Percent(r.Run.Figures, splits)) { Detail = Path.GetFileName(r.Start), Model = r.Run.Model })],
            Runs = runs,
            Settings = settings ?? new Dictionary<string, string>(),
            Notes = notes ?? [],
            Seconds = seconds,
        };
    }

    /// <summary>The label of each figure key a run scored on <paramref name="validation"/> (if any) and <paramref name="tests"/> has (<see cref="TargetRuns.FigureKey"/>): "val", then <see cref="TestLabels"/>.</summary>
    internal static IReadOnlyDictionary<string, string> SplitLabels(string? validation, IReadOnlyList<string> tests)
    {
        var labels = TestLabels(tests);
        var splits = new Dictionary<string, string>(StringComparer.Ordinal);
        if (validation is not null)
        {
            splits[TargetRuns.FigureKey("val", validation)] = "val";
        }

        for (var i = 0; i < tests.Count; i++)
        {
            splits[TargetRuns.FigureKey($"test{i}", tests[i])] = labels[i];
        }

        return splits;
    }

    /// <summary>Figures (accuracy 0..1 by figure key) as accuracies in % by label; figures without a label are left out.</summary>
    internal static IReadOnlyDictionary<string, double> Percent(IReadOnlyDictionary<string, double> figures, IReadOnlyDictionary<string, string> labels) =>
        figures.Where(f => labels.ContainsKey(f.Key)).ToDictionary(f => labels[f.Key], f => f.Value * 100, StringComparer.Ordinal);

    /// <summary>Writes this report alone into <paramref name="folder"/> (created if needed).</summary>
    public void Write(string folder) => WriteFolder(folder, Title, [], [this]);

    /// <summary>
    /// Writes <paramref name="reports"/> into one report folder (created if needed), each file atomically: README.md
    /// (<paramref name="title"/>, the <paramref name="preamble"/> paragraphs, a section per report), summary.csv,
    /// results.csv, runs.csv, and each report's NAME.json and plots. Names must differ.
    /// </summary>
    internal static void WriteFolder(string folder, string title, IReadOnlyList<string> preamble, IReadOnlyList<RecipeReport> reports)
    {
        if (reports.Select(r => r.Name).Distinct(StringComparer.Ordinal).Count() != reports.Count)
        {
            throw new ArgumentException("two reports of one folder have the same name", nameof(reports));
        }

        Directory.CreateDirectory(folder);
        var md = new StringBuilder().AppendLine($"# {title}").AppendLine();
        foreach (var paragraph in preamble)
        {
            md.AppendLine(paragraph).AppendLine();
        }

        foreach (var report in reports)
        {
            foreach (var plot in report.PlotsOrDefault)
            {
                plot.Save(Path.Combine(folder, plot.File));
            }

            OutputFile.WriteAllText(Path.Combine(folder, report.Name + ".json"), report.ToJson());
            md.Append(report.Section());
        }

        md.AppendLine(Inv($"Files: summary.csv (mean, sd, range per method and data set, %), results.csv (every result, %), runs.csv (one row per fine-tuning, accuracies as fractions), {string.Join(", ", reports.Select(r => r.Name + ".json"))} (all of it), runs/KEY/ (each fine-tuning's model.onnx and run.json)."));
        OutputFile.WriteAllText(Path.Combine(folder, "README.md"), md.ToString());
        OutputFile.WriteAllText(Path.Combine(folder, "summary.csv"), SummaryCsv(reports));
        OutputFile.WriteAllText(Path.Combine(folder, "results.csv"), ResultsCsv(reports));
        OutputFile.WriteAllText(Path.Combine(folder, "runs.csv"), RunsCsv(reports));
    }

    /// <summary>The summary (per method: results, mean ± sd and range per data set) and the recipe's own tables, as Markdown: what the commands print.</summary>
    public string Table() => string.Join(Environment.NewLine, [SummaryMarkdown(), .. Tables]);

    public string ToJson() => JsonStyle.Serialize(new
    {
        recipe = Recipe,
        name = Name,
        title = Title,
        seconds = Seconds,
        splits = Splits,
        settings = Settings,
        summary = Summary.Select(s => new { method = s.Method, split = s.Split, seeds = s.Seeds, mean = s.Mean, sd = s.StandardDeviation, min = s.Min, max = s.Max }),
        scores = Scores.Select(s => new { method = s.Method, seed = s.Seed, detail = s.Detail, model = s.Model is null ? null : Path.GetFullPath(s.Model), accuracy = s.Accuracy }),
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

    private List<double> Values(string method, string split) =>
        [.. Scores.Where(s => s.Method == method && s.Accuracy.ContainsKey(split)).Select(s => s.Accuracy[split])];

    /// <summary>This report's README section.</summary>
    private string Section()
    {
        var md = new StringBuilder();
        var seeds = Scores.Select(s => s.Seed).OfType<int>().Distinct().ToList();
        md.AppendLine(Inv($"## {Cell(Name)} ({Recipe}, {Seconds:F1} s)")).AppendLine();
        md.AppendLine($"{Cell(Title)}.");
        if (Runs.Count > 0)
        {
            md.Append(Inv($" {Runs.Select(r => r.Run.Key).Distinct().Count()} fine-tunings ({Runs.Count(r => r.Run.Reused)} of {Runs.Count} run entries reused from earlier calls)."));
        }

        md.AppendLine(Inv($"{(seeds.Count > 0 ? $" Seeds {string.Join(", ", seeds)}." : "")} Accuracy in % (ONNX Runtime on the written models)."));
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

        md.AppendLine("### Mean ± sample standard deviation over the results (one per seed), and range").AppendLine();
        md.AppendLine(SummaryMarkdown());
        md.AppendLine("### Every result").AppendLine();
        md.AppendLine($"| method | seed | {string.Join(" | ", Splits.Select(Cell))} | detail |");
        md.AppendLine($"|---|---:|{string.Concat(Splits.Select(_ => "---:|"))}---|");
        foreach (var s in Scores)
        {
            md.AppendLine(Inv($"| {Cell(s.Method)} | {(s.Seed is { } seed ? seed.ToString(CultureInfo.InvariantCulture) : "")} | {string.Join(" | ", Splits.Select(split => s.Accuracy.TryGetValue(split, out var v) ? Inv($"{v:F2}") : ""))} | {Cell(s.Detail)} |"));
        }

        md.AppendLine();
        foreach (var table in Tables)
        {
            md.AppendLine(table);
        }

        if (Soups.Count > 0)
        {
            md.AppendLine("### Greedy soups").AppendLine();
            foreach (var s in Soups)
            {
                md.AppendLine(Inv($"- {Cell(s.Method)}, seed {s.Seed} ({s.Rule}): order {string.Join(", ", s.Order.Select((n, i) => $"{n} ({s.OrderValAccuracy[i]:F2})"))}; accepted {string.Join(", ", s.Accepted)} (val {s.ValAccuracy:F2})"));
            }

            md.AppendLine();
        }

        if (Notes.Count > 0)
        {
            md.AppendLine("### Notes").AppendLine();
            foreach (var note in Notes)
            {
                md.AppendLine($"- {note}");
            }

            md.AppendLine();
        }

        foreach (var plot in PlotsOrDefault)
        {
            md.AppendLine($"![{Cell(plot.Caption)}]({Uri.EscapeDataString(plot.File)})").AppendLine();
        }

        return md.ToString();
    }

    /// <summary>Per method: the number of results, then mean ± sd and min–max (%) for each data set.</summary>
    private string SummaryMarkdown()
    {
        var md = new StringBuilder();
        md.AppendLine($"| method | results | {string.Join(" | ", Splits.Select(s => $"{Cell(s)} % (mean ± sd) | {Cell(s)} min–max"))} |");
        md.AppendLine($"|---|---:|{string.Concat(Splits.Select(_ => "---:|---:|"))}");
        var summary = Summary;
        foreach (var method in Methods)
        {
            var mine = summary.Where(s => s.Method == method).ToList();
            var cells = mine.Select(s => s.Seeds == 0 ? " | " : Inv($"{s.Mean:F2} ± {s.StandardDeviation:F2} | {s.Min:F2}–{s.Max:F2}"));
            md.AppendLine(Inv($"| {Cell(method)} | {Scores.Count(s => s.Method == method)} | {string.Join(" | ", cells)} |"));
        }

        return md.ToString();
    }

    private static string SummaryCsv(IReadOnlyList<RecipeReport> reports)
    {
        var csv = new StringBuilder("recipe,method,split,results,mean,sd,min,max\n");
        foreach (var report in reports)
        {
            foreach (var s in report.Summary)
            {
                csv.Append(Inv($"{Csv(report.Name)},{Csv(s.Method)},{Csv(s.Split)},{s.Seeds},{Number(s.Mean)},{Number(s.StandardDeviation)},{Number(s.Min)},{Number(s.Max)}")).Append('\n');
            }
        }

        return csv.ToString();
    }

    /// <summary>One row per result: recipe (its name), method, seed, detail, accuracy % per data set (of every report), model.</summary>
    private static string ResultsCsv(IReadOnlyList<RecipeReport> reports)
    {
        var splits = reports.SelectMany(r => r.Splits).Distinct().ToList();
        var csv = new StringBuilder($"recipe,method,seed,detail,{string.Join(",", splits.Select(Csv))},model\n");
        foreach (var report in reports)
        {
            foreach (var s in report.Scores)
            {
                var values = splits.Select(split => s.Accuracy.TryGetValue(split, out var v) ? Number(v) : "");
                csv.Append(Inv($"{Csv(report.Name)},{Csv(s.Method)},{s.Seed},{Csv(s.Detail)},{string.Join(",", values)},{Csv(s.Model ?? "")}")).Append('\n');
            }
        }

        return csv.ToString();
    }

    /// <summary>One row per fine-tuning: recipe, method, start, seed, each figure (accuracy as a fraction), seconds, reused, folder.</summary>
    private static string RunsCsv(IReadOnlyList<RecipeReport> reports)
    {
        var sets = reports.SelectMany(r => r.Runs).SelectMany(r => r.Run.Figures.Keys).Distinct().ToList();
        var csv = new StringBuilder($"recipe,method,start,seed,{string.Join(",", sets.Select(Csv))},seconds,reused,folder\n");
        foreach (var report in reports)
        {
            foreach (var r in report.Runs)
            {
                var values = sets.Select(s => r.Run.Figures.TryGetValue(s, out var v) ? Number(v) : "");
                csv.Append(Inv($"{Csv(report.Name)},{Csv(r.Method)},{Csv(Path.GetFileName(r.Start))},{r.Seed},{string.Join(",", values)},{r.Run.Seconds:F1},{r.Run.Reused},{Csv(r.Run.Folder)}")).Append('\n');
            }
        }

        return csv.ToString();
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
            plot.Title($"{Name}: {split} accuracy (bar: mean, line: ± sd, dots: results)");
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

    private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    private static string Csv(string value) =>
        value.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + value.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : value;

    private static string Cell(string value) => value.Replace("|", "\\|", StringComparison.Ordinal).Replace("\n", " ", StringComparison.Ordinal).Replace("\r", " ", StringComparison.Ordinal);

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
