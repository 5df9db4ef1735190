using System.CommandLine;
using System.Diagnostics;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Training.Recipes;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle recipe run FILE.yml`: a recipe file (docs/recipes.md) run into a report folder; `recipe check` only reads it.</summary>
internal static class RecipeCommand
{
    internal static Command Create()
    {
        var command = new Command("recipe", "Recipes from a YAML file (fuse, ratatouille, cold_fusion, lofi, learned_soup, merge): run one, or check one without running it.");
        command.Subcommands.Add(CreateRun());
        command.Subcommands.Add(CreateCheck());
        return command;
    }

    private static Command CreateRun()
    {
        var file = FileArgument();
        var output = new Option<string?>("--output", "-o") { Description = "The recipe folder: runs/KEY/ (reused when run again), the models written, README.md, results.csv/.json, PNG (default: the file's name without extension, in the current folder)." };
        var parallel = new Option<int?>("--parallel") { Description = "Fine-tunings run at once (overrides the file's parallel:; default one per core, bounded by memory)." };
        var command = new Command("run", "Run a recipe file: every fine-tuning content-addressed and resumable, every result scored by ONNX Runtime, a report folder written.")
        {
            Arguments = { file },
            Options = { output, parallel },
        };
        command.SetAction(parseResult =>
        {
            var path = parseResult.GetValue(file)!;
            var recipe = RecipeFile.Load(path);
            var stderr = parseResult.InvocationConfiguration.Error;
            foreach (var note in recipe.Notes)
            {
                stderr.WriteLine($"note: {note}");
            }

            var folder = OutputFolder(parseResult.GetValue(output) ?? Path.GetFileNameWithoutExtension(path), "--output");
            var stdout = parseResult.InvocationConfiguration.Output;
            var outcome = Run(recipe, Path.GetFileNameWithoutExtension(path), folder, parseResult.GetValue(parallel), stdout.WriteLine);
            if (!outcome.WroteReport)
            {
                RecipeFileReport.Write(folder, $"Recipe {MessageText.OneLine(Path.GetFileName(path))}", [outcome], [string.Join("\n", recipe.Plan().Select(l => $"- {l}"))]);
            }

            stdout.WriteLine(RecipeFileReport.Markdown(outcome));
            stdout.WriteLine($"report: {Path.Combine(folder, "README.md")} ({outcome.Seconds:F1} s)");
            return 0;
        });
        return command;
    }

    private static Command CreateCheck()
    {
        var file = FileArgument();
        var command = new Command("check", "Read a recipe file and print what it would run (every path, key and value checked; nothing is run or written).")
        {
            Arguments = { file },
        };
        command.SetAction(parseResult =>
        {
            var recipe = RecipeFile.Load(parseResult.GetValue(file)!);
            foreach (var note in recipe.Notes)
            {
                parseResult.InvocationConfiguration.Error.WriteLine($"note: {note}");
            }

            foreach (var line in recipe.Plan())
            {
                parseResult.InvocationConfiguration.Output.WriteLine(line);
            }

            return 0;
        });
        return command;
    }

    private static Argument<string> FileArgument() => new("file") { Description = "The recipe file (YAML; paths in it are relative to it; see docs/recipes.md)." };

    /// <summary>Runs <paramref name="recipe"/> into <paramref name="folder"/>: each recipe maps to its options record and its rows here.</summary>
    internal static RecipeOutcome Run(RecipeFile recipe, string name, string folder, int? parallel, Action<string>? progress)
    {
        var clock = Stopwatch.StartNew();
        var rows = recipe.Kind switch
        {
            RecipeKind.Fuse => Rows(Fusing.Run(recipe.ToFusing(folder) with { Parallelism = parallel ?? recipe.Parallelism }, progress)),
            RecipeKind.Lofi => Rows(Lofi.Run(recipe.ToLofi(folder) with { Parallelism = parallel ?? recipe.Parallelism }, progress)),
            RecipeKind.LearnedSoup => LearnedSoupRows(recipe, folder, progress),
            RecipeKind.Merge => MergeRows(recipe, folder),
            RecipeKind.Ratatouille => Rows(Ratatouille.Run(recipe.ToRatatouille(folder) with { Parallelism = parallel ?? recipe.Parallelism }, progress), recipe.Tests),
            RecipeKind.ColdFusion => Rows(ColdFusion.Run(recipe.ToColdFusion(folder) with { Parallelism = parallel ?? recipe.Parallelism }, progress)),
            _ => throw new RecyclingException($"{MessageText.Path(recipe.Path)}: {recipe.Name} recipes are not available yet"),
        };
        return new RecipeOutcome(name, recipe.Name, rows, Notes(recipe.Kind), clock.Elapsed.TotalSeconds) { WroteReport = recipe.Kind == RecipeKind.Ratatouille };
    }

    private static List<RecipeRow> Rows(FusingResult result) =>
        [.. result.Runs.Select(r => new RecipeRow(r.Method, r.Seed, r.Run.Figures, Path.GetFileName(r.Start), r.Run.Model))];

    /// <summary>
    /// Ratatouille: its report's scores (per method and seed: best and mean individual, ensemble, soups), accuracies back
    /// to 0..1, under the figure names every other recipe's rows use ("test0 (ood_test)", where its report says "ood_test").
    /// </summary>
    private static List<RecipeRow> Rows(RatatouilleResult result, IReadOnlyList<string> tests)
    {
        var labels = RecipeReport.TestLabels(tests);
        var names = tests.Select((t, i) => (Label: labels[i], Key: TargetRuns.FigureKey($"test{i}", t))).ToDictionary(p => p.Label, p => p.Key, StringComparer.Ordinal);
        return [.. result.Report.Scores.Select(s => new RecipeRow(s.Method, s.Seed, s.Accuracy.ToDictionary(a => names.GetValueOrDefault(a.Key, a.Key), a => a.Value / 100), s.Detail, null))];
    }

    /// <summary>ColD fusion: per round (0: the base) the target's linear probe, and its fine-tuning when asked, one row per seed.</summary>
    private static List<RecipeRow> Rows(ColdFusionResult result) =>
    [
        .. result.Rounds.Select(r => new RecipeRow($"round {r.Round}: probe", r.Seed, r.Probe, Path.GetFileName(r.Model), r.Model)),
        .. result.Rounds.Where(r => r.Finetune is not null).Select(r => new RecipeRow($"round {r.Round}: fine-tuned", r.Seed, r.Finetune!.Figures, Path.GetFileName(r.Model), r.Finetune.Model)),
    ];

    private static List<RecipeRow> Rows(LofiResult result) =>
    [
        .. result.Runs.Select(r => new RecipeRow("individual run", r.Seed, r.Run.Figures, Path.GetFileName(r.Start), r.Run.Model)),
        .. result.Soups.Select(s => new RecipeRow(s.Name, null, s.Figures, $"{s.Members.Count} of {result.Runs.Count} runs: {string.Join(", ", s.Members)}", s.Model)),
    ];

    /// <summary>One learned soup per seed, each beside the uniform and greedy (>) soups of the same ingredients (computed once).</summary>
    private static List<RecipeRow> LearnedSoupRows(RecipeFile recipe, string folder, Action<string>? progress)
    {
        var validation = DatasetLoader.Load(recipe.Validation!);
        var tests = recipe.Tests.Select(t => DatasetLoader.Load(t)).ToList();
        var names = new[] { "val" }.Concat(recipe.Tests.Select((t, i) => $"test{i} ({Path.GetFileName(t)})")).ToList();
        var rows = new List<RecipeRow>();
        using var set = new ModelSet(recipe.Models);
        foreach (var seed in recipe.Seeds)
        {
            var output = Path.Combine(folder, recipe.Seeds.Count == 1 ? "learned-soup.onnx" : $"learned-soup-seed{seed}.onnx");
            var outcome = LearnedSoupMode.Run(set, recipe.ToLearnedSoup(validation, output, seed), GreedyRule.Strict, validation, tests, new ScoringOptions(), progress);
            foreach (var soup in outcome.Scores.Select(s => s.Soup).Distinct())
            {
                if (soup.StartsWith("learned", StringComparison.Ordinal) || seed == recipe.Seeds[0])
                {
                    // Scores come per data set in the order validation, tests: one per soup each.
                    var figures = outcome.Scores.Where(s => s.Soup == soup).Select((s, i) => (names[i], s.Accuracy / 100)).ToDictionary(p => p.Item1, p => p.Item2);
                    var learned = soup.StartsWith("learned", StringComparison.Ordinal);
                    var detail = learned ? $"weights {string.Join(", ", outcome.Result.Weights.Select(LearnedSoupMode.Describe))}"
                        : soup.StartsWith("greedy", StringComparison.Ordinal) ? $"accepted {string.Join(", ", outcome.Greedy.Accepted)}" : $"{recipe.Models.Count} ingredients";
                    rows.Add(new RecipeRow(soup, learned ? seed : null, figures, detail, learned ? output : null));
                }
            }
        }

        return rows;
    }

    /// <summary>The merge config's model written to FOLDER/merged.onnx and, with data, scored beside each input model.</summary>
    private static List<RecipeRow> MergeRows(RecipeFile recipe, string folder)
    {
        var output = Path.Combine(folder, "merged.onnx");
        ModelMerger.Merge(recipe.ToMerge(output));
        var data = recipe.ScoredData();
        var rows = new List<RecipeRow> { new("merged", null, data.Count == 0 ? new Dictionary<string, double>() : TargetRuns.Score(output, data), recipe.Merge!.Method.Name, output) };
        if (data.Count > 0)
        {
            rows.AddRange(recipe.Merge.Models.Select(m => new RecipeRow("input model", null, TargetRuns.Score(m, data), Path.GetFileName(m), m)));
        }

        return rows;
    }

    private static List<string> Notes(RecipeKind kind) => kind switch
    {
        RecipeKind.Fuse => ["Every start gets a new linear-probe head (LP-FT) and the same fine-tuning; a seed sets the data order. Intertraining starts from the auxiliary whose features give the best linear probe on val."],
        RecipeKind.Lofi => ["The runs start from one model with one linear-probe head and differ only in their seed (data order); the soups are weight averages written beside them. The greedy soup was selected on val: its val figure is in-sample, compare on the test sets."],
        RecipeKind.Ratatouille => ["Ratatouille's own report (README.md with the greedy soups and per-seed tables, summary.csv, scores.csv, report.json, PNG) is the recipe folder's; the table above is its summary."],
        RecipeKind.ColdFusion => ["Round 0 is the base. Each round every contributor fine-tunes the shared model on its own task (a new linear-probe head each round) and the bodies are averaged; the target rows score each round's shared model by a linear probe on its features (and by a fine-tuning when target_finetune is given). The recipe's own ColD fusion report (cold-fusion.md/.csv/.json/.png) is in the same folder."],
        RecipeKind.LearnedSoup => ["The learned and greedy soups were fitted/selected on val: their val figures are in-sample, compare on the test sets."],
        _ => [],
    };
}
