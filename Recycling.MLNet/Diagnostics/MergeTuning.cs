using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.MLNet.Diagnostics;

/// <summary>What a tuned merge is chosen on: the highest accuracy (ties broken by the lower log-loss) or the lowest log-loss.</summary>
internal enum TuningMetric
{
    Accuracy,
    Loss,
}

/// <summary>A merge parameter that can be tuned: its name (as the CLI spells it), the range searched, and how it is read and set.</summary>
internal sealed record TunedParameter(string Name, double Min, double Max, Func<MergeOptions, double> Get, Func<MergeOptions, double, MergeOptions> Set)
{
    /// <summary>The names <see cref="For"/> knows.</summary>
    public static IReadOnlyList<string> Names { get; } = ["lambda", "density", "drop-rate", "t"];

    /// <summary>
    /// The parameter <paramref name="name"/> of <paramref name="options"/>' method, searched over <paramref name="range"/>
    /// (default: λ in [0, 2], density in [0.05, 1], drop rate in [0, 0.95], SLERP t in [0, 1]); an error when the method
    /// (<paramref name="method"/>, as the user named it) does not read it or the range is outside what the method accepts.
    /// </summary>
    public static TunedParameter For(string name, MergeOptions options, string method, (double Min, double Max)? range = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        bool lambda = options.Method is MergeMethod.TaskArithmetic or MergeMethod.Ties
            || (options.Method == MergeMethod.Dare && options.DareCombination != DareCombination.Average);
        var (parameter, applies, users, valid, accepted) = name.ToLowerInvariant() switch
        {
            "lambda" or "λ" => (new TunedParameter("lambda", 0, 2, o => o.Lambda, (o, v) => o with { Lambda = v }), lambda, "task-arithmetic, ties, dare, dare-ties",
                (Func<double, bool>)double.IsFinite, "finite"),
            "density" => (new TunedParameter("density", 0.05, 1, o => o.Density, (o, v) => o with { Density = v }), options.UsesTies, "ties, dare-ties",
                v => v > 0 && v <= 1, "in (0, 1]"),
            "drop-rate" or "droprate" => (new TunedParameter("drop-rate", 0, 0.95, o => o.DropRate, (o, v) => o with { DropRate = v }), options.Method == MergeMethod.Dare, "dare, dare-ties, dare-average",
                v => v >= 0 && v < 1, "in [0, 1)"),
            "t" => (new TunedParameter("t", 0, 1, o => o.T, (o, v) => o with { T = v }), options.Method == MergeMethod.Slerp, "slerp",
                double.IsFinite, "finite"),
            _ => throw new RecyclingException($"--tune {MessageText.OneLine(name)}: not a tunable parameter; use {string.Join(", ", Names)}"),
        };
        if (!applies)
        {
            throw new RecyclingException($"--tune {parameter.Name}: --method {MessageText.OneLine(method)} does not read it (it applies to {users})");
        }

        if (range is { } r)
        {
            if (!valid(r.Min) || !valid(r.Max) || r.Min > r.Max)
            {
                throw new RecyclingException(string.Create(CultureInfo.InvariantCulture,
                    $"--tune {parameter.Name}={r.Min}:{r.Max}: give LOW:HIGH with LOW <= HIGH, both {accepted}"));
            }

            parameter = parameter with { Min = r.Min, Max = r.Max };
        }

        return parameter;
    }
}

/// <summary>Accuracy (%) and log-loss of one candidate on one data set.</summary>
internal sealed record TuningScore(string Data, double Accuracy, double LogLoss);

/// <summary>One evaluated candidate: the parameter values (in the order tuned), its val score, its scores on the held-out sets, and whether the refinement found it.</summary>
internal sealed record TuningPoint(IReadOnlyList<double> Values, TuningScore Val, IReadOnlyList<TuningScore> Test, bool Refinement);

/// <summary>The candidates evaluated, in the order they were, and the best one on val.</summary>
internal sealed record TuningResult(IReadOnlyList<string> Parameters, TuningMetric Metric, IReadOnlyList<TuningPoint> Points, TuningPoint Best, TuningPoint Default, MergeOptions BestOptions);

