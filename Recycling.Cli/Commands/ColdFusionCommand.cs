using System.CommandLine;
using Recycling.Onnx;
using Recycling.Training.Recipes;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle cold-fusion`: rounds of contributors fine-tuning the shared model and the repository averaging their bodies, scored on a held-out target per round.</summary>
internal static class ColdFusionCommand
{
    internal static Command Create()
    {
        var baseModel = new Argument<string>("base") { Description = "The pretrained model the first round starts from (round 0 of the report)." };
        var tasks = new Option<string[]>("--task")
        {
            Description = "A contributor: NAME=TRAIN or NAME=TRAIN,VAL (its own task data; VAL is scored after each of its fine-tunings). Repeat for each contributor, at least two. " + DataDescription,
            Required = true,
            AllowMultipleArgumentsPerToken = true,
            HelpName = "name=train[,val]",
        };
        var defaults = new ColdFusionOptions { Base = "", Contributors = [], TargetTrain = "", TargetValidation = "", Folder = "" };
        var recipe = new RecipeOptionSet(defaults.Training, seeds: defaults.Seeds.Count, heldOutTarget: true);
        recipe.Train.Description = "The held-out target's training data (the per-round linear probe's, and --target-finetune's). " + DataDescription;
        recipe.Validation.Description = "The held-out target's validation data (reported).";
        recipe.Seeds.Description = "Independent repetitions of the whole recipe (seeds 0..N-1).";
        recipe.Epochs.Description = "Epochs of each contributor's fine-tuning per round.";
        recipe.LearningRate.Description = "Learning rate, contributors and --target-finetune.";
        recipe.At.Description = "The value heads and probes read (default: the output 'features', else the only output).";
        var rounds = new Option<int>("--rounds") { Description = "Rounds of fine-tune-then-average.", DefaultValueFactory = _ => defaults.Rounds };
        var finetune = new Option<bool>("--target-finetune") { Description = "Also fine-tune each round's shared model on the target (LP-FT) and report it beside the probe." };
        var targetEpochs = new Option<int>("--target-epochs") { Description = "Epochs of each --target-finetune run.", DefaultValueFactory = _ => new TargetTraining().Epochs };
        var command = new Command("cold-fusion", "ColD fusion: in each round every contributor fine-tunes the shared model on its task with its own head and the bodies are averaged into the next shared model; a linear probe (and optionally a fine-tuning) on a held-out target scores every round.")
        {
            Arguments = { baseModel },
            Options = { tasks, rounds },
        };
        recipe.AddTo(command);
        command.Options.Add(finetune);
        command.Options.Add(targetEpochs);
        command.SetAction(parseResult =>
        {
            var inputs = recipe.Inputs(parseResult);
            var options = new ColdFusionOptions
            {
                Base = Model(parseResult.GetValue(baseModel)!),
                Contributors = [.. parseResult.GetValue(tasks)!.Select(ParseTask)],
                TargetTrain = inputs.Train,
                TargetValidation = inputs.Validation,
                TargetTests = inputs.Tests,
                Rounds = RecipeOptionSet.AtLeastOne(parseResult.GetValue(rounds), "--rounds"),
                Folder = inputs.Folder,
                Seeds = inputs.Seeds,
                Training = inputs.Training,
                TargetFinetune = parseResult.GetValue(finetune) ? inputs.Training with { Epochs = RecipeOptionSet.AtLeastOne(parseResult.GetValue(targetEpochs), "--target-epochs") } : null,
                Parallelism = inputs.Parallelism,
            };
            return recipe.Run(parseResult, options.Folder, progress => ColdFusion.Run(options, progress).Report);
        });
        return command;
    }

    /// <summary>NAME=TRAIN or NAME=TRAIN,VAL.</summary>
    internal static ColdFusionContributor ParseTask(string text)
    {
        var equals = text.IndexOf('=', StringComparison.Ordinal);
        if (equals <= 0 || equals == text.Length - 1)
        {
            throw new RecyclingException($"--task {MessageText.OneLine(text)}: use NAME=TRAIN or NAME=TRAIN,VAL");
        }

        var data = text[(equals + 1)..].Split(',');
        if (data.Length > 2 || data.Any(d => d.Length == 0))
        {
            throw new RecyclingException($"--task {MessageText.OneLine(text)}: use NAME=TRAIN or NAME=TRAIN,VAL (one comma at most; a path holding a comma cannot be given here)");
        }

        return new ColdFusionContributor { Name = text[..equals], Train = data[0], Validation = data.Length == 2 ? data[1] : null };
    }
}
