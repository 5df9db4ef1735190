using System.Diagnostics;
using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Probing;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;

namespace Recycling.Training.Recipes;

/// <summary>One contributor of ColD fusion: its own task data, fine-tuned every round on the current shared model.</summary>
public sealed record ColdFusionContributor
{
    /// <summary>A short name for reports (e.g. the task's name).</summary>
    public required string Name { get; init; }

    /// <summary>The contributor's training data (its own label space; its head is its own).</summary>
    public required string Train { get; init; }

    /// <summary>The contributor's validation data, scored after each of its fine-tunings (optional).</summary>
    public string? Validation { get; init; }

    /// <summary>This contributor's fine-tuning (null: <see cref="ColdFusionOptions.Training"/>).</summary>
    public TargetTraining? Training { get; init; }
}

/// <summary>What <see cref="ColdFusion.Run"/> runs: the base, the contributors, the rounds, the held-out target.</summary>
public sealed record ColdFusionOptions
{
    /// <summary>The pretrained model the first round starts from (round 0 of the report).</summary>
    public required string Base { get; init; }

    /// <summary>At least two contributors.</summary>
    public required IReadOnlyList<ColdFusionContributor> Contributors { get; init; }

    /// <summary>Rounds of fine-tune-then-average (at least 1).</summary>
    public int Rounds { get; init; } = 3;

    /// <summary>The held-out target's training data (the probe's, and the optional fine-tuning's).</summary>
    public required string TargetTrain { get; init; }

    /// <summary>The held-out target's validation data (reported).</summary>
    public required string TargetValidation { get; init; }

    /// <summary>More target data reported (e.g. OOD).</summary>
    public IReadOnlyList<string> TargetTests { get; init; } = [];

    /// <summary>The recipe folder: runs/KEY/ (content-addressed, resumable) and the report.</summary>
    public required string Folder { get; init; }

    /// <summary>The contributors' fine-tuning in every round (each may override it, but not its <see cref="TargetTraining.Device"/>: this one's is every run's).</summary>
    public TargetTraining Training { get; init; } = new() { Epochs = 1 };

    /// <summary>Also fine-tune each round's shared model on the target (LP-FT) with this budget; null: the probe only.</summary>
    public TargetTraining? TargetFinetune { get; init; }

    /// <summary>Independent repetitions of the whole recipe (the contributors' data orders differ).</summary>
    public IReadOnlyList<int> Seeds { get; init; } = [0];

    /// <summary>Concurrent fine-tunings (null: <see cref="RunStore.DefaultParallelism"/>).</summary>
    public int? Parallelism { get; init; }
}

/// <summary>
/// The shared model after round <paramref name="Round"/> (0: the base) under one seed; <paramref name="Probe"/>: the
/// target accuracies (0..1) of a linear probe on its features; <paramref name="Finetune"/>: of its target fine-tuning
/// (null when not asked); <paramref name="Contributions"/>: the round's contributor runs (empty for round 0).
/// </summary>
public sealed record ColdFusionRound(int Seed, int Round, string Model, IReadOnlyDictionary<string, double> Probe, RunRecord? Finetune, IReadOnlyList<RunRecord> Contributions);

/// <summary>The shared model of every seed and round with its scores, and the report (written to the recipe folder).</summary>
public sealed record ColdFusionResult(IReadOnlyList<ColdFusionRound> Rounds, RecipeReport Report);

/// <summary>
/// ColD fusion (Don-Yehiya et al. 2022): in every round each contributor fine-tunes the current shared model on its
/// own task with its own head, and the repository averages the returned bodies (heads dropped) into the next shared
/// model. After each round the shared model is scored on a held-out target by a linear probe on its features (and
/// optionally by fine-tuning). Heads are not carried from round to round: the repository distributes bodies only, so
/// each contributor starts every round with a head fitted by a linear probe on its own data over the new body
/// (LP-FT), the same start every target run of the recipes gets. Every fine-tuning and every average is a
/// content-addressed run (<see cref="RunStore"/>): a recipe stopped midway resumes where it stopped.
/// </summary>
public static class ColdFusion
{
    internal const string AverageKind = "cold-fusion-average";

