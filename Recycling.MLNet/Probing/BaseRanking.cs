using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;

namespace Recycling.MLNet.Probing;

/// <summary>
/// Ranks candidate bases for a target task as the model-recycling ranking does: a linear probe on each candidate's
/// frozen features, trained on the target's training data, ranked by probe accuracy on the first evaluation set.
/// Candidates: the given models and, optionally, the fused model (uniform average of their bodies, heads dropped).
/// </summary>
public static class BaseRanking
{
    public const string FusedName = "fused (average of bodies)";

    public static IReadOnlyList<ProbeResult> Rank(IReadOnlyList<string> candidates, bool includeFused, string featureOutput, Dataset train, IReadOnlyList<Dataset> evaluate,
        ProbeOptions? probe = null, ScoringOptions? scoring = null, int? classCount = null, IProgress<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        ArgumentNullException.ThrowIfNull(evaluate);
        if (evaluate.Count == 0)
        {
            throw new RecyclingException("ranking needs at least one evaluation data set");
        }

        var results = new List<ProbeResult>();
        foreach (var candidate in candidates)
        {
            progress?.Report($"probing {Path.GetFileName(candidate)}");
            using var scorer = OnnxScorer.Open(candidate, scoring, [featureOutput]);
            results.Add(ProbeEvaluation.Run(Path.GetFileNameWithoutExtension(candidate), d => scorer.Run(d, featureOutput), train, evaluate, probe, classCount));
        }

        if (includeFused)
        {
            progress?.Report("fusing bodies");
            results.Add(ProbeFused(candidates, featureOutput, train, evaluate, probe, scoring, classCount));
        }

        return [.. results.OrderByDescending(r => r.Evaluations[evaluate[0].Name].Accuracy)];
    }

    /// <summary>Fuses the bodies of <paramref name="models"/> (uniform average, heads of different shapes dropped) and probes the fused features.</summary>
    public static ProbeResult ProbeFused(IReadOnlyList<string> models, string featureOutput, Dataset train, IReadOnlyList<Dataset> evaluate,
        ProbeOptions? probe = null, ScoringOptions? scoring = null, int? classCount = null)
    {
        ArgumentNullException.ThrowIfNull(models);
        if (models.Count < 2)
        {
            throw new RecyclingException("fusing needs at least 2 models");
        }

        using var bodies = new ModelSet(models, null, HeadPolicy.Drop, featureOutput, scoring);
        var fused = bodies.Merge(new MergeOptions { Method = MergeMethod.Average });
        using var scorer = OnnxScorer.FromBytes(fused, FusedName, scoring);
        var output = scorer.OutputNames.Contains(featureOutput) ? featureOutput : scorer.OutputNames[0];
        return ProbeEvaluation.Run(FusedName, d => scorer.Run(d, output), train, evaluate, probe, classCount);
    }
}
