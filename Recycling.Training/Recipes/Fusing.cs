using Recycling.MLNet.Data;
using Recycling.MLNet.Probing;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;

namespace Recycling.Training.Recipes;

/// <summary>What <see cref="Fusing.Run"/> fuses and fine-tunes, on which data, with which seeds.</summary>
public sealed record FusingOptions
{
    /// <summary>The pretrained base (the baseline fine-tuned under the same budget).</summary>
    public required string Base { get; init; }

    /// <summary>Fine-tunings of the base on other tasks (any heads); at least two.</summary>
    public required IReadOnlyList<string> Auxiliaries { get; init; }

    /// <summary>Target training data (also the linear-probe ranking's training data).</summary>
    public required string Train { get; init; }

    /// <summary>Validation data (the ranking's score; reported).</summary>
    public required string Validation { get; init; }

    /// <summary>More data reported (e.g. OOD).</summary>
    public IReadOnlyList<string> Tests { get; init; } = [];

    /// <summary>The recipe folder: fused.onnx and runs/KEY/ (content-addressed, resumable).</summary>
    public required string Folder { get; init; }

    public TargetTraining Training { get; init; } = new();

    public IReadOnlyList<int> Seeds { get; init; } = [0, 1, 2];

    /// <summary>Also fine-tune the auxiliary whose features give the best linear probe on the validation data (intertraining).</summary>
    public bool Intertraining { get; init; } = true;

    /// <summary>Concurrent fine-tunings (null: <see cref="RunStore.DefaultParallelism"/>).</summary>
    public int? Parallelism { get; init; }
}

/// <summary>One fine-tuned start point under one seed.</summary>
public sealed record RecipeRun(string Method, string Start, int Seed, RunRecord Run);

public sealed record FusingResult(string Fused, string? BestAuxiliary, IReadOnlyList<RecipeRun> Runs);

/// <summary>
/// Fusing (Choshen et al. 2022): the auxiliary models' bodies are averaged (heads dropped), and the fused model is
/// fine-tuned on the target with a new head; the baselines are the base fine-tuned under the same budget and seeds,
/// and (intertraining) the single auxiliary ranked best by a linear probe on its features, fine-tuned the same way.
/// Every fine-tuning starts with a linear-probe head (LP-FT), so the methods differ only in the body they start from.
/// </summary>
public static class Fusing
{
    public const string FusedFile = "fused.onnx";

    public static FusingResult Run(FusingOptions options, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Auxiliaries.Count < 2 || options.Seeds.Count == 0)
        {
            throw new RecyclingException($"fusing needs at least two auxiliary models and one seed (got {options.Auxiliaries.Count} and {options.Seeds.Count})");
        }

        Directory.CreateDirectory(options.Folder);
        var fused = Path.Combine(Path.GetFullPath(options.Folder), FusedFile);
        ModelMerger.Merge(new MergeRequest { Inputs = options.Auxiliaries, Output = fused, Heads = HeadPolicy.Drop, Options = new MergeOptions { Method = MergeMethod.Average } });
        progress?.Invoke($"fused the bodies of {options.Auxiliaries.Count} auxiliary models: {fused}");

        string? best = null;
        if (options.Intertraining)
        {
            var featureAt = options.Training.FeatureAt ?? "features";
            var ranking = BaseRanking.Rank(options.Auxiliaries, includeFused: false, featureAt, DatasetLoader.Load(options.Train), [DatasetLoader.Load(options.Validation)]);
            best = options.Auxiliaries.First(a => Path.GetFileNameWithoutExtension(a) == ranking[0].Model);
            progress?.Invoke($"intertraining from {Path.GetFileName(best)} (best linear probe on {Path.GetFileName(options.Validation)})");
        }

        var starts = new List<(string Method, string Model)> { ("fused", fused), ("base", options.Base) };
        if (best is not null)
        {
            starts.Add(("intertraining", best));
        }

        var plan = starts.SelectMany(s => options.Seeds.Select(seed => (s.Method, s.Model, Seed: seed))).ToList();
        var specs = plan.Select(p => TargetRuns.Spec($"{p.Method} seed {p.Seed}", p.Model, options.Train, options.Validation, options.Tests, options.Training, p.Seed)).ToList();
        var store = new RunStore(options.Folder, options.Parallelism);
        var records = store.RunAll(specs, TargetRuns.Execute, progress);
        return new FusingResult(fused, best, [.. plan.Select((p, i) => new RecipeRun(p.Method, p.Model, p.Seed, records[i]))]);
    }
}
