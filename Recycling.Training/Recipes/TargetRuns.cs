using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.Training.Ops;

namespace Recycling.Training.Recipes;

/// <summary>The fine-tuning every target run of a recipe shares (the budget compared across methods).</summary>
public sealed record TargetTraining
{
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;

    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Null: PyTorch's default for the optimizer.</summary>
    public double? WeightDecay { get; init; }

    public int Epochs { get; init; } = 3;

    public int BatchSize { get; init; } = 32;

    public BatchNormMode BatchNorm { get; init; } = BatchNormMode.Train;

    /// <summary>The value the new head reads (null: the output "features", else the only output).</summary>
    public string? FeatureAt { get; init; }

    /// <summary>Write the average of the last K epochs' end weights (<see cref="FineTuneOptions.AverageEpochs"/>); null: the last epoch's.</summary>
    public int? AverageEpochs { get; init; }

    /// <summary>Stop after this many optimizer steps (<see cref="FineTuneOptions.MaxSteps"/>; a quick trial of a recipe); null: the epochs decide.</summary>
    public int? MaxSteps { get; init; }

    /// <summary>Where the runs train (<see cref="RunSpec.Device"/>: not part of a run's identity).</summary>
    public TrainingDevice Device { get; init; } = TrainingDevice.Cpu;
}

/// <summary>
/// Target fine-tunings as content-addressed runs: the <see cref="RunSpec"/> holds everything
/// <see cref="Execute"/> needs (the spec is the single source of the run), and the figures are the accuracies of
/// the written model, scored by ONNX Runtime, on the validation and test data.
/// </summary>
internal static class TargetRuns
{
    public const string Kind = "finetune-new-head";

    public static RunSpec Spec(string label, string model, string train, string validation, IReadOnlyList<string> tests, TargetTraining training, int seed)
    {
        var data = DataRoles(train, validation, tests);
        var parameters = new Dictionary<string, string>
        {
            ["optimizer"] = training.Optimizer.ToString(),
            ["lr"] = training.LearningRate.ToString("R", CultureInfo.InvariantCulture),
            ["weight_decay"] = training.WeightDecay?.ToString("R", CultureInfo.InvariantCulture) ?? "default",
            ["epochs"] = training.Epochs.ToString(CultureInfo.InvariantCulture),
            ["batch_size"] = training.BatchSize.ToString(CultureInfo.InvariantCulture),
            ["batchnorm"] = training.BatchNorm.ToString(),
            ["head"] = "probe",
            ["at"] = training.FeatureAt ?? "",
            ["seed"] = seed.ToString(CultureInfo.InvariantCulture),
        };

        HeadProbe.Stamp(parameters);

        // Only when set, so that the keys of runs without them stay what they were.
        if (training.AverageEpochs is { } average)
        {
            parameters["average_epochs"] = average.ToString(CultureInfo.InvariantCulture);
        }

        if (training.MaxSteps is { } steps)
        {
            parameters["max_steps"] = steps.ToString(CultureInfo.InvariantCulture);
        }

        return new RunSpec
        {
            Kind = Kind,
            Label = label,
            Models = new Dictionary<string, string> { ["model"] = model },
            Data = data,
            Parameters = parameters,
            Device = training.Device,
        };
    }

    /// <summary>Fine-tunes spec's model with a new linear-probe head (LP-FT) on its train data, writes it to <paramref name="output"/>, scores it.</summary>
    public static IReadOnlyDictionary<string, double> Execute(RunSpec spec, string output)
    {
        var at = spec.Parameters["at"];
        FineTuner.Run(FineTuning(spec, output) with { Head = new HeadSpec { At = at.Length == 0 ? null : at, Init = HeadInit.Probe } });
        return Figures(spec, output);
    }

    /// <summary>
    /// The fine-tuning a target run's parameters describe (optimizer, lr, weight_decay, epochs, batch_size, batchnorm,
    /// seed, and average_epochs and max_steps where set) of spec's model on its train data, written to <paramref name="output"/>.
    /// </summary>
    internal static FineTuneOptions FineTuning(RunSpec spec, string output)
    {
        var p = spec.Parameters;
        return new FineTuneOptions
        {
            Model = spec.Models["model"],
            Train = spec.Data["train"],
            Output = output,
            Epochs = int.Parse(p["epochs"], CultureInfo.InvariantCulture),
            BatchSize = int.Parse(p["batch_size"], CultureInfo.InvariantCulture),
            Seed = int.Parse(p["seed"], CultureInfo.InvariantCulture),
            AverageEpochs = p.TryGetValue("average_epochs", out var average) ? int.Parse(average, CultureInfo.InvariantCulture) : null,
            MaxSteps = p.TryGetValue("max_steps", out var steps) ? int.Parse(steps, CultureInfo.InvariantCulture) : null,
            Device = spec.Device,
            Settings = new TrainingSettings
            {
                Optimizer = Enum.Parse<OptimizerKind>(p["optimizer"]),
                LearningRate = double.Parse(p["lr"], CultureInfo.InvariantCulture),
                WeightDecay = p["weight_decay"] == "default" ? null : double.Parse(p["weight_decay"], CultureInfo.InvariantCulture),
                BatchNorm = Enum.Parse<BatchNormMode>(p["batchnorm"]),
            },
        };
    }

    /// <summary>The accuracy (0..1) of <paramref name="model"/> on each of spec's data but "train": "val", and "testI (NAME)" for the others.</summary>
    public static IReadOnlyDictionary<string, double> Figures(RunSpec spec, string model) => Score(model, spec.Data);

    /// <summary>
    /// The figures of a target model: its accuracy (0..1) on every data set of <paramref name="data"/> (by role) but
    /// "train", named by <see cref="FigureKey"/> (the names every run and soup of a recipe report share).
    /// </summary>
    public static IReadOnlyDictionary<string, double> Score(string model, IReadOnlyDictionary<string, string> data) =>
        data.Where(d => d.Key != "train").ToDictionary(d => FigureKey(d.Key, d.Value), d => Accuracy(model, DatasetLoader.Load(d.Value)), StringComparer.Ordinal);

    /// <summary>The figure name of data <paramref name="role"/> ("val", "test0", ...) read from <paramref name="data"/>.</summary>
    public static string FigureKey(string role, string data) => role == "val" ? "val" : $"{role} ({Path.GetFileName(data)})";

    /// <summary>The data roles of a run: "train", "val", "test0", "test1", ...</summary>
    public static Dictionary<string, string> DataRoles(string train, string validation, IReadOnlyList<string> tests)
    {
        var data = new Dictionary<string, string> { ["train"] = train, ["val"] = validation };
        for (var i = 0; i < tests.Count; i++)
        {
            data[$"test{i}"] = tests[i];
        }

        return data;
    }

    /// <summary>Accuracy (0..1) of the model's "logits" (else its first output) on <paramref name="data"/>, by ONNX Runtime.</summary>
    public static double Accuracy(string model, Dataset data)
    {
        using var scorer = OnnxScorer.Open(model, new ScoringOptions { Threads = 1 });
        var output = scorer.OutputNames.Contains(HeadAttachment.Logits) ? HeadAttachment.Logits : scorer.OutputNames[0];
        return ClassificationMetrics.FromLogits(scorer.Run(data, output), data).Accuracy / 100;
    }
}
