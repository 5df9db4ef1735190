using System.CommandLine;
using System.Globalization;
using System.Text;
using Recycling.MLNet.Diagnostics;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Merging;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>
/// `recycle merge --tune lambda[,density,...] --val DATA`: chooses the merge's parameters on labelled data before the
/// model is written (<see cref="MergeTuning"/>: candidates merged in memory and scored through ONNX Runtime), prints
/// the curve, writes it as CSV and PNG beside the output, and records the choice in the model's lineage.
/// </summary>
internal sealed class MergeTune
{
    private readonly Option<string?> _tune = new("--tune")
    {
        Description = "Choose these parameters on --val before writing: numeric parameters of the method (lambda, density, t ...; see --method), comma-separated; NAME=LOW:HIGH sets the range searched (default: the parameter's range, lambda 0 to 2). "
            + "A grid (with the method's defaults), then refinement around the best; the curve is printed and written beside -o (NAME.tune.csv, NAME.tune.png); the choice goes into the model's lineage (recycling.tuning).",
        HelpName = "lambda[,density,...]",
    };

    private readonly Option<string?> _val = new("--val", "-d", "--data") { Description = "With --tune: the labelled data the values are chosen on. " + DataDescription };

    private readonly Option<string[]> _test = TestOption("With --tune: held-out data scored at every candidate for the curve, never chosen on.");

    private readonly Option<string> _metric = new("--metric") { Description = "With --tune: accuracy (ties broken by the lower log-loss) or loss (log-loss).", HelpName = "accuracy|loss", DefaultValueFactory = _ => "accuracy" };

    private readonly Option<int?> _points = new("--tune-points") { Description = "With --tune: grid values per parameter (default 9 for one parameter, 5 for two, 3 for more)." };

    private readonly Option<int> _rounds = new("--tune-rounds") { Description = "With --tune: refinement rounds: the midpoints between the best candidate and its nearest neighbours along each parameter.", DefaultValueFactory = _ => 3 };

    private readonly Option<string?> _plot = new("--plot") { Description = "With --tune: the curve's PNG (default: beside -o, NAME.tune.png)." };

    private readonly Option<string> _outputName = new("--output-name") { Description = "With --tune: the model output holding class scores.", DefaultValueFactory = _ => "logits" };

    private readonly DataOptionSet _data = new();

    private readonly Option<int> _batch = BatchOption();

    /// <summary>The most grid candidates (each a merge and a scoring pass): beyond it a run would take hours.</summary>
    private const int MaxGrid = 10_000;

    /// <summary>Refinement rounds beyond this halve the gaps below any difference a merge shows (2⁻³⁰ of a grid step).</summary>
    private const int MaxRounds = 30;

    internal IEnumerable<Option> Options => [_tune, _val, _test, _metric, _points, _rounds, _plot, _outputName, _batch, .. _data.All];

    /// <summary>The tuning's options given without --tune, which are ignored.</summary>
    internal IEnumerable<string> Ignored(ParseResult parseResult) => parseResult.GetValue(_tune) is not null
        ? []
        : Options.Skip(1).Where(o => parseResult.GetResult(o) is { Implicit: false }).Select(o => $"{o.Name} is ignored without --tune");