    public static ColdFusionResult Run(ColdFusionOptions options, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var clock = Stopwatch.StartNew();
        Validate(options);
        Directory.CreateDirectory(options.Folder);
        var store = new RunStore(options.Folder, options.Parallelism);
        var seeds = options.Seeds;
        var shared = seeds.ToDictionary(s => s, _ => new List<string> { options.Base });
        var contributions = seeds.ToDictionary(s => s, _ => new List<IReadOnlyList<RunRecord>> { Array.Empty<RunRecord>() });
        for (var round = 1; round <= options.Rounds; round++)
        {
            var plan = seeds.SelectMany(seed => options.Contributors.Select((c, i) => (Seed: seed, Index: i, Contributor: c))).ToList();
            var specs = plan.Select(p => ContributionSpec(options, p.Contributor, p.Index, shared[p.Seed][round - 1], round, p.Seed)).ToList();
            progress?.Invoke($"round {round}: {options.Contributors.Count} contributors × {seeds.Count} seed(s)");
            var runs = store.RunAll(specs, TargetRuns.Execute, progress);
            var averages = seeds.Select(seed => AverageSpec(seed, round, [.. plan.Select((p, i) => (p, i)).Where(x => x.p.Seed == seed).Select(x => runs[x.i].Model)])).ToList();
            var merged = store.RunAll(averages, Average, progress);
            for (var k = 0; k < seeds.Count; k++)
            {
                shared[seeds[k]].Add(merged[k].Model);
                contributions[seeds[k]].Add([.. plan.Select((p, i) => (p, i)).Where(x => x.p.Seed == seeds[k]).Select(x => runs[x.i])]);
            }
        }

        var probes = ProbeAll(options, shared, progress);
        IReadOnlyList<RunRecord>? finetunes = null;
        var cells = seeds.SelectMany(seed => Enumerable.Range(0, options.Rounds + 1).Select(round => (Seed: seed, Round: round))).ToList();
        if (options.TargetFinetune is { } budget)
        {
            var specs = cells.Select(c => TargetRuns.Spec($"target fine-tuning, seed {c.Seed} round {c.Round}", shared[c.Seed][c.Round], options.TargetTrain, options.TargetValidation, options.TargetTests, budget with { Device = options.Training.Device }, c.Seed)).ToList();
            finetunes = store.RunAll(specs, TargetRuns.Execute, progress);
        }

        var rounds = cells.Select((c, i) => new ColdFusionRound(c.Seed, c.Round, shared[c.Seed][c.Round], probes[shared[c.Seed][c.Round]], finetunes?[i], contributions[c.Seed][c.Round])).ToList();
        var report = ColdFusionReport.Build(options, rounds, clock.Elapsed.TotalSeconds);
        report.Write(options.Folder);
        progress?.Invoke($"report: {Path.Combine(Path.GetFullPath(options.Folder), "README.md")}");
        return new ColdFusionResult(rounds, report);
    }

    private static void Validate(ColdFusionOptions options)
    {
        if (options.Contributors.Count < 2)
        {
            throw new RecyclingException($"ColD fusion needs at least two contributors (got {options.Contributors.Count})");
        }

        if (options.Rounds < 1 || options.Seeds.Count == 0)
        {
            throw new RecyclingException($"ColD fusion needs at least one round and one seed (got {options.Rounds} and {options.Seeds.Count})");
        }

        var duplicate = options.Contributors.GroupBy(c => c.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new RecyclingException($"ColD fusion: contributor name '{MessageText.OneLine(duplicate.Key)}' is given twice");
        }

        if (options.Seeds.Distinct().Count() != options.Seeds.Count)
        {
            throw new RecyclingException("ColD fusion: a seed is given twice");
        }

        if (!File.Exists(options.Base))
        {
            throw new RecyclingException($"{MessageText.Path(options.Base)}: no such file (the base model)");
        }

        // Every data set is read once now, so a wrong path or a bad file stops the recipe before its first run.
        foreach (var data in options.Contributors.SelectMany(c => new[] { c.Train, c.Validation }).Concat([options.TargetTrain, options.TargetValidation]).Concat(options.TargetTests).OfType<string>().Distinct())
        {
            if (DatasetLoader.Load(data).Count == 0)
            {
                throw new RecyclingException($"{MessageText.Path(data)}: no samples");
            }
        }
    }

