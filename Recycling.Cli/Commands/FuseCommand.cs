using System.CommandLine;
using System.Diagnostics;
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
        var recipe = new RecipeOptionSet(new TargetTraining(), seeds: 3, writes: "fused.onnx, ");
        recipe.Validation.Description = "Target validation data (reported; ranks the auxiliaries for intertraining).";
        recipe.Seeds.Description = "Seeds per method (0..N-1).";
        var noInter = new Option<bool>("--no-intertraining") { Description = "Skip the intertraining baseline." };
        var command = new Command("fuse", "Fusing: average the auxiliary models' bodies, fine-tune with a new head on the target; compared with the base and intertraining under the same budget and seeds.")
        {
            Arguments = { auxiliaries },
            Options = { baseModel },
        };
        recipe.AddTo(command);
        command.Options.Add(noInter);
        command.SetAction(parseResult =>
        {
            var inputs = recipe.Inputs(parseResult);
            var options = new FusingOptions(inputs, Model(parseResult.GetValue(baseModel)!), Models(parseResult.GetValue(auxiliaries)!))
            {
                Intertraining = !parseResult.GetValue(noInter),
            };
            return recipe.Run(parseResult, options.Folder, progress =>
            {
                var clock = Stopwatch.StartNew();
                var report = Fusing.Report(options, Fusing.Run(options, progress), clock.Elapsed.TotalSeconds);
                report.Write(options.Folder);
                return report;
            });
        });
        return command;
    }
}