/// <summary>
/// Tunes merge parameters on labelled data: every candidate is merged in memory (<see cref="ModelSet"/>) and scored
/// through ONNX Runtime. First a grid (evenly spaced values per parameter over its range, plus the method's default
/// values, so the choice is never worse on val than the default), then rounds of refinement around the best point:
/// each round halves the step and tries one step either way along each parameter. Held-out sets are scored at every
/// candidate for the curve, never used to choose.
/// </summary>
internal static class MergeTuning
{
    public static TuningResult Run(ModelSet set, MergeOptions options, IReadOnlyList<TunedParameter> parameters, Dataset val, IReadOnlyList<Dataset> tests,
        TuningMetric metric, int points, int rounds, IProgress<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(parameters);
        if (parameters.Count == 0 || parameters.Select(p => p.Name).Distinct().Count() != parameters.Count)
        {
            throw new RecyclingException("--tune: name each parameter once");
        }

        if (points < 2)
        {
            throw new RecyclingException(string.Create(CultureInfo.InvariantCulture, $"--tune-points {points}: at least 2 values per parameter"));
        }

        if (rounds < 0)
        {
            throw new RecyclingException(string.Create(CultureInfo.InvariantCulture, $"--tune-rounds {rounds}: not negative"));
        }

        var evaluated = new List<TuningPoint>();
        var byValues = new Dictionary<string, TuningPoint>();
        TuningPoint Evaluate(double[] values, bool refinement)
        {
            var key = string.Join(",", values.Select(v => v.ToString("R", CultureInfo.InvariantCulture)));
            if (byValues.TryGetValue(key, out var known))
            {
                return known;
            }

            var candidate = Apply(options, parameters, values);
            progress?.Report(string.Create(CultureInfo.InvariantCulture, $"tuning: candidate {evaluated.Count + 1}, {Describe(parameters, values)}"));
            var point = new TuningPoint(values, Score(set, candidate, val), [.. tests.Select(t => Score(set, candidate, t))], refinement);
            evaluated.Add(point);
            byValues[key] = point;
            return point;
        }

        var defaults = parameters.Select(p => p.Get(options)).ToArray();
        var axes = parameters.Select(p => Axis(p, points)).ToList();
        var defaultPoint = Evaluate(defaults, refinement: false);
        foreach (var values in Product(axes))
        {
            Evaluate(values, refinement: false);
        }

        var best = evaluated.Aggregate((a, b) => Better(b, a, metric) ? b : a);
        var steps = parameters.Select(p => (p.Max - p.Min) / (points - 1)).ToArray();
        for (int round = 0; round < rounds; round++)
        {
            for (int i = 0; i < steps.Length; i++)
            {
                steps[i] /= 2;
            }

            var center = best;
            for (int i = 0; i < parameters.Count; i++)
            {
                foreach (var direction in new[] { -1, 1 })
                {
                    var values = center.Values.ToArray();
                    values[i] = Math.Clamp(values[i] + (direction * steps[i]), parameters[i].Min, parameters[i].Max);
                    var point = Evaluate(values, refinement: true);
                    if (Better(point, best, metric))
                    {
                        best = point;
                    }
                }
            }
        }

        return new TuningResult([.. parameters.Select(p => p.Name)], metric, evaluated, best, defaultPoint, Apply(options, parameters, [.. best.Values]));
    }

    /// <summary>"lambda 0.25, density 0.4".</summary>
    public static string Describe(IReadOnlyList<string> names, IReadOnlyList<double> values) =>
        string.Join(", ", names.Select((n, i) => string.Create(CultureInfo.InvariantCulture, $"{n} {values[i]:0.####}")));

    private static string Describe(IReadOnlyList<TunedParameter> parameters, IReadOnlyList<double> values) => Describe([.. parameters.Select(p => p.Name)], values);

    /// <summary>Whether <paramref name="a"/> is strictly better than <paramref name="b"/> on val (NaN never is).</summary>
    internal static bool Better(TuningPoint a, TuningPoint b, TuningMetric metric)
    {
        static double Loss(TuningScore s) => double.IsNaN(s.LogLoss) ? double.PositiveInfinity : s.LogLoss;
        return metric == TuningMetric.Accuracy
            ? a.Val.Accuracy > b.Val.Accuracy || (a.Val.Accuracy == b.Val.Accuracy && Loss(a.Val) < Loss(b.Val))
            : Loss(a.Val) < Loss(b.Val) || (Loss(a.Val) == Loss(b.Val) && a.Val.Accuracy > b.Val.Accuracy);
    }

    private static MergeOptions Apply(MergeOptions options, IReadOnlyList<TunedParameter> parameters, double[] values)
    {
        var result = options;
        for (int i = 0; i < parameters.Count; i++)
        {
            result = parameters[i].Set(result, values[i]);
        }

        return result;
    }

    private static TuningScore Score(ModelSet set, MergeOptions options, Dataset data)
    {
        var metrics = set.EvaluateMerge(options, data);
        return new TuningScore(data.Name, metrics.Accuracy, metrics.LogLoss);
    }

    /// <summary>Evenly spaced values over the parameter's range, rounded to 12 digits so that 0.1 + 0.2 prints as 0.3.</summary>
    private static double[] Axis(TunedParameter parameter, int points) =>
        parameter.Min == parameter.Max ? [parameter.Min]
            : [.. Enumerable.Range(0, points).Select(k => Math.Round(parameter.Min + ((parameter.Max - parameter.Min) * k / (points - 1)), 12))];

    private static IEnumerable<double[]> Product(IReadOnlyList<double[]> axes)
    {
        IEnumerable<double[]> result = [[]];
        foreach (var axis in axes)
        {
            result = result.SelectMany(prefix => axis.Select(v => (double[])[.. prefix, v])).ToList();
        }

        return result;
    }
}
