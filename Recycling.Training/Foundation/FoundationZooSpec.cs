using Recycling.MLNet.Data;
using Recycling.Training.Ops;

namespace Recycling.Training.Foundation;

/// <summary>An auxiliary task of a foundation zoo: its data split (a prefix in the spec's data folder) and head size.</summary>
internal sealed record AuxiliaryTask(string Name, string Split, int Classes, string Description);

/// <summary>The fine-tuning one role of the zoo gets (auxiliary or target runs).</summary>
internal sealed record RoleTraining
{
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;

    /// <summary>The learning rate (auxiliary runs), or the low end of the log-uniform draw per target seed.</summary>
    public double LearningRate { get; init; } = 1e-4;

    /// <summary>The high end of the log-uniform learning-rate draw per target seed (null: always <see cref="LearningRate"/>).</summary>
    public double? LearningRateHigh { get; init; }

    /// <summary>Weight decays drawn from per target seed (auxiliary runs take the first).</summary>
    public IReadOnlyList<double> WeightDecays { get; init; } = [0];

    public int Epochs { get; init; } = 1;

    public int BatchSize { get; init; } = 32;

    public BatchNormMode BatchNorm { get; init; } = BatchNormMode.Frozen;

    /// <summary>A regular expression: initializers whose name matches stay fixed (null: every float initializer trains).</summary>
    public string? Freeze { get; init; }
}

/// <summary>
/// How much of a zoo is built: how many auxiliary tasks and DiWA seeds, how many images of each split, and how long
/// the runs train. The full scale is the zoo the demo studies; tests build a mini scale of the same recipe.
/// </summary>
internal sealed record ZooScale
{
    /// <summary>Names the build's folder and zoo.json; runs are shared across scales by content.</summary>
    public required string Name { get; init; }

    /// <summary>The first this many auxiliary tasks of the spec (each gives one auxiliary and one ratatouille target run).</summary>
    public required int Auxiliaries { get; init; }

    /// <summary>Target runs from the base (DiWA-style), seeds 0..N-1.</summary>
    public required int DiwaRuns { get; init; }

    public required int AuxiliaryImages { get; init; }

    public required int TargetImages { get; init; }

    /// <summary>Images of the probe-training split (the base ranking's probes).</summary>
    public required int ProbeImages { get; init; }

    /// <summary>Images of each evaluation split (val, OOD).</summary>
    public required int EvaluationImages { get; init; }

    /// <summary>Target-training images each target's diagonal Fisher is estimated on (for Fisher merging).</summary>
    public required int FisherImages { get; init; }

    public required int AuxiliaryEpochs { get; init; }

    public required int TargetEpochs { get; init; }

    /// <summary>Head-only steps of the ratatouille probe of the shared head on each auxiliary body.</summary>
    public required int RatatouilleProbeSteps { get; init; }

    /// <summary>
    /// Replicas of the target runs, each with its own seeds (learning-rate and decay draws, data order) and its own
    /// zoo.json, so the study can report its spread over seeds. The base, auxiliary runs and ratatouille starts are
    /// shared by all replicas: the spread is that of the target fine-tunings and what is recycled from them.
    /// </summary>
    public int Seeds { get; init; } = 1;

    /// <summary>The whole recipe on fewer runs and images (2 auxiliaries, 2 DiWA runs, 256 target images): minutes, not the full build's half hour.</summary>
    public static ZooScale Small { get; } = new()
    {
        Name = "small",
        Auxiliaries = 2,
        DiwaRuns = 2,
        AuxiliaryImages = 128,
        TargetImages = 256,
        ProbeImages = 256,
        EvaluationImages = 256,
        FisherImages = 32,
        AuxiliaryEpochs = 1,
        TargetEpochs = 1,
        RatatouilleProbeSteps = 4,
    };

    /// <summary>16 samples per split and one step per run: a check of the plumbing (the tests build it).</summary>
    public static ZooScale Mini { get; } = new()
    {
        Name = "mini",
        Auxiliaries = 2,
        DiwaRuns = 1,
        AuxiliaryImages = 16,
        TargetImages = 16,
        ProbeImages = 16,
        EvaluationImages = 16,
        FisherImages = 4,
        AuxiliaryEpochs = 1,
        TargetEpochs = 1,
        RatatouilleProbeSteps = 2,
    };
}

