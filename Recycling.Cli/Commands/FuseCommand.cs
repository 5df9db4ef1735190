using System.CommandLine;
using System.Globalization;
using Recycling.Onnx.IO;
using Recycling.Onnx;
using Recycling.Training.Recipes;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle fuse`: fusing (average of auxiliary bodies, fine-tuned with a new head) against the base and intertraining, under one budget and seeds.</summary>
internal static class FuseCommand
{
    internal static Command Create()
    {
        var auxiliaries = new Argument<string[]>("auxiliaries") { Description = "Fine-tunings of the base on other tasks (any heads), at least two.", Arity = ArgumentArity.OneOrMore };
        var baseModel = new Option<string>("--base") { Description = "The pretrained base (the baseline fine-tuned under the same budget).", Required = true };
        var train = DataOption("Target training data.");
        var val = new Option<string>("--val") { Description = "Target validation data (reported; ranks the auxiliaries for intertraining).", Required = true };
        var test = TestOption("More data reported (e.g. OOD).");
        var output = new Option<string>("--output", "-o") { Description = "The recipe folder: fused.onnx, runs/KEY/ (reused when run again), results.csv.", Required = true };
        var seeds = new Option<int>("--seeds") { Description = "Seeds per method (0..N-1).", DefaultValueFactory = _ => 3 };
        var epochs = new Option<int>("--epochs") { Description = "Epochs of every target fine-tuning.", DefaultValueFactory = _ => new TargetTraining().Epochs };
        var lr = new Option<double>("--lr") { Description = "Learning rate (AdamW).", DefaultValueFactory = _ => new TargetTraining().LearningRate };
        var batch = new Option<int>("--batch-size") { Description = "Samples per step.", DefaultValueFactory = _ => new TargetTraining().BatchSize };
        var at = new Option<string?>("--at") { Description = "The value the new head reads (default: the output 'features', else the only output)." };
        var parallel = new Option<int?>("--parallel") { Description = "Fine-tunings run at once (default: one per core, bounded by memory)." };
        var noInter = new Option<bool>("--no-intertraining") { Description = "Skip the intertraining baseline." };
        var command = new Command("fuse", "Fusing: average the auxiliary models' bodies, fine-tune with a new head on the target; compared with the base and intertraining under the same budget and seeds.")
        {
            Arguments = { auxiliaries },
            Options = { baseModel, train, val, test, output, seeds, epochs, lr, batch, at, parallel, noInter },
        };
        command.SetAction(parseResult =>
        {
            var count = parseResult.GetValue(seeds);
            if (count < 1)
            {
                throw new RecyclingException($"--seeds {count}: at least 1");
            }

            var folder = OutputFolder(parseResult.GetValue(output)!, "--output");
            var options = new FusingOptions
            {
                Base = Model(parseResult.GetValue(baseModel)!),
                Auxiliaries = Models(parseResult.GetValue(auxiliaries)!),
                Train = parseResult.GetValue(train) ?? throw new RecyclingException("fuse needs -d TRAIN"),
                Validation = parseResult.GetValue(val)!,
                Tests = parseResult.GetValue(test) ?? [],
                Folder = folder,
                Seeds = [.. Enumerable.Range(0, count)],
                Intertraining = !parseResult.GetValue(noInter),
                Parallelism = parseResult.GetValue(parallel),
                Training = new TargetTraining
                {
                    Epochs = parseResult.GetValue(epochs),
                    LearningRate = parseResult.GetValue(lr),
                    BatchSize = parseResult.GetValue(batch),
                    FeatureAt = parseResult.GetValue(at),
                },
            };
            var stdout = parseResult.InvocationConfiguration.Output;
            var result = Fusing.Run(options, stdout.WriteLine);
            var table = RecipeTable.Summarise(result.Runs);
            OutputFile.WriteAllText(Path.Combine(folder, "results.csv"), RecipeTable.Csv(result.Runs));
            stdout.WriteLine(table);
            return 0;
        });
        return command;
    }
}

/// <summary>Recipe results as text: mean ± sample standard deviation over seeds per method and data set, and one CSV row per run.</summary>
internal static class RecipeTable
{
    internal static string Summarise(IReadOnlyList<RecipeRun> runs)
    {
        var sets = runs.SelectMany(r => r.Run.Figures.Keys).Distinct().ToList();
        var lines = new List<string> { $"method | seeds | {string.Join(" | ", sets.Select(s => s + " accuracy % (mean ± sd)"))}" };
        foreach (var method in runs.Select(r => r.Method).Distinct())
        {
            var mine = runs.Where(r => r.Method == method).ToList();
            var cells = sets.Select(s =>
            {
                var values = mine.Select(r => r.Run.Figures[s] * 100).ToList();
                var mean = values.Average();
                var sd = values.Count > 1 ? Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1)) : 0;
                return string.Create(CultureInfo.InvariantCulture, $"{mean:F2} ± {sd:F2}");
            });
            lines.Add($"{method} | {mine.Count} | {string.Join(" | ", cells)}");
        }

        return string.Join(Environment.NewLine, lines);
    }

    internal static string Csv(IReadOnlyList<RecipeRun> runs)
    {
        var sets = runs.SelectMany(r => r.Run.Figures.Keys).Distinct().ToList();
        var lines = new List<string> { $"method,start,seed,{string.Join(",", sets)},seconds,reused,folder" };
        lines.AddRange(runs.Select(r => string.Create(CultureInfo.InvariantCulture,
            $"{r.Method},\"{Path.GetFileName(r.Start)}\",{r.Seed},{string.Join(",", sets.Select(s => r.Run.Figures[s].ToString("R", CultureInfo.InvariantCulture)))},{r.Run.Seconds:F1},{r.Run.Reused},\"{r.Run.Folder}\"")));
        return string.Join("\n", lines) + "\n";
    }
}
