using System.CommandLine;
using System.Globalization;
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
        var output = new Option<string>("--output", "-o") { Description = "The recipe folder: fused.onnx, runs/KEY/ (reused when run again), and the report (README.md, results.csv, summary.csv, scores.csv, report.json, accuracy.png).", Required = true };
        var seeds = new Option<int>("--seeds") { Description = "Seeds per method (0..N-1).", DefaultValueFactory = _ => 3 };
        var epochs = new Option<int>("--epochs") { Description = "Epochs of every target fine-tuning.", DefaultValueFactory = _ => new TargetTraining().Epochs };
        var lr = new Option<double>("--lr") { Description = "Learning rate (AdamW).", DefaultValueFactory = _ => new TargetTraining().LearningRate };
        var batch = new Option<int>("--batch-size") { Description = "Samples per step.", DefaultValueFactory = _ => new TargetTraining().BatchSize };
        var at = new Option<string?>("--at") { Description = "The value the new head reads (default: the output 'features', else the only output)." };
        var parallel = new Option<int?>("--parallel") { Description = "Fine-tunings run at once (default: one per core, bounded by memory)." };
        var noInter = new Option<bool>("--no-intertraining") { Description = "Skip the intertraining baseline." };
        var json = JsonOption();
        var command = new Command("fuse", "Fusing: average the auxiliary models' bodies, fine-tune with a new head on the target; compared with the base and intertraining under the same budget and seeds.")
        {
            Arguments = { auxiliaries },
            Options = { baseModel, train, val, test, output, seeds, epochs, lr, batch, at, parallel, noInter, json },
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
            var asJson = parseResult.GetValue(json);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = Fusing.Run(options, asJson ? null : stdout.WriteLine);
            var t = options.Training;
            var report = RecipeReport.FromRuns("fuse", "Fusing against the base and intertraining", result.Runs, options.Validation, options.Tests,
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
                ["Each method's score under a seed is its one fine-tuning with that seed (data order); the methods differ only in the body they start from."],
                clock.Elapsed.TotalSeconds);
            report.Write(folder);
            if (asJson)
            {
                stdout.WriteLine(report.ToJson());
                return 0;
            }

            stdout.WriteLine(report.Table());
            stdout.WriteLine($"report: {Path.Combine(folder, "README.md")}");
            return 0;
        });
        return command;
    }
}
