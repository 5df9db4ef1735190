using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.MLNet.Diagnostics;

/// <summary>What a tuned merge is chosen on: the highest accuracy (ties broken by the lower log-loss) or the lowest log-loss.</summary>
internal enum TuningMetric
{
    Accuracy,
    Loss,
}

/// <summary>
/// A merge parameter that can be tuned: a numeric parameter of the method in the registry (<see cref="MergeMethods"/>:
/// <c>lambda</c>, <c>density</c>, <c>t</c> ...), searched over a range inside the one the method declares, and set as
/// its global value (<see cref="MergeOptions.Parameters"/>).
/// </summary>
internal sealed record TunedParameter(MethodParameter Declared, double Min, double Max)
{
    public string Name => Declared.Name;

    /// <summary>The value <paramref name="options"/> merge with (given, else the method's default).</summary>
    public double Get(MergeOptions options) => options.Arguments(options.Weights?.Count ?? options.ModelParameters?.Count ?? 1)[Name];

    public MergeOptions Set(MergeOptions options, double value) => options with
    {
        Parameters = new Dictionary<string, double>(options.Parameters ?? new Dictionary<string, double>(), StringComparer.OrdinalIgnoreCase) { [Name] = value },
    };

    /// <summary>
    /// The parameter <paramref name="name"/> of <paramref name="options"/>' method (<paramref name="method"/>, as the user
    /// named it), searched over <paramref name="range"/> or by default over its declared range (exclusive ends moved in
    /// by 5%; λ, unbounded, over [0, 2]); an error when the method has no such numeric parameter, or when it is given
    /// per model, or when the range leaves what the method accepts.
    /// </summary>
    public static TunedParameter For(string name, MergeOptions options, string method, (double Min, double Max)? range = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var key = name.Replace('-', '_');
        bool Tunable(MethodParameter p) => p.Kind == ParameterKind.Number && p.Name is not ("weight" or "seed") && string.Equals(p.Name, key, StringComparison.OrdinalIgnoreCase);
        var declared = options.Definition.Parameters.FirstOrDefault(Tunable);
        if (declared is null)
        {
            var users = MergeMethods.All.Where(m => m.Parameters.Any(Tunable)).Select(m => m.Name).ToList();
            throw new RecyclingException(users.Count == 0
                ? $"--tune {MessageText.OneLine(name)}: not a tunable parameter; a method's numeric parameters are: {string.Join(", ", MergeMethods.All.SelectMany(m => m.Parameters).Where(p => p.Kind == ParameterKind.Number && p.Name is not ("weight" or "seed")).Select(p => p.Name).Distinct())}"
                : $"--tune {MessageText.OneLine(name)}: --method {MessageText.OneLine(method)} does not read it (it applies to {string.Join(", ", users)})");
        }

        if (options.ModelParameters?.Any(m => m?.Keys.Any(k => string.Equals(k, declared.Name, StringComparison.OrdinalIgnoreCase)) == true) == true)
        {
            throw new RecyclingException($"--tune {declared.Name}: it is given per model (--param {declared.Name}=...,...); tune one value for all models or none");
        }

        if (range is { } r)
        {
            if (!double.IsFinite(r.Min) || !double.IsFinite(r.Max) || r.Min > r.Max || !Inside(declared, r.Min) || !Inside(declared, r.Max))
            {
                throw new RecyclingException(string.Create(CultureInfo.InvariantCulture,
                    $"--tune {declared.Name}={r.Min}:{r.Max}: give LOW:HIGH with LOW <= HIGH, both {(double.IsInfinity(declared.Min) && double.IsInfinity(declared.Max) ? "finite" : "in " + declared.Range)}"));
            }

            return new TunedParameter(declared, r.Min, r.Max);
        }

        double low = double.IsFinite(declared.Min) ? declared.Min : Math.Min(0, declared.Default);
        double high = double.IsFinite(declared.Max) ? declared.Max : Math.Max(Math.Max(2, 2 * declared.Default), low + 1);
        double inward = (high - low) / 20;
        return new TunedParameter(declared, declared.MinExclusive ? low + inward : low, declared.MaxExclusive ? high - inward : high);
    }

    private static bool Inside(MethodParameter p, double value) =>
        (p.MinExclusive ? value > p.Min : value >= p.Min) && (p.MaxExclusive ? value < p.Max : value <= p.Max);
}

/// <summary>Accuracy (%) and log-loss of one candidate on one data set.</summary>
internal sealed record TuningScore(string Data, double Accuracy, double LogLoss);

/// <summary>One evaluated candidate: the parameter values (in the order tuned), its val score, its scores on the held-out sets, and whether the refinement found it.</summary>
internal sealed record TuningPoint(IReadOnlyList<double> Values, TuningScore Val, IReadOnlyList<TuningScore> Test, bool Refinement);

/// <summary>The candidates evaluated, in the order they were, and the best one on val.</summary>
internal sealed record TuningResult(IReadOnlyList<string> Parameters, TuningMetric Metric, IReadOnlyList<TuningPoint> Points, TuningPoint Best, TuningPoint Default, MergeOptions BestOptions);

/// <summary>
/// Tunes merge parameters on labelled data: every candidate is merged in memory (<see cref="ModelSet"/>) and scored
/// through ONNX Runtime. First a grid (per parameter: evenly spaced values over its range, or for λ, unbounded above,
/// 0 and halvings of the top: 0, 2/128 ... 1, 2), plus the method's default values, so that the choice is never worse
/// on val than the default; then rounds of refinement: along each parameter, the midpoints between the best point
/// and its nearest evaluated neighbours. Held-out sets are scored at every
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
        for (int round = 0; round < rounds; round++)
        {
            var center = best;
            for (int i = 0; i < parameters.Count; i++)
            {
                // The best point's nearest evaluated neighbours along axis i (the other values equal): try the midpoints.
                var line = evaluated.Where(p => SameExcept(p.Values, center.Values, i)).Select(p => p.Values[i]).Distinct().Order().ToList();
                int at = line.IndexOf(center.Values[i]);
                foreach (var neighbour in new[] { at - 1, at + 1 }.Where(k => k >= 0 && k < line.Count))
                {
                    var values = center.Values.ToArray();
                    values[i] = Math.Round((center.Values[i] + line[neighbour]) / 2, 12);
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
    private static double[] Axis(TunedParameter parameter, int points)
    {
        if (parameter.Min == parameter.Max)
        {
            return [parameter.Min];
        }

        // A scale with no upper bound (λ) from 0: halvings of the top, so that 1/N over N task vectors is near a grid value.
        if (parameter.Min == 0 && parameter.Max > 0 && double.IsPositiveInfinity(parameter.Declared.Max))
        {
            return [0, .. Enumerable.Range(0, points - 1).Select(k => parameter.Max / Math.Pow(2, points - 2 - k))];
        }

        return [.. Enumerable.Range(0, points).Select(k => Math.Round(parameter.Min + ((parameter.Max - parameter.Min) * k / (points - 1)), 12))];
    }

    private static bool SameExcept(IReadOnlyList<double> a, IReadOnlyList<double> b, int axis) =>
        Enumerable.Range(0, a.Count).All(k => k == axis || a[k] == b[k]);

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