    /// <summary>
    /// With --tune: evaluates the candidates and returns the request with the chosen values and their lineage entry, and
    /// the result (to print); without, the request unchanged and null. Every output path is checked before the work.
    /// </summary>
    internal (MergeRequest Request, TuningResult? Result) Run(ParseResult parseResult, MergeRequest request, string method, Option<string> device, bool quiet)
    {
        if (parseResult.GetValue(_tune) is not { } spec)
        {
            return (request, null);
        }

        var valSpec = parseResult.GetValue(_val) ?? throw new RecyclingException("--tune needs --val DATA: the labelled data the values are chosen on");
        var testSpecs = parseResult.GetValue(_test) ?? [];
        var metric = parseResult.GetValue(_metric)!.ToLowerInvariant() switch
        {
            "accuracy" => TuningMetric.Accuracy,
            "loss" or "log-loss" => TuningMetric.Loss,
            var other => throw new RecyclingException($"--metric {MessageText.OneLine(other)}: use accuracy or loss"),
        };
        var parameters = Parse(spec).Select(p => TunedParameter.For(p.Name, request.Options, method, p.Range)).ToList();
        int points = parseResult.GetValue(_points) ?? (parameters.Count == 1 ? 9 : parameters.Count == 2 ? 5 : 3);
        int rounds = parseResult.GetValue(_rounds);
        double grid = Math.Pow(points, parameters.Count);
        if (points < 2 || grid > MaxGrid || rounds is < 0 or > MaxRounds)
        {
            var c = CultureInfo.InvariantCulture;
            throw new RecyclingException(points < 2
                ? string.Create(c, $"{_points.Name} {points}: at least 2 values per parameter")
                : grid > MaxGrid ? string.Create(c, $"{_points.Name} {points}: {points}^{parameters.Count} = {grid:N0} candidates; the grid holds at most {MaxGrid:N0}")
                : string.Create(c, $"{_rounds.Name} {rounds}: use 0 to {MaxRounds} (each round halves the gaps around the best)"));
        }

        request.Options.Validate(request.Inputs.Count);
        var inputs = Inputs([.. request.Inputs, request.Base], [valSpec, .. testSpecs], request.FisherFiles);
        ModelWriter.Prepare(request.Output, inputs, request.ExternalData, "-o");
        var stem = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(request.Output))!, Path.GetFileNameWithoutExtension(request.Output) + ".tune");
        var plot = parseResult.GetValue(_plot);
        if (plot is not null && Path.GetFullPath(plot) == Path.GetFullPath(request.Output))
        {
            throw new RecyclingException($"{_plot.Name} {MessageText.Path(plot)}: is the merged model's path (-o)");
        }

        var png = OutputFile.Prepare(plot ?? stem + ".png", inputs, plot is null ? "-o" : _plot.Name);
        var csv = OutputFile.Prepare(stem + ".csv", inputs, "-o");

        var read = _data.Reader(parseResult, request.Inputs[0]);
        var val = read(valSpec);
        var tests = testSpecs.Select(read).ToList();
        var scoring = Scoring(parseResult, device, _batch);
        using var set = new ModelSet(request.Inputs, request.Base, request.Heads, parseResult.GetValue(_outputName)!, scoring, request.FisherFiles);
        var result = WithStatus(quiet, "tuning", progress =>
            MergeTuning.Run(set, request.Options, parameters, val, tests, metric, points, rounds, progress));
        csv.WriteAllText(ToCsv(result));
        DiagnosticPlots.SaveTuning(png.Path, result, $"{method} tuned on {Path.GetFileName(val.Name)}");
        var lineage = System.Text.Json.JsonSerializer.Serialize(new
        {
            metric = metric.ToString().ToLowerInvariant(),
            data = val.Name,
            values = result.Parameters.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => result.Best.Values[x.i]),
            accuracy = result.Best.Val.Accuracy,
            logLoss = result.Best.Val.LogLoss,
            candidates = result.Points.Count,
        }, new System.Text.Json.JsonSerializerOptions(JsonStyle.Options) { WriteIndented = false });
        return (request with
        {
            Options = result.BestOptions,
            Metadata = new Dictionary<string, string> { ["recycling.tuning"] = lineage },
        }, result);
    }

    /// <summary>The tuning as the merge's JSON shows it (docs/json/merge.schema.json).</summary>
    internal static object Json(TuningResult result) => new
    {
        metric = result.Metric.ToString().ToLowerInvariant(),
        parameters = result.Parameters,
        chosen = Values(result, result.Best),
        defaults = Values(result, result.Default),
        points = result.Points.Select(p => new
        {
            values = Values(result, p),
            val = new { data = p.Val.Data, accuracy = p.Val.Accuracy, logLoss = p.Val.LogLoss },
            test = p.Test.Select(t => new { data = t.Data, accuracy = t.Accuracy, logLoss = t.LogLoss }),
            refinement = p.Refinement,
        }),
    };

    /// <summary>The curve, best and default marked, sorted by the parameters' values.</summary>
    internal static void Print(IAnsiConsole console, TuningResult result)
    {
        var tests = DataLabels([.. result.Best.Test.Select(t => t.Data)]);
        var table = new Table().Title($"tuned on {Path.GetFileName(result.Best.Val.Data)} by {result.Metric.ToString().ToLowerInvariant()}: {result.Points.Count} candidates")
            .AddColumns([.. result.Parameters, "val acc", "val loss", .. tests.SelectMany(t => new[] { $"{t} acc", $"{t} loss" }), ""]);
        var order = result.Points.OrderBy(p => p.Values, Comparer<IReadOnlyList<double>>.Create(Compare));
        foreach (var p in order)
        {
            var mark = ReferenceEquals(p, result.Best) ? "best" : ReferenceEquals(p, result.Default) ? "default" : "";
            table.AddRow([.. p.Values.Select(Number), Pct(p.Val.Accuracy), Loss(p.Val.LogLoss), .. p.Test.SelectMany(t => new[] { Pct(t.Accuracy), Loss(t.LogLoss) }), mark]);
        }

        Tables.Write(console, table);
        console.WriteLine($"chosen: {MergeTuning.Describe(result.Parameters, result.Best.Values)} (val accuracy {Pct(result.Best.Val.Accuracy)}, log-loss {Loss(result.Best.Val.LogLoss)}); "
            + $"default {MergeTuning.Describe(result.Parameters, result.Default.Values)}: val accuracy {Pct(result.Default.Val.Accuracy)}, log-loss {Loss(result.Default.Val.LogLoss)}");
    }

    /// <summary>"lambda,density=0.1:0.9" as names and optional ranges; one line naming the bad part otherwise.</summary>
    internal static IReadOnlyList<(string Name, (double, double)? Range)> Parse(string spec)
    {
        var parts = spec.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Any(p => p.Length == 0))
        {
            throw new RecyclingException($"--tune {MessageText.OneLine(spec)}: give parameter names separated by commas, e.g. lambda or lambda,density=0.1:0.9");
        }

        return [.. parts.Select(part =>
        {
            var pieces = part.Split('=', 2);
            if (pieces.Length == 1)
            {
                return (pieces[0], ((double, double)?)null);
            }

            var bounds = pieces[1].Split(':');
            if (bounds.Length != 2 || !TryNumber(bounds[0], out var low) || !TryNumber(bounds[1], out var high))
            {
                throw new RecyclingException($"--tune {MessageText.OneLine(part)}: give a range as NAME=LOW:HIGH, e.g. lambda=0:1.5");
            }

            return (pieces[0], (low, high));
        })];
    }

    private static bool TryNumber(string text, out double value) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value);

    private static Dictionary<string, double> Values(TuningResult result, TuningPoint point) =>
        result.Parameters.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => point.Values[x.i]);

    private static string ToCsv(TuningResult result)
    {
        var tests = result.Best.Test.Select(t => t.Data).ToList();
        var csv = new StringBuilder(string.Join(",", [.. result.Parameters, "val_accuracy", "val_log_loss", .. tests.SelectMany(t => new[] { Quote(t + " accuracy"), Quote(t + " log_loss") }), "refinement", "chosen"]) + "\n");
        foreach (var p in result.Points)
        {
            csv.AppendLine(string.Join(",", [.. p.Values.Select(R), R(p.Val.Accuracy), R(p.Val.LogLoss), .. p.Test.SelectMany(t => new[] { R(t.Accuracy), R(t.LogLoss) }),
                p.Refinement ? "1" : "0", ReferenceEquals(p, result.Best) ? "1" : "0"]));
        }

        return csv.ToString();
    }

    private static string Quote(string text) => text.Contains(',', StringComparison.Ordinal) || text.Contains('"', StringComparison.Ordinal) || text.Contains('\n', StringComparison.Ordinal)
        ? "\"" + text.Replace("\"", "\"\"", StringComparison.Ordinal) + "\""
        : text;

    private static string R(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    private static string Number(double value) => value.ToString("0.####", CultureInfo.InvariantCulture);

    private static string Loss(double value) => value.ToString("F4", CultureInfo.InvariantCulture);

    private static int Compare(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        for (int i = 0; i < a.Count; i++)
        {
            int c = a[i].CompareTo(b[i]);
            if (c != 0)
            {
                return c;
            }
        }

        return 0;
    }
}
