using System.Diagnostics;
using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Diagnostics;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Probing;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;

namespace Recycling.MLNet.Study;

/// <summary>
/// One result of the study, in-domain val and OOD test accuracy (percent), beside the PyTorch references of zoo.json:
/// the same computation on the exported (ONNX) weights, and on the torch state_dicts (BatchNorm not folded).
/// </summary>
public sealed record StudyRow(string Method, string Detail, double Val, double Ood, double? ReferenceVal = null, double? ReferenceOod = null, double? StateDictVal = null, double? StateDictOod = null)
{
    /// <summary>Largest gap to the ONNX-weights reference, in points; null without a reference.</summary>
    public double? ReferenceGap => ReferenceVal is null && ReferenceOod is null ? null
        : Math.Max(ReferenceVal is { } v ? Math.Abs(Val - v) : 0, ReferenceOod is { } o ? Math.Abs(Ood - o) : 0);
}

/// <summary>A candidate base ranked by the accuracy of a linear probe on its frozen features.</summary>
public sealed record RankEntry(string Model, double ProbeVal, double ProbeOod, double? ReferenceVal, double? ReferenceOod);

/// <summary>Everything the study found for one architecture.</summary>
public sealed record ArchitectureStudy(
    string Architecture,
    IReadOnlyList<StudyRow> Rows,
    IReadOnlyList<(string Name, GreedySoupResult Soup)> GreedySoups,
    IReadOnlyList<IngredientCurve> IngredientCurves,
    IReadOnlyList<InterpolationCurve> Interpolations,
    DiversityMatrix Diversity,
    IReadOnlyList<RankEntry> Ranking,
    IReadOnlyList<string> Notes,
    double Seconds);

public sealed record StudyOptions
{
    public ScoringOptions Scoring { get; init; } = new();

    public int InterpolationPoints { get; init; } = 11;

    /// <summary>λ tried on val for task arithmetic and DARE (θ0 + λ Σ τᵢ over the targets).</summary>
    public IReadOnlyList<double> TaskArithmeticLambdas { get; init; } = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5];

    /// <summary>λ tried on val for TIES: the paper's 0.8 to 2.5, and two values below it (on the zoo the best λ sat at 0.8).</summary>
    public IReadOnlyList<double> TiesLambdas { get; init; } = [0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 2.5];

    /// <summary>λ tried on val for DARE + task arithmetic: the rescaled τ̂ are 1/(1−p) = 10 times larger, so λ is smaller.</summary>
    public IReadOnlyList<double> DareLambdas { get; init; } = [0.005, 0.01, 0.02, 0.05];

    public ProbeOptions Probe { get; init; } = new();
}

/// <summary>
/// The recycling study of the seed papers on a model zoo, per architecture: individual fine-tunings, ensembles,
/// uniform and greedy soups (DiWA: targets from the base; ratatouille: all targets), fusing + linear probe versus
/// base + linear probe (and the ranking of candidate bases), task arithmetic / TIES / DARE / Fisher on the targets,
/// interpolation curves and prediction diversity. Every candidate is merged in memory and run through ONNX Runtime.
/// </summary>
public static class RecyclingStudy
{
    /// <summary>The study rows the soup plots draw as reference lines.</summary>
    internal const string BestIndividual = "best individual (by val)";
    internal const string EnsembleAll = "ensemble all (mean probabilities)";
    private const string Val = "val";
    private const string Ood = "ood_test";
    private const string ProbeTrain = "probe_train";

