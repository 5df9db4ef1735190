using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Soups;
using Recycling.Onnx.IO;
using Recycling.Training.Recipes;

namespace Recycling.Cli.Commands;

/// <summary>`recycle soup --learned`: the learned soup next to the uniform and greedy soups of the same ingredients, on the same data.</summary>
internal static class LearnedSoupMode
{
    /// <summary>One soup's figures on one data set.</summary>
    internal sealed record SoupScore(string Soup, string Data, double Accuracy, double LogLoss);

    internal sealed record Outcome(LearnedSoupResult Result, GreedySoupResult Greedy, IReadOnlyList<SoupScore> Scores);

    /// <summary>
    /// Learns the soup on <paramref name="validation"/> (written to its Output, or to a temporary file
    /// that is deleted), then scores it with ONNX Runtime from the written file, with the uniform and greedy soups.
    /// </summary>
    internal static Outcome Run(ModelSet set, LearnedSoupOptions options, GreedyRule rule, Dataset validation, IReadOnlyList<Dataset> tests, ScoringOptions scoring, Action<string>? progress)
    {
        var temporary = options.Output is null ? Path.Combine(Path.GetTempPath(), $"recycle-learned-soup-{Guid.NewGuid():N}.onnx") : null;
        try
        {
            var result = LearnedSoup.Run(options with { Output = options.Output ?? temporary }, progress);
            var greedy = set.GreedySoup(validation, rule);
            var all = Enumerable.Range(0, set.Count).ToList();
            var scores = new List<SoupScore>();
            using var scorer = OnnxScorer.Open(options.Output ?? temporary!, scoring);
            foreach (var data in tests.Prepend(validation))
            {
                var uniform = set.EvaluateUniform(all, data);
                var greedyMetrics = set.EvaluateUniform(greedy.AcceptedIndices, data);
                var learned = ClassificationMetrics.FromLogits(scorer.Run(data, set.Output), data);
                scores.Add(new SoupScore("uniform", data.Name, uniform.Accuracy, uniform.LogLoss));
                scores.Add(new SoupScore($"greedy ({greedy.RuleSymbol})", data.Name, greedyMetrics.Accuracy, greedyMetrics.LogLoss));
                scores.Add(new SoupScore(options.ByLayer ? "learned (by layer)" : "learned", data.Name, learned.Accuracy, learned.LogLoss));
            }

            return new Outcome(options.Output is null ? result with { Output = null } : result, greedy, scores);
        }
        finally
        {
            if (temporary is not null)
            {
                OutputFile.TryDelete(temporary);
            }
        }
    }

    /// <summary>The <c>learned</c> object of `soup --json` (null in the other modes).</summary>
    internal static object Json(Outcome outcome, IReadOnlyList<string> names) => new
    {
        byLayer = outcome.Result.Layers.Count > 1 || outcome.Result.Layers[0].Layer != "all",
        weights = names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => outcome.Result.Weights[p.i]),
        layers = outcome.Result.Layers.Select(l => new { layer = l.Layer, initializers = l.Initializers, weights = l.Weights }),
        epochs = outcome.Result.Epochs,
        mixedTensors = outcome.Result.MixedTensors,
        seconds = outcome.Result.Seconds,
        peakWorkingSetBytes = outcome.Result.PeakWorkingSetBytes,
        onnxRuntimeGap = outcome.Result.OnnxRuntimeGap,
        compare = outcome.Scores.Select(s => new { soup = s.Soup, data = s.Data, accuracy = s.Accuracy, logLoss = s.LogLoss }),
    };

    internal static string Describe(double value) => value.ToString("F3", CultureInfo.InvariantCulture);
}
