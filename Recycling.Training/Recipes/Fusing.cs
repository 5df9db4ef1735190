using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Probing;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;

namespace Recycling.Training.Recipes;

/// <summary>What <see cref="Fusing.Run"/> fuses and fine-tunes, on which data (<see cref="RecipeInputs"/>), with which seeds.</summary>
/// <remarks>The base is the baseline, fine-tuned under the same budget; at least two auxiliaries are fused.</remarks>
public sealed record FusingOptions : AuxiliaryRecipeInputs
{
    public FusingOptions()
    {
    }

    /// <summary>The shared inputs with the base and the auxiliaries.</summary>
    [SetsRequiredMembers]
    public FusingOptions(RecipeInputs inputs, string @base, IReadOnlyList<string> auxiliaries)
        : base(inputs, @base, auxiliaries)
    {
    }

    /// <summary>Also fine-tune the auxiliary whose features give the best linear probe on the validation data (intertraining).</summary>
    public bool Intertraining { get; init; } = true;
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
    /// <summary>The report of a fusing run: one result per method and seed (its fine-tuning), the settings compared.</summary>
    internal static RecipeReport Report(FusingOptions options, FusingResult result, double seconds)
    {
        var t = options.Training;
        return RecipeReport.FromRuns("fuse", "Fusing against the base and intertraining", result.Runs, options.Validation, options.Tests,
            new Dictionary<string, string>
            {
                ["base"] = options.Base,
                ["auxiliaries"] = string.Join(", ", options.Auxiliaries.Select(Path.GetFileNameWithoutExtension)),
                ["fused"] = result.Fused,
                ["intertraining start"] = result.BestAuxiliary is null ? "(skipped)" : Path.GetFileNameWithoutExtension(result.BestAuxiliary) + " (best linear probe on val)",
                ["train"] = options.Train,
                ["seeds"] = string.Join(", ", options.Seeds),
                ["fine-tuning"] = string.Create(CultureInfo.InvariantCulture, $"{t.Optimizer}, lr {t.LearningRate:G}, {t.Epochs} epochs, batch {t.BatchSize}, new head at '{t.FeatureAt ?? "features"}' initialised by a linear probe (LP-FT)"),
            },
            ["Each method's score under a seed is its one fine-tuning with that seed (data order); the methods differ only in the body they start from. Intertraining starts from the auxiliary whose features give the best linear probe on val."],
            seconds);
    }
}