    public static ArchitectureStudy Run(ModelZoo zoo, string architecture, StudyOptions? options = null, IProgress<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(zoo);
        options ??= new StudyOptions();
        var clock = Stopwatch.StartNew();
        var baseModel = zoo.Select(architecture, "base").SingleOrDefault()
            ?? throw new RecyclingException($"{zoo.FilePath}: architecture '{architecture}' has no single base model");
        var targets = zoo.Select(architecture, "target");
        var auxiliaries = zoo.Select(architecture, "auxiliary");
        if (targets.Count == 0)
        {
            throw new RecyclingException($"{zoo.FilePath}: architecture '{architecture}' has no target fine-tunings");
        }

        var val = zoo.Split(Val);
        var ood = zoo.Split(Ood);
        var probeTrain = zoo.Split(ProbeTrain);
        var rows = new List<StudyRow>();
        var notes = new List<string>();
        double? Ref(params string[] keys) => zoo.Reference([architecture, .. keys]);
        var phases = new List<string>();
        var phaseClock = Stopwatch.StartNew();
        void Phase(string name)
        {
            phases.Add(string.Create(CultureInfo.InvariantCulture, $"{name} {phaseClock.Elapsed.TotalSeconds:F1} s"));
            phaseClock.Restart();
        }

        progress?.Report($"{architecture}: aligning {targets.Count} target fine-tunings");
        using var set = new ModelSet([.. targets.Select(t => t.Path)], baseModel.Path, HeadPolicy.Error, "logits", options.Scoring,
            targets.All(t => t.FisherPath is not null) ? [.. targets.Select(t => t.FisherPath!)] : null, [.. targets.Select(t => t.Name)]);
        var all = Enumerable.Range(0, targets.Count).ToList();
        var diwa = all.Where(i => targets[i].Init == baseModel.Name).ToList();
        if (diwa.Count == 0)
        {
            throw new RecyclingException($"{zoo.FilePath}: no target of '{architecture}' was fine-tuned from the base {baseModel.Name} (init), so there is no DiWA soup to study");
        }

        // Individual models.
        progress?.Report($"{architecture}: evaluating {targets.Count} fine-tunings");
        var individual = all.Select(i => (val: set.Evaluate(i, val), ood: set.Evaluate(i, ood))).ToList();
        int best = all.OrderByDescending(i => individual[i].val.Accuracy).ThenBy(i => i).First();
        rows.Add(new StudyRow(BestIndividual, targets[best].Name, individual[best].val.Accuracy, individual[best].ood.Accuracy,
            Ref("individual", "best_by_val", Val), Ref("individual", "best_by_val", Ood)));
        rows.Add(new StudyRow("mean individual", MessageText.Count(targets.Count, "target"), individual.Average(m => m.val.Accuracy), individual.Average(m => m.ood.Accuracy),
            Ref("individual", "mean", Val), Ref("individual", "mean", Ood)));
        var worstGap = all.Select(i => (name: targets[i].Name, gap: Math.Max(Math.Abs(individual[i].val.Accuracy - targets[i].ValAccuracy), Math.Abs(individual[i].ood.Accuracy - targets[i].OodAccuracy))))
            .MaxBy(x => x.gap);
        notes.Add(worstGap.gap < 0.005
            ? $"individual accuracies through ONNX Runtime equal those {zoo.AccuracySource} recorded (zoo.json) for every target"
            : string.Create(CultureInfo.InvariantCulture, $"individual accuracies through ONNX Runtime vs {zoo.AccuracySource} (zoo.json): largest gap {worstGap.gap:F2} points ({worstGap.name})"));

        Phase("individual models");
        // Ensembles.
        rows.Add(Row("ensemble DiWA (mean probabilities)", $"{MessageText.Count(diwa.Count, "target")} from the base", set.EvaluateEnsemble(diwa, val), set.EvaluateEnsemble(diwa, ood),
            Ref("ensemble_diwa", Val), Ref("ensemble_diwa", Ood)));
        rows.Add(Row(EnsembleAll, MessageText.Count(targets.Count, "target"), set.EvaluateEnsemble(all, val), set.EvaluateEnsemble(all, ood),
            Ref("ensemble_all", Val), Ref("ensemble_all", Ood)));

        Phase("ensembles");
        // Soups.
        progress?.Report($"{architecture}: uniform and greedy soups");
        rows.Add(Row("uniform soup (DiWA)", $"{MessageText.Count(diwa.Count, "target")} from the base", set.EvaluateUniform(diwa, val), set.EvaluateUniform(diwa, ood),
            Ref("onnx", "uniform_soup_diwa", Val), Ref("onnx", "uniform_soup_diwa", Ood), Ref("state_dict", "uniform_soup_diwa", Val), Ref("state_dict", "uniform_soup_diwa", Ood)));
        var greedy = new List<(string Name, GreedySoupResult Soup)>();
        foreach (var (label, key, members) in new[] { ("greedy soup (DiWA)", "greedy_soup_diwa", diwa), ("ratatouille greedy", "ratatouille_greedy", all) })
        {
            foreach (var rule in new[] { GreedyRule.Strict, GreedyRule.AllowTies })
            {
                var soup = set.GreedySoup(val, rule, members);
                greedy.Add(($"{label} {soup.RuleSymbol}", soup));
                var suffix = rule == GreedyRule.Strict ? "_strict" : "_ge";
                var accepted = soup.AcceptedIndices;
                rows.Add(Row($"{label} {soup.RuleSymbol}", $"{accepted.Count} of {members.Count} accepted", set.EvaluateUniform(accepted, val), set.EvaluateUniform(accepted, ood),
                    Ref("onnx", key + suffix, Val), Ref("onnx", key + suffix, Ood), Ref("state_dict", key + suffix, Val), Ref("state_dict", key + suffix, Ood)));
                var reference = zoo.ReferenceNames(architecture, "onnx", key + suffix, "accepted");
                if (reference.Count > 0 && !reference.Order().SequenceEqual(soup.Accepted.Order()))
                {
                    notes.Add($"{label} {soup.RuleSymbol}: accepted set differs from PyTorch's ({string.Join(", ", soup.Accepted)} here; {string.Join(", ", reference)} there): candidates within a few images of each other flip on float rounding");
                }
            }

            if (key == "greedy_soup_diwa")
            {
                rows.Add(Row("ratatouille uniform", MessageText.Count(targets.Count, "target"), set.EvaluateUniform(all, val), set.EvaluateUniform(all, ood),
                    Ref("onnx", "ratatouille_uniform", Val), Ref("onnx", "ratatouille_uniform", Ood), Ref("state_dict", "ratatouille_uniform", Val), Ref("state_dict", "ratatouille_uniform", Ood)));
            }
        }

        Phase("greedy and uniform soups");
        // Soup accuracy versus number of ingredients (uniform soups of the top-k by val).
        progress?.Report($"{architecture}: soups by number of ingredients");
        var curves = new List<IngredientCurve>();
        foreach (var (label, members) in new[] { ("DiWA", diwa), ("all targets", all) })
        {
            var order = members.OrderByDescending(i => individual[i].val.Accuracy).ThenBy(i => i).ToList();
            var soups = Enumerable.Range(1, order.Count).Select(k => order.Take(k).ToList()).ToList();
            curves.Add(new IngredientCurve(label, [.. soups.Select(s => set.EvaluateUniform(s, val).Accuracy)]) { Split = "val" });
            curves.Add(new IngredientCurve(label, [.. soups.Select(s => set.EvaluateUniform(s, ood).Accuracy)]) { Split = "OOD test" });
        }

        Phase("soups by ingredient count");
        // Task-vector merges of all targets, λ chosen on val.
        progress?.Report($"{architecture}: task arithmetic, TIES, DARE, Fisher");
        rows.Add(Tuned(set, "task arithmetic", options.TaskArithmeticLambdas, l => new MergeOptions { Method = MergeMethod.TaskArithmetic, Lambda = l }, val, ood));
        rows.Add(Tuned(set, "TIES (top 20%, global trim)", options.TiesLambdas, l => new MergeOptions { Method = MergeMethod.Ties, Lambda = l, Density = 0.2 }, val, ood));
        rows.Add(Tuned(set, "DARE (p 0.9) + task arithmetic", options.DareLambdas, l => new MergeOptions { Method = MergeMethod.Dare, DropRate = 0.9, Lambda = l, Seed = 1 }, val, ood));
        if (targets.All(t => t.FisherPath is not null))
        {
            var fisher = new MergeOptions { Method = MergeMethod.Fisher };
            try
            {
                rows.Add(Row("Fisher merge", "all targets, zoo Fisher files", set.EvaluateMerge(fisher, val), set.EvaluateMerge(fisher, ood)));
            }
            catch (RecyclingException e)
            {
                // A degenerate Fisher file (e.g. all zeros from a saturated softmax) loses that row only, not the study.
                notes.Add($"Fisher merge skipped: {e.Message}");
            }
        }
        else
        {
            notes.Add("Fisher merge skipped: the zoo has no Fisher file for every target");
        }

        Phase("task arithmetic / TIES / DARE / Fisher");
        // Fusing + LP versus base + LP, and the ranking of candidate bases by probe accuracy.
        progress?.Report($"{architecture}: fusing and linear probes");
        var probeOptions = options.Probe with { L2 = zoo.ProbeL2 ?? options.Probe.L2 };
        var targetClasses = targets.Max(t => t.ClassCount);
        var candidates = new[] { baseModel }.Concat(auxiliaries).ToList();
        // One candidate at a time, named as the zoo names it (a foundation zoo's files are all runs/KEY/model.onnx).
        var probes = candidates.Select(c => BaseRanking.Rank([c.Path], includeFused: false, zoo.FeatureOutput, probeTrain, [val, ood], probeOptions, options.Scoring, targetClasses)[0] with { Model = c.Name }).ToList();
        var ranking = probes.Select(p => new RankEntry(p.Model, p.Evaluations[Val].Accuracy, p.Evaluations[Ood].Accuracy,
            Ref("linear_probe", p.Model, Val), Ref("linear_probe", p.Model, Ood))).ToList();
        var b = ranking.Single(r => r.Model == baseModel.Name);
        if (auxiliaries.Count >= 2)
        {
            var fused = BaseRanking.ProbeFused([.. auxiliaries.Select(a => a.Path)], zoo.FeatureOutput, probeTrain, [val, ood], probeOptions, options.Scoring, targetClasses);
            var f = new RankEntry(fused.Model, fused.Evaluations[Val].Accuracy, fused.Evaluations[Ood].Accuracy, Ref("onnx", "fusing_lp", Val), Ref("onnx", "fusing_lp", Ood));
            ranking.Add(f);
            rows.Add(new StudyRow("fusing + LP", $"{MessageText.Count(auxiliaries.Count, "auxiliary body", "auxiliary bodies")} averaged", f.ProbeVal, f.ProbeOod, f.ReferenceVal, f.ReferenceOod,
                Ref("state_dict", "fusing_lp", Val), Ref("state_dict", "fusing_lp", Ood)));
        }

        rows.Add(new StudyRow("base + LP", baseModel.Name, b.ProbeVal, b.ProbeOod, Ref("base_lp", Val), Ref("base_lp", Ood)));
        ranking = [.. ranking.OrderByDescending(r => r.ProbeVal)];

        Phase("linear probes and fusing");
        // Interpolation curves and diversity.
        progress?.Report($"{architecture}: interpolation curves and diversity");
        var interpolations = new List<InterpolationCurve>();
        var byVal = all.OrderByDescending(i => individual[i].val.Accuracy).ThenBy(i => i).ToList();
        var diwaByVal = byVal.Where(diwa.Contains).ToList();
        var ratByVal = byVal.Where(i => !diwa.Contains(i)).ToList();
        if (diwaByVal.Count >= 2)
        {
            interpolations.Add(InterpolationCurve.Compute(set, diwaByVal[0], diwaByVal[1], val, options.InterpolationPoints));
        }

        if (diwaByVal.Count >= 1 && ratByVal.Count >= 1)
        {
            interpolations.Add(InterpolationCurve.Compute(set, diwaByVal[0], ratByVal[0], val, options.InterpolationPoints));
        }

        Phase("interpolation");
        notes.Add("time: " + string.Join(", ", phases));
        var prefix = $"{architecture}_target_";
        var diversity = DiversityMatrix.Compute([.. targets.Select(t => t.Name.StartsWith(prefix, StringComparison.Ordinal) ? t.Name[prefix.Length..] : t.Name)], [.. all.Select(i => individual[i].ood.Predictions)], ood.Labels);
        return new ArchitectureStudy(architecture, rows, greedy, curves, interpolations, diversity, ranking, notes, clock.Elapsed.TotalSeconds);
    }

    private static StudyRow Row(string method, string detail, ClassificationMetrics val, ClassificationMetrics ood, double? refVal = null, double? refOod = null, double? sdVal = null, double? sdOod = null) =>
        new(method, detail, val.Accuracy, ood.Accuracy, refVal, refOod, sdVal, sdOod);

    private static StudyRow Tuned(ModelSet set, string method, IReadOnlyList<double> lambdas, Func<double, MergeOptions> options, Dataset val, Dataset ood)
    {
        var scored = lambdas.Select(l => (lambda: l, metrics: set.EvaluateMerge(options(l), val))).ToList();
        var best = scored.OrderByDescending(s => s.metrics.Accuracy).ThenBy(s => s.lambda).First();
        var detail = string.Create(CultureInfo.InvariantCulture, $"λ {best.lambda} (best on val of {string.Join(", ", lambdas)})");
        return Row(method, detail, best.metrics, set.EvaluateMerge(options(best.lambda), ood));
    }
}