/// <summary>
/// A foundation-model zoo: the pretrained model (a <see cref="FoundationModels"/> name), where a new linear head
/// reads its features, how its data are prepared, the target task's splits, the auxiliary tasks, and the training of
/// each role. <see cref="FoundationZooBuilder"/> builds any spec the same way: a shared linear-probe head on the
/// base, auxiliary fine-tunings, DiWA and ratatouille target fine-tunings; the study reads the zoo.json it writes.
/// </summary>
internal sealed record FoundationZooSpec
{
    public required string Name { get; init; }

    /// <summary>The <see cref="FoundationModels"/> entry fetched as the base.</summary>
    public required string FoundationModel { get; init; }

    public required string Description { get; init; }

    /// <summary>What the OOD test split is, in words (zoo.json's "ood_description"; the study's report names it).</summary>
    public required string OodDescription { get; init; }

    /// <summary>The value every head reads (flattened per sample).</summary>
    public required string Cut { get; init; }

    /// <summary>Preprocessing of every sample (images); null for data fed as they are.</summary>
    public ImagePreprocessing? Preprocessing { get; init; }

    /// <summary>Writes the pretrained model (first path) with the value <see cref="Cut"/> added (second path), when the export lacks it (MiniLM: mean pooling); null: the cut is in the export.</summary>
    public Action<string, string>? AddFeatures { get; init; }

    /// <summary>L2 strength of the linear probes that initialise the heads (on standardised features); null: the probe's default, 1e-3.</summary>
    public double? ProbeL2 { get; init; }

    /// <summary>Text zoos: how the splits (SPLIT.tsv.gz with text and label columns) are tokenised; null: image zoos (SPLIT_images/_labels.npy.gz).</summary>
    public TextDataOptions? Text { get; init; }

    /// <summary>The deterministic generator of the shipped data: (output folder, source folder or null for its default).</summary>
    public required Action<string, string?> GenerateData { get; init; }

    /// <summary>The shipped data folder's path relative to a repository root or the tool's folder.</summary>
    public required string DataFolder { get; init; }

    public int Classes { get; init; } = 10;

    public string TargetTrain { get; init; } = "target_train";

    public string ProbeTrain { get; init; } = "probe_train";

    public string Validation { get; init; } = "val";

    public string Ood { get; init; } = "ood_test";

    public required IReadOnlyList<AuxiliaryTask> Auxiliaries { get; init; }

    public required RoleTraining AuxiliaryTraining { get; init; }

    public required RoleTraining TargetTraining { get; init; }

    /// <summary>Learning rate of the head-only ratatouille probe.</summary>
    public double RatatouilleProbeLearningRate { get; init; } = 1e-2;

    public required ZooScale Full { get; init; }

    public ZooScale Small { get; init; } = ZooScale.Small;

    public ZooScale Mini { get; init; } = ZooScale.Mini;

    /// <summary>The shipped data folder, searched from <paramref name="start"/> (the current directory) upwards, then from the tool's folder.</summary>
    public string FindData(string? start = null)
    {
        foreach (var origin in new[] { start ?? Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(origin); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, DataFolder);
                if (File.Exists(Path.Combine(candidate, Text is null ? $"{TargetTrain}_images.npy.gz" : Path.Combine("data", $"{TargetTrain}.tsv.gz"))))
                {
                    return candidate;
                }
            }
        }

        throw new Onnx.RecyclingException($"no {DataFolder}/ with the {Name} zoo's data found from {Onnx.MessageText.Path(start ?? Directory.GetCurrentDirectory())} or the tool's folder upwards");
    }
}

/// <summary>The foundation zoos the toolkit knows, by name.</summary>
internal static class FoundationZoos
{
    public static IReadOnlyList<FoundationZooSpec> All { get; } = [ResNet18Zoo.Spec, MiniLmZoo.Spec];

    public static IReadOnlyList<string> Names => [.. All.Select(s => s.Name)];

    public static FoundationZooSpec Find(string name) => All.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new Onnx.RecyclingException($"no foundation zoo '{Onnx.MessageText.OneLine(name)}' (known: {string.Join(", ", Names)})");
}
