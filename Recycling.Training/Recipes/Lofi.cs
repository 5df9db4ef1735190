using System.Diagnostics.CodeAnalysis;
using Recycling.MLNet.Data;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Training.Recipes;

/// <summary>What <see cref="Lofi.Run"/> fine-tunes (one start, several seeds), on which data (<see cref="RecipeInputs"/>), and which soups it makes of the runs.</summary>
public sealed record LofiOptions : RecipeInputs
{
    public LofiOptions()
    {
    }

    /// <summary>The shared inputs with the start.</summary>
    [SetsRequiredMembers]
    public LofiOptions(RecipeInputs inputs, string start)
        : base(inputs)
    {
        Start = start;
    }

    /// <summary>The model every run starts from (a new linear-probe head is attached, the same for every run).</summary>
    public required string Start { get; init; }

    /// <summary>Write and score the uniform average of every run.</summary>
    public bool Uniform { get; init; } = true;

    /// <summary>Write and score the greedy soup of the runs under this rule (null: none).</summary>
    public GreedyRule? Greedy { get; init; } = GreedyRule.Strict;
}

/// <summary>A soup of a recipe's runs, written to <paramref name="Model"/>: its members (run labels) and its figures (accuracy 0..1 per data set, as the runs').</summary>
public sealed record LofiSoup(string Name, IReadOnlyList<string> Members, string Model, IReadOnlyDictionary<string, double> Figures);

public sealed record LofiResult(IReadOnlyList<RecipeRun> Runs, IReadOnlyList<LofiSoup> Soups);

/// <summary>
/// Lo-fi (Wortsman et al. 2022, "lo-fi: distributed fine-tuning without communication"): N runs fine-tuned
/// independently from the same start (same body, same linear-probe head; the seed changes the data order), never
/// communicating, averaged once at the end. The soups (uniform over every run; greedy by validation accuracy) are
/// written beside the runs and scored by ONNX Runtime like each individual run.
/// </summary>
public static class Lofi
{
    public const string UniformFile = "lofi-uniform.onnx";

    public const string GreedyFile = "lofi-greedy.onnx";

    public static LofiResult Run(LofiOptions options, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Seeds.Count < 2 || options.Seeds.Distinct().Count() != options.Seeds.Count)
        {
            throw new RecyclingException($"lo-fi averages at least two runs with different seeds (got {string.Join(", ", options.Seeds)})");
        }

        Directory.CreateDirectory(options.Folder);
        var specs = options.Seeds.Select(seed => TargetRuns.Spec($"lofi seed {seed}", options.Start, options.Train, options.Validation, options.Tests, options.Training, seed)).ToList();
        var records = new RunStore(options.Folder, options.Parallelism).RunAll(specs, TargetRuns.Execute, progress);
        var runs = records.Select((r, i) => new RecipeRun("lofi run", options.Start, options.Seeds[i], r)).ToList();
        var data = TargetRuns.DataRoles(options.Train, options.Validation, options.Tests);
        var paths = records.Select(r => r.Model).ToList();
        var labels = records.Select(r => r.Label).ToList();
        var soups = new List<LofiSoup>();
        if (options.Uniform)
        {
            soups.Add(Soup("uniform soup", Enumerable.Range(0, paths.Count).ToList(), paths, labels, Path.Combine(options.Folder, UniformFile), data));
            progress?.Invoke($"uniform soup of {MessageText.Count(paths.Count, "run")}: {soups[^1].Model}");
        }

        if (options.Greedy is { } rule)
        {
            GreedySoupResult greedy;
            using (var set = new ModelSet(paths, names: labels))
            {
                greedy = set.GreedySoup(DatasetLoader.Load(options.Validation), rule);
            }

            soups.Add(Soup($"greedy soup ({greedy.RuleSymbol})", greedy.AcceptedIndices, paths, labels, Path.Combine(options.Folder, GreedyFile), data));
            progress?.Invoke($"greedy soup ({greedy.RuleSymbol}): {string.Join(", ", greedy.Accepted)}");
        }

        return new LofiResult(runs, soups);
    }

    /// <summary>The report of a lo-fi run: each run (per seed) and each soup (of every seed's run).</summary>
    internal static RecipeReport Report(LofiOptions options, LofiResult result, double seconds)
    {
        var labels = RecipeReport.SplitLabels(options.Validation, options.Tests);
        var report = RecipeReport.FromRuns("lofi", $"Lo-fi: {MessageText.Count(result.Runs.Count, "run")} from {Path.GetFileName(options.Start)}, averaged once", result.Runs, options.Validation, options.Tests,
            notes: ["The runs start from one model with one linear-probe head and differ only in their seed (data order); the soups are weight averages written beside them. The greedy soup was selected on val: its val figure is in-sample, compare on the test sets."],
            seconds: seconds);
        return report with
        {
            Scores =
            [
                .. report.Scores.Select(s => s with { Method = "individual run" }),
                .. result.Soups.Select(s => new RecipeScore(s.Name, null, RecipeReport.Percent(s.Figures, labels)) { Detail = $"{s.Members.Count} of {result.Runs.Count} runs: {string.Join(", ", s.Members)}", Model = s.Model }),
            ],
        };
    }

    /// <summary>Writes the uniform average of <paramref name="members"/> (the others weighted 0) and scores the written file.</summary>
    private static LofiSoup Soup(string name, IReadOnlyList<int> members, IReadOnlyList<string> paths, IReadOnlyList<string> labels, string output, IReadOnlyDictionary<string, string> data)
    {
        var weights = paths.Select((_, i) => members.Contains(i) ? 1.0 : 0.0).ToList();
        ModelMerger.Merge(new MergeRequest { Inputs = paths, Output = output, Options = new MergeOptions { Method = MergeMethod.Average, Weights = weights } });
        return new LofiSoup(name, [.. members.Select(i => labels[i])], output, TargetRuns.Score(output, data));
    }
}
