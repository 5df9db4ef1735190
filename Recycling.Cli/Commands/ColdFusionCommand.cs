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
        var targetTrain = new Option<string>("--target-train") { Description = "The held-out target's training data (the per-round linear probe's, and --target-finetune's).", Required = true };
        var targetVal = new Option<string>("--target-val") { Description = "The held-out target's validation data (reported).", Required = true };
        var targetTest = new Option<string[]>("--target-test") { Description = "More target data reported (e.g. OOD). Repeatable.", AllowMultipleArgumentsPerToken = true };
        var rounds = new Option<int>("--rounds") { Description = "Rounds of fine-tune-then-average.", DefaultValueFactory = _ => 3 };
        var output = new Option<string>("--output", "-o") { Description = "The recipe folder: runs/KEY/ (reused when run again) and the report (cold-fusion.csv, .json, .md, .png).", Required = true };
        var seeds = new Option<int>("--seeds") { Description = "Independent repetitions of the whole recipe (seeds 0..N-1).", DefaultValueFactory = _ => 1 };
        var defaults = new ColdFusionOptions { Base = "", Contributors = [], TargetTrain = "", TargetValidation = "", Folder = "" }.Training;
        var epochs = new Option<int>("--epochs") { Description = "Epochs of each contributor's fine-tuning per round.", DefaultValueFactory = _ => defaults.Epochs };
        var lr = new Option<double>("--lr") { Description = "Learning rate (AdamW), contributors and --target-finetune.", DefaultValueFactory = _ => defaults.LearningRate };
        var batch = new Option<int>("--batch-size") { Description = "Samples per step.", DefaultValueFactory = _ => defaults.BatchSize };
        var at = new Option<string?>("--at") { Description = "The value heads and probes read (default: the output 'features', else the only output)." };
        var finetune = new Option<bool>("--target-finetune") { Description = "Also fine-tune each round's shared model on the target (LP-FT) and report it beside the probe." };
        var targetEpochs = new Option<int>("--target-epochs") { Description = "Epochs of each --target-finetune run.", DefaultValueFactory = _ => new TargetTraining().Epochs };
        var parallel = new Option<int?>("--parallel") { Description = "Fine-tunings run at once (default: one per core, bounded by memory)." };
        var command = new Command("cold-fusion", "ColD fusion: in each round every contributor fine-tunes the shared model on its task with its own head and the bodies are averaged into the next shared model; a linear probe (and optionally a fine-tuning) on a held-out target scores every round.")
        {
            Arguments = { baseModel },
            Options = { tasks, targetTrain, targetVal, targetTest, rounds, output, seeds, epochs, lr, batch, at, finetune, targetEpochs, parallel },
        };
        command.SetAction(parseResult =>
        {
            var count = parseResult.GetValue(seeds);
            if (count < 1)
            {
                throw new RecyclingException($"--seeds {count}: at least 1");
            }

            var roundCount = parseResult.GetValue(rounds);
            if (roundCount < 1)
            {
                throw new RecyclingException($"--rounds {roundCount}: at least 1");
            }

            var training = new TargetTraining
            {
                Epochs = Positive(parseResult.GetValue(epochs), "--epochs"),
                LearningRate = parseResult.GetValue(lr),
                BatchSize = Positive(parseResult.GetValue(batch), "--batch-size"),
                FeatureAt = parseResult.GetValue(at),
            };
            var options = new ColdFusionOptions
            {
                Base = Model(parseResult.GetValue(baseModel)!),
                Contributors = [.. parseResult.GetValue(tasks)!.Select(ParseTask)],
                TargetTrain = parseResult.GetValue(targetTrain)!,
                TargetValidation = parseResult.GetValue(targetVal)!,
                TargetTests = parseResult.GetValue(targetTest) ?? [],
                Rounds = roundCount,
                Folder = OutputFolder(parseResult.GetValue(output)!, "--output"),
                Seeds = [.. Enumerable.Range(0, count)],
                Training = training,
                TargetFinetune = parseResult.GetValue(finetune) ? training with { Epochs = Positive(parseResult.GetValue(targetEpochs), "--target-epochs") } : null,
                Parallelism = parseResult.GetValue(parallel),
            };
            var stdout = parseResult.InvocationConfiguration.Output;
            var result = ColdFusion.Run(options, stdout.WriteLine);
            stdout.Write(File.ReadAllText(Path.Combine(result.Report, ColdFusionReport.Stem + ".md")));
            return 0;
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

    private static int Positive(int value, string option) => value >= 1 ? value : throw new RecyclingException($"{option} {value}: at least 1");
}