    /// <summary>
    /// A contributor's fine-tuning of the shared model in one round: LP-FT on its data. The data order's seed differs
    /// per seed, round and contributor, so rounds do not replay one order.
    /// </summary>
    private static RunSpec ContributionSpec(ColdFusionOptions options, ColdFusionContributor contributor, int index, string model, int round, int seed)
    {
        var runSeed = unchecked((seed * 1_000_003) + (round * 1_009) + index);
        var spec = TargetRuns.Spec($"seed {seed} round {round} {contributor.Name}", model, contributor.Train, contributor.Validation ?? contributor.Train, [], (contributor.Training ?? options.Training) with { Device = options.Training.Device }, runSeed);
        // Without its own validation data a contributor's run has no score (its training data are not re-scored).
        return contributor.Validation is not null ? spec : spec with { Data = spec.Data.Where(d => d.Key != "val").ToDictionary(d => d.Key, d => d.Value, StringComparer.Ordinal) };
    }

    private static RunSpec AverageSpec(int seed, int round, IReadOnlyList<string> bodies) => new()
    {
        Kind = AverageKind,
        Label = $"seed {seed} round {round} average of {MessageText.Count(bodies.Count, "body", "bodies")}",
        Models = bodies.Select((b, i) => (b, i)).ToDictionary(x => x.i.ToString("D4", CultureInfo.InvariantCulture), x => x.b, StringComparer.Ordinal),
        Parameters = new Dictionary<string, string> { ["method"] = "average", ["heads"] = "drop" },
    };

    /// <summary>The uniform average of the contributors' models, heads dropped (the repository's fusion step).</summary>
    private static IReadOnlyDictionary<string, double> Average(RunSpec spec, string output)
    {
        var inputs = spec.Models.OrderBy(m => m.Key, StringComparer.Ordinal).Select(m => m.Value).ToList();
        ModelMerger.Merge(new MergeRequest { Inputs = inputs, Output = output, Heads = HeadPolicy.Drop, Options = new MergeOptions { Method = MergeMethod.Average } });
        return new Dictionary<string, double>(StringComparer.Ordinal);
    }

    /// <summary>Target accuracies (0..1) of a linear probe on each distinct shared model's features, keyed by model path.</summary>
    private static Dictionary<string, IReadOnlyDictionary<string, double>> ProbeAll(ColdFusionOptions options, Dictionary<int, List<string>> shared, Action<string>? progress)
    {
        var at = options.Training.FeatureAt;
        var train = DatasetLoader.Load(options.TargetTrain);
        var evaluate = new List<(string Key, Dataset Data)> { ("val", DatasetLoader.Load(options.TargetValidation)) };
        evaluate.AddRange(options.TargetTests.Select((t, i) => ($"test{i} ({Path.GetFileName(t)})", DatasetLoader.Load(t))));
        var classes = Math.Max(train.ClassCount, evaluate.Max(e => e.Data.ClassCount));
        var results = new Dictionary<string, IReadOnlyDictionary<string, double>>(StringComparer.Ordinal);
        foreach (var model in shared.Values.SelectMany(m => m).Distinct(StringComparer.Ordinal))
        {
            using var scorer = OnnxScorer.Open(model, null, at is null ? null : [at]);
            // As a head's default cut: the output "features", else the only output.
            var featureAt = at ?? (scorer.OutputNames.Contains("features") || scorer.OutputNames.Count != 1 ? "features" : scorer.OutputNames[0]);
            var probe = LinearProbe.Train(scorer.Run(train, featureAt), train.Labels, classes);
            results[model] = evaluate.ToDictionary(e => e.Key, e => ClassificationMetrics.FromProbabilities(probe.Predict(scorer.Run(e.Data, featureAt)), e.Data.Labels).Accuracy / 100, StringComparer.Ordinal);
            progress?.Invoke(string.Create(CultureInfo.InvariantCulture, $"target probe of {Describe(shared, model)}: {string.Join(", ", results[model].Select(r => $"{r.Key} {r.Value * 100:F2}%"))}"));
        }

        return results;
    }

    /// <summary>"the base", or the seeds and round whose shared model <paramref name="model"/> is.</summary>
    private static string Describe(Dictionary<int, List<string>> shared, string model)
    {
        var uses = shared.SelectMany(p => p.Value.Select((m, round) => (Seed: p.Key, Round: round, Model: m))).Where(u => u.Model == model).ToList();
        return uses.All(u => u.Round == 0) ? "the base" : string.Join(", ", uses.Select(u => $"seed {u.Seed} round {u.Round}"));
    }
}
