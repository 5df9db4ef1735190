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
        var recipe = new RecipeOptionSet(defaults.Training, seeds: 3);
        recipe.Validation.Description = "Target validation data: chooses the best run and the greedy soups; reported.";
        recipe.Seeds.Description = "Seeds of the whole recipe (0..N-1): each draws its own hyperparameters and data orders.";
        recipe.LearningRate.Description = "Centre of the drawn learning rates: log-uniform in [lr/√spread, lr·√spread].";
        recipe.At.Description = "The value the shared head reads (default: the output 'features', else the only output).";
        var runs = new Option<int?>("--runs") { Description = "Target runs per method and seed (default: one per auxiliary plus one from the base)." };
        var spread = new Option<double>("--lr-spread") { Description = "Ratio of the largest to the smallest drawn learning rate (1: no draw).", DefaultValueFactory = _ => defaults.LearningRateSpread };
        var probeSteps = new Option<int>("--probe-steps") { Description = "Steps of the short head-only probe on each auxiliary body.", DefaultValueFactory = _ => defaults.ProbeSteps };
        var rule = new Option<string>("--rule") { Description = "Greedy soup acceptance: >= (ties accepted, DiWA/ratatouille) or > (model soups).", DefaultValueFactory = _ => ">=" };
        var command = new Command("ratatouille", "Model ratatouille: a shared linear-probe head, each auxiliary body fine-tuned on the target from it, uniform and greedy soups; against DiWA (runs from the base) under the same draws and seeds.")
        {
            Arguments = { auxiliaries },
            Options = { baseModel },
        };
        recipe.AddTo(command);
        foreach (var option in new Option[] { runs, spread, probeSteps, rule })
        {
            command.Options.Add(option);
        }

        command.SetAction(parseResult =>
        {
            var inputs = recipe.Inputs(parseResult);
            var options = inputs.Into(defaults) with
            {
                Base = Model(parseResult.GetValue(baseModel)!),
                Auxiliaries = Models(parseResult.GetValue(auxiliaries)!),
                Runs = parseResult.GetValue(runs),
                LearningRateSpread = parseResult.GetValue(spread),
                ProbeSteps = parseResult.GetValue(probeSteps),
                Rule = parseResult.GetValue(rule) switch
                {
                    ">=" => GreedyRule.AllowTies,
                    ">" => GreedyRule.Strict,
                    var other => throw new RecyclingException($"--rule {MessageText.OneLine(other ?? "")}: use >= or >"),
                },
            };
            return recipe.Run(parseResult, options.Folder, progress => Ratatouille.Run(options, progress).Report);
        });
        return command;
    }
}
