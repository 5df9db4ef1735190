using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Training;
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
        var output = new Option<string?>("--output", "-o") { Description = "The recipe folder: runs/KEY/ (reused when run again), the models written, and the report (README.md, summary.csv, results.csv, runs.csv, NAME.json, NAME.png; default: the file's name without extension, in the current folder)." };
        var parallel = new Option<int?>("--parallel") { Description = "Fine-tunings run at once (overrides the file's parallel:; default one per core, bounded by memory)." };
        var device = TrainingDeviceOption();
        var json = JsonOption();
        var command = new Command("run", "Run a recipe file: every fine-tuning content-addressed and resumable, every result scored by ONNX Runtime, a report folder written.")
        {
            Arguments = { file },
            Options = { output, parallel, device, json },
        };
        command.SetAction(parseResult =>
        {
            var chosen = ChosenTrainingDevice(parseResult, device);
            var path = parseResult.GetValue(file)!;
            var recipe = RecipeFile.Load(path);
            var stderr = parseResult.InvocationConfiguration.Error;
            foreach (var note in recipe.Notes)
            {
                stderr.WriteLine($"note: {note}");
            }

            var folder = OutputFolder(parseResult.GetValue(output) ?? Path.GetFileNameWithoutExtension(path), "--output");
            var stdout = parseResult.InvocationConfiguration.Output;
            var asJson = parseResult.GetValue(json);
            var (report, written) = Run(recipe, Path.GetFileNameWithoutExtension(path), folder, parseResult.GetValue(parallel), asJson ? null : stdout.WriteLine, chosen);
            if (!written)
            {
                RecipeReport.WriteFolder(folder, $"Recipe {MessageText.OneLine(Path.GetFileName(path))}", [string.Join("\n", recipe.Plan().Select(l => $"- {l}"))], [report]);
            }

            Print(stdout, report, folder, asJson);
            return 0;
        });
        return command;
    }

    /// <summary>What every recipe command prints: the report's JSON (<c>--json</c>), or its summary tables and where the report is.</summary>
    internal static void Print(TextWriter stdout, RecipeReport report, string folder, bool asJson)
    {
        if (asJson)
        {
            stdout.WriteLine(report.ToJson());
            return;
        }

        stdout.WriteLine(report.Table());
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"report: {Path.Combine(folder, "README.md")} ({report.Seconds:F1} s)"));
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

    /// <summary>
    /// Runs <paramref name="recipe"/> into <paramref name="folder"/>: each recipe maps to its options record and its
    /// report here. Written: whether the recipe wrote its report into the folder itself (ratatouille, ColD fusion).
    /// </summary>
    internal static (RecipeReport Report, bool Written) Run(RecipeFile recipe, string name, string folder, int? parallel, Action<string>? progress,
        TrainingDevice device = TrainingDevice.Cpu)
    {
        var clock = Stopwatch.StartNew();
        var threads = parallel ?? recipe.Parallelism;
        var (report, written) = recipe.Kind switch
        {
            RecipeKind.Fuse => (Fuse(OnDevice(recipe.ToFusing(folder), threads, device), progress, clock), false),
            RecipeKind.Lofi => (Lofi(OnDevice(recipe.ToLofi(folder), threads, device), progress, clock), false),
            RecipeKind.LearnedSoup => (LearnedSoupReport(recipe, folder, progress, clock, device), false),
            RecipeKind.Merge => (MergeReport(recipe, folder, clock), false),
            RecipeKind.Ratatouille => (Ratatouille.Run(OnDevice(recipe.ToRatatouille(folder), threads, device), progress).Report, true),
            RecipeKind.ColdFusion => (ColdFusion.Run(OnDevice(recipe.ToColdFusion(folder), threads, device), progress).Report, true),
            _ => throw new RecyclingException($"{MessageText.Path(recipe.Path)}: {recipe.Name} recipes are not available yet"),
        };

        // A report written by its recipe keeps its own name (its files are there under it).
        return (written ? report : report with { Name = name }, written);
    }

    /// <summary><paramref name="options"/> with the concurrency and the training device of this run.</summary>
    private static T OnDevice<T>(T options, int? parallelism, TrainingDevice device)
        where T : RecipeInputs => (T)((RecipeInputs)options with { Parallelism = parallelism, Training = options.Training with { Device = device } });

    private static ColdFusionOptions OnDevice(ColdFusionOptions options, int? parallelism, TrainingDevice device) =>
        options with { Parallelism = parallelism, Training = options.Training with { Device = device } };

    private static RecipeReport Fuse(FusingOptions options, Action<string>? progress, Stopwatch clock) =>
        Fusing.Report(options, Fusing.Run(options, progress), clock.Elapsed.TotalSeconds);

    private static RecipeReport Lofi(LofiOptions options, Action<string>? progress, Stopwatch clock) =>
        Recycling.Training.Recipes.Lofi.Report(options, Recycling.Training.Recipes.Lofi.Run(options, progress), clock.Elapsed.TotalSeconds);

    /// <summary>One learned soup per seed, each beside the uniform and greedy (>) soups of the same ingredients (computed once).</summary>
    private static RecipeReport LearnedSoupReport(RecipeFile recipe, string folder, Action<string>? progress, Stopwatch clock, TrainingDevice device)
    {
        var validation = DatasetLoader.Load(recipe.Validation!);
        var tests = recipe.Tests.Select(t => DatasetLoader.Load(t)).ToList();
        var splits = new[] { "val" }.Concat(RecipeReport.TestLabels(recipe.Tests)).ToList();
        var scores = new List<RecipeScore>();
        using var set = new ModelSet(recipe.Models);
        foreach (var seed in recipe.Seeds)
        {
            var output = Path.Combine(folder, recipe.Seeds.Count == 1 ? "learned-soup.onnx" : $"learned-soup-seed{seed}.onnx");
            var outcome = LearnedSoupMode.Run(set, recipe.ToLearnedSoup(validation, output, seed) with { Device = device }, GreedyRule.Strict, validation, tests, new ScoringOptions(), progress);
            foreach (var soup in outcome.Scores.Select(s => s.Soup).Distinct())
            {
                var learned = soup.StartsWith("learned", StringComparison.Ordinal);
                if (learned || seed == recipe.Seeds[0])
                {
                    // Scores come per data set in the order validation, tests: one per soup each.
                    var accuracy = outcome.Scores.Where(s => s.Soup == soup).Select((s, i) => (splits[i], s.Accuracy)).ToDictionary(p => p.Item1, p => p.Accuracy, StringComparer.Ordinal);
                    var detail = learned ? $"weights {string.Join(", ", outcome.Result.Weights.Select(LearnedSoupMode.Describe))}"
                        : soup.StartsWith("greedy", StringComparison.Ordinal) ? $"accepted {string.Join(", ", outcome.Greedy.Accepted)}" : $"{recipe.Models.Count} ingredients";
                    scores.Add(new RecipeScore(soup, learned ? seed : null, accuracy) { Detail = detail, Model = learned ? output : null });
                }
            }
        }

        return new RecipeReport
        {
            Recipe = recipe.Name,
            Title = $"Learned soup of {recipe.Models.Count} models against the uniform and greedy soups",
            Splits = splits,
            Scores = scores,
            Notes = ["The learned and greedy soups were fitted/selected on val: their val figures are in-sample, compare on the test sets."],
            Seconds = clock.Elapsed.TotalSeconds,
        };
    }

    /// <summary>The merge config's model written to FOLDER/merged.onnx and, with data, scored beside each input model.</summary>
    private static RecipeReport MergeReport(RecipeFile recipe, string folder, Stopwatch clock)
    {
        var output = Path.Combine(folder, "merged.onnx");
        ModelMerger.Merge(recipe.ToMerge(output));
        var data = recipe.ScoredData();
        var labels = RecipeReport.SplitLabels(recipe.Validation, recipe.Tests);
        RecipeScore Score(string method, string model, string detail) =>
            new(method, null, data.Count == 0 ? new Dictionary<string, double>() : RecipeReport.Percent(TargetRuns.Score(model, data), labels)) { Detail = detail, Model = model };
        return new RecipeReport
        {
            Recipe = recipe.Name,
            Title = $"{recipe.Merge!.Method.Name} merge of {recipe.Merge.Models.Count} models",
            Splits = [.. labels.Values],
            Scores = [Score("merged", output, recipe.Merge.Method.Name), .. data.Count == 0 ? [] : recipe.Merge.Models.Select(m => Score("input model", m, Path.GetFileName(m)))],
            Seconds = clock.Elapsed.TotalSeconds,
        };
    }
}
