using System.CommandLine;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Training.Recipes;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle ratatouille`: model ratatouille (shared probe head, auxiliary bodies fine-tuned on the target, soups) against DiWA under one budget.</summary>
internal static class RatatouilleCommand
{
    internal static Command Create()
    {
        var defaults = new RatatouilleOptions { Base = "", Auxiliaries = [], Train = "", Validation = "", Folder = "" };
        var auxiliaries = new Argument<string[]>("auxiliaries") { Description = "Fine-tunings of the base on other tasks (any heads): the ratatouille starts.", Arity = ArgumentArity.OneOrMore };
        var baseModel = new Option<string>("--base") { Description = "The pretrained base: the shared head is probed on its features; the DiWA runs start from it.", Required = true };
        var train = DataOption("Target training data.");
        var val = new Option<string>("--val") { Description = "Target validation data: chooses the best run and the greedy soups; reported.", Required = true };
        var test = TestOption("More data reported, never used for a choice (e.g. OOD).");
        var output = new Option<string>("--output", "-o") { Description = "The recipe folder: runs/KEY/ (reused when run again) and the report (README.md, CSV, report.json, PNG).", Required = true };
        var seeds = new Option<int>("--seeds") { Description = "Seeds of the whole recipe (0..N-1): each draws its own hyperparameters and data orders.", DefaultValueFactory = _ => 3 };
        var runs = new Option<int?>("--runs") { Description = "Target runs per method and seed (default: one per auxiliary plus one from the base)." };
        var epochs = new Option<int>("--epochs") { Description = "Epochs of every target fine-tuning.", DefaultValueFactory = _ => defaults.Training.Epochs };
        var lr = new Option<double>("--lr") { Description = "Centre of the drawn learning rates (AdamW): log-uniform in [lr/√spread, lr·√spread].", DefaultValueFactory = _ => defaults.Training.LearningRate };
        var spread = new Option<double>("--lr-spread") { Description = "Ratio of the largest to the smallest drawn learning rate (1: no draw).", DefaultValueFactory = _ => defaults.LearningRateSpread };
        var batch = new Option<int>("--batch-size") { Description = "Samples per step.", DefaultValueFactory = _ => defaults.Training.BatchSize };
        var at = new Option<string?>("--at") { Description = "The value the shared head reads (default: the output 'features', else the only output)." };
        var probeSteps = new Option<int>("--probe-steps") { Description = "Steps of the short head-only probe on each auxiliary body.", DefaultValueFactory = _ => defaults.ProbeSteps };
        var rule = new Option<string>("--rule") { Description = "Greedy soup acceptance: >= (ties accepted, DiWA/ratatouille) or > (model soups).", DefaultValueFactory = _ => ">=" };
        var parallel = new Option<int?>("--parallel") { Description = "Fine-tunings run at once (default: one per core, bounded by memory)." };
        var json = JsonOption();
        var command = new Command("ratatouille", "Model ratatouille: a shared linear-probe head, each auxiliary body fine-tuned on the target from it, uniform and greedy soups; against DiWA (runs from the base) under the same draws and seeds.")
        {
            Arguments = { auxiliaries },
            Options = { baseModel, train, val, test, output, seeds, runs, epochs, lr, spread, batch, at, probeSteps, rule, parallel, json },
        };
        command.SetAction(parseResult =>
        {
            var count = parseResult.GetValue(seeds);
            if (count < 1)
            {
                throw new RecyclingException($"--seeds {count}: at least 1");
            }

            var folder = OutputFolder(parseResult.GetValue(output)!, "--output");
            var options = new RatatouilleOptions
            {
                Base = Model(parseResult.GetValue(baseModel)!),
                Auxiliaries = Models(parseResult.GetValue(auxiliaries)!),
                Train = parseResult.GetValue(train) ?? throw new RecyclingException("ratatouille needs -d TRAIN"),
                Validation = parseResult.GetValue(val)!,
                Tests = parseResult.GetValue(test) ?? [],
                Folder = folder,
                Seeds = [.. Enumerable.Range(0, count)],
                Runs = parseResult.GetValue(runs),
                LearningRateSpread = parseResult.GetValue(spread),
                ProbeSteps = parseResult.GetValue(probeSteps),
                Rule = parseResult.GetValue(rule) switch
                {
                    ">=" => GreedyRule.AllowTies,
                    ">" => GreedyRule.Strict,
                    var other => throw new RecyclingException($"--rule {MessageText.OneLine(other ?? "")}: use >= or >"),
                },
                Parallelism = parseResult.GetValue(parallel),
                Training = defaults.Training with
                {
                    Epochs = parseResult.GetValue(epochs),
                    LearningRate = parseResult.GetValue(lr),
                    BatchSize = parseResult.GetValue(batch),
                    FeatureAt = parseResult.GetValue(at),
                },
            };
            var stdout = parseResult.InvocationConfiguration.Output;
            var asJson = parseResult.GetValue(json);
            var result = Ratatouille.Run(options, asJson ? null : stdout.WriteLine);
            if (asJson)
            {
                stdout.WriteLine(result.Report.ToJson());
                return 0;
            }

            stdout.WriteLine(result.Report.Table());
            stdout.WriteLine($"report: {Path.Combine(folder, "README.md")}");
            return 0;
        });
        return command;
    }
}
