using System.CommandLine;
using System.Globalization;
using Recycling.Onnx;
using Recycling.Training;
using Recycling.Training.Recipes;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>
/// The options every recipe command (fuse, ratatouille, cold-fusion) shares, as <see cref="DataOptionSet"/> is for
/// data: the target data (-d, --val, --test; ColD fusion's held-out target: --target-train, --target-val,
/// --target-test), the recipe folder (-o), the seeds, the target fine-tuning's budget (--epochs, --lr, --batch-size,
/// --optimizer, --at), --parallel and --json; checked once and read into one <see cref="RecipeInputs"/>. A command
/// adds them with <see cref="AddTo"/> and may reword an option's description for its recipe.
/// </summary>
internal sealed class RecipeOptionSet
{
    private static readonly Dictionary<string, OptimizerKind> Optimizers = new(StringComparer.OrdinalIgnoreCase)
    {
        ["sgd"] = OptimizerKind.Sgd,
        ["adam"] = OptimizerKind.Adam,
        ["adamw"] = OptimizerKind.AdamW,
    };

    private readonly TargetTraining _defaults;

    /// <param name="defaults">The recipe's default budget (its options record's).</param>
    /// <param name="seeds">The default number of seeds.</param>
    /// <param name="heldOutTarget">ColD fusion: the target data are --target-train, --target-val, --target-test.</param>
    /// <param name="writes">What the recipe folder holds beside runs/ and the report (e.g. "fused.onnx, ").</param>
    public RecipeOptionSet(TargetTraining defaults, int seeds, bool heldOutTarget = false, string writes = "")
    {
        _defaults = defaults;
        var prefix = heldOutTarget ? "--target-" : "--";
        Train = heldOutTarget
            ? new Option<string>("--target-train") { Description = "The target's training data. " + DataDescription, Required = true }
            : DataOption("Target training data.");
        Train.Required = true;
        Validation = new Option<string>(prefix + "val") { Description = "Target validation data: the recipe's selections and the report. Same formats as the training data.", Required = true };
        Tests = new Option<string[]>(prefix + "test") { Description = "More target data reported, never used for a choice (e.g. OOD). Repeatable; same formats as the training data.", AllowMultipleArgumentsPerToken = true };
        Output = new Option<string>("--output", "-o") { Description = $"The recipe folder: {writes}runs/KEY/ (reused when run again) and the report (README.md, summary.csv, results.csv, runs.csv, NAME.json, NAME.png).", Required = true };
        Seeds = new Option<int>("--seeds") { Description = "Seeds of the recipe (0..N-1): each its own data orders.", DefaultValueFactory = _ => seeds };
        Epochs = new Option<int>("--epochs") { Description = "Epochs of every target fine-tuning.", DefaultValueFactory = _ => defaults.Epochs };
        LearningRate = new Option<double>("--lr") { Description = "Learning rate.", DefaultValueFactory = _ => defaults.LearningRate };
        BatchSize = new Option<int>("--batch-size") { Description = "Samples per step.", DefaultValueFactory = _ => defaults.BatchSize };
        Optimizer = new Option<string>("--optimizer") { Description = "sgd, adam or adamw.", DefaultValueFactory = _ => defaults.Optimizer.ToString().ToLowerInvariant() };
        At = new Option<string?>("--at") { Description = "The value each new head reads (default: the output 'features', else the only output)." };
        Device = TrainingDeviceOption();
        Parallel = new Option<int?>("--parallel") { Description = "Fine-tunings run at once (default: one per core, bounded by memory)." };
        Json = JsonOption();
    }

    public Option<string> Train { get; }

    public Option<string> Validation { get; }

    public Option<string[]> Tests { get; }

    public Option<string> Output { get; }

    public Option<int> Seeds { get; }

    public Option<int> Epochs { get; }

    public Option<double> LearningRate { get; }

    public Option<int> BatchSize { get; }

    public Option<string> Optimizer { get; }

    public Option<string?> At { get; }

    public Option<int?> Parallel { get; }

    public Option<string> Device { get; }

    public Option<bool> Json { get; }

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Train, Validation, Tests, Output, Seeds, Epochs, LearningRate, BatchSize, Optimizer, At, Parallel, Device, Json })
        {
            command.Options.Add(option);
        }
    }

    /// <summary>The target data, the checked folder, seeds 0..N-1, the budget (over the recipe's defaults) and the concurrency.</summary>
    public RecipeInputs Inputs(ParseResult parseResult)
    {
        // The budget (and with it --device, which may refuse) before the output folder is touched.
        var training = Training(parseResult);
        return new()
        {
            Train = parseResult.GetValue(Train)!,
            Validation = parseResult.GetValue(Validation)!,
            Tests = parseResult.GetValue(Tests) ?? [],
            Folder = OutputFolder(parseResult.GetValue(Output)!, "--output"),
            Seeds = [.. Enumerable.Range(0, AtLeastOne(parseResult.GetValue(Seeds), "--seeds"))],
            Training = training,
            Parallelism = parseResult.GetValue(Parallel),
        };
    }

    /// <summary>The budget the flags give, over the recipe's defaults (its weight decay, BatchNorm mode ... kept).</summary>
    public TargetTraining Training(ParseResult parseResult)
    {
        var optimizer = parseResult.GetValue(Optimizer)!;
        var lr = parseResult.GetValue(LearningRate);
        return _defaults with
        {
            Epochs = AtLeastOne(parseResult.GetValue(Epochs), "--epochs"),
            LearningRate = lr > 0 && double.IsFinite(lr) ? lr : throw new RecyclingException($"--lr {lr.ToString(CultureInfo.InvariantCulture)}: must be above 0"),
            BatchSize = AtLeastOne(parseResult.GetValue(BatchSize), "--batch-size"),
            Optimizer = Optimizers.TryGetValue(optimizer, out var kind) ? kind : throw new RecyclingException($"--optimizer {MessageText.OneLine(optimizer)}: use sgd, adam or adamw"),
            FeatureAt = parseResult.GetValue(At),
            Device = ChosenTrainingDevice(parseResult, Device),
        };
    }

    /// <summary>
    /// Runs the command's recipe (<paramref name="run"/> gets the progress sink: standard output, none with --json)
    /// and prints its report (<see cref="RecipeCommand.Print"/>); the command's exit code.
    /// </summary>
    public int Run(ParseResult parseResult, string folder, Func<Action<string>?, RecipeReport> run)
    {
        ArgumentNullException.ThrowIfNull(run);
        var stdout = parseResult.InvocationConfiguration.Output;
        var asJson = parseResult.GetValue(Json);
        RecipeCommand.Print(stdout, run(asJson ? null : stdout.WriteLine), folder, asJson);
        return 0;
    }

    internal static int AtLeastOne(int value, string option) => value >= 1 ? value : throw new RecyclingException($"{option} {value}: at least 1");
}
