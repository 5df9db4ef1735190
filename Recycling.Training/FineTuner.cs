using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>What <see cref="FineTuner.Run"/> trains, on what, and where it writes.</summary>
public sealed record FineTuneOptions
{
    public required string Model { get; init; }

    /// <summary>Training data, anything <see cref="DatasetLoader.Load"/> reads.</summary>
    public required string Train { get; init; }

    public required string Output { get; init; }

    /// <summary>Validation data, evaluated after every epoch; optional.</summary>
    public string? Validation { get; init; }

    /// <summary>The graph output trained with cross-entropy: default "logits" when the graph has it, else its only output.</summary>
    public string? OutputName { get; init; }

    public TrainingSettings Settings { get; init; } = new();

    public int Epochs { get; init; } = 1;

    /// <summary>Stop after this many optimizer steps in all (null: the epochs decide).</summary>
    public int? MaxSteps { get; init; }

    public int BatchSize { get; init; } = 32;

    public int Seed { get; init; }

    /// <summary>False: file order every epoch.</summary>
    public bool Shuffle { get; init; } = true;

    public ParameterSelection Parameters { get; init; } = new();

    /// <summary>A new head attached before training (null: train the model's own output).</summary>
    public HeadSpec? Head { get; init; }

    /// <summary>Resize, grey to RGB, normalisation of every sample (train, validation, check). Grey data fed to a model
    /// that declares 3 channels is copied to 3 channels even when this is null.</summary>
    public ImagePreprocessing? Preprocessing { get; init; }
}

/// <summary>One epoch's figures.</summary>
public sealed record EpochReport(int Epoch, int Steps, double TrainLoss, double? ValidationLoss, double? ValidationAccuracy, double SamplesPerSecond);

/// <summary>The outcome of a fine-tuning run.</summary>
public sealed record FineTuneResult(string Output, string TrainedOutput, int TrainableTensors, long TrainableValues, IReadOnlyList<EpochReport> Epochs,
    double OnnxRuntimeGap, int CheckedSamples);

/// <summary>
/// Fine-tunes an ONNX model with TorchSharp: cross-entropy on one output, the graph's float initializers trained in
/// place, the result written as the same model with new values (and updated BatchNorm running statistics), then
/// checked: ONNX Runtime on the written file must reproduce the trained program's eval-mode outputs.
/// </summary>
public static class FineTuner
{
    /// <summary>Largest relative gap (max |ORT − TorchSharp| / max |TorchSharp|) accepted between the written model and the trained program.</summary>
    public const double OnnxRuntimeTolerance = 1e-4;

    private const int CheckSamples = 64;

    /// <summary>One line per node of <paramref name="modelPath"/> that cannot run (empty: all can).</summary>
    public static IReadOnlyList<string> Check(string modelPath)
    {
        using var model = OnnxModel.Open(modelPath);
        return OnnxProgram.Check(model);
    }

    public static FineTuneResult Run(FineTuneOptions options, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        Validate(options);
        var train = DatasetLoader.Load(options.Train);
        var validation = options.Validation is null ? null : DatasetLoader.Load(options.Validation);
        using var original = OnnxModel.Open(options.Model);
        var preprocessing = PreparedModel.Preprocessing(original, train, options.Preprocessing);
        using var prepared = PreparedModel.Prepare(original, options.Head, train, preprocessing);
        var model = prepared.Model;
        using var program = OnnxProgram.Load(model, options.Parameters);
        var feeder = BatchFeeder.For(program, original.Path, train, preprocessing);
        var head = prepared.Head is null ? null : prepared.InitializeHead(program, feeder, train, options.Head!.Init, options.Seed);
        var output = ChooseOutput(program, original.Path, options.OutputName);
        feeder.CheckLabels(program, output, train, validation);

        manual_seed(options.Seed);
        var random = new Random(options.Seed);
        var reports = new List<EpochReport>();
        var steps = 0;
        using (var trainer = new Trainer(program, output, options.Settings))
        {
            for (var epoch = 1; epoch <= options.Epochs && (options.MaxSteps is null || steps < options.MaxSteps); epoch++)
            {
                var order = Enumerable.Range(0, train.Count).ToArray();
                if (options.Shuffle)
                {
                    random.Shuffle(order);
                }

                var clock = Stopwatch.StartNew();
                double lossSum = 0;
                int seen = 0, epochSteps = 0;
                for (var start = 0; start < order.Length && (options.MaxSteps is null || steps < options.MaxSteps); start += options.BatchSize)
                {
                    var indices = order.AsSpan(start, Math.Min(options.BatchSize, order.Length - start)).ToArray();
                    using var batch = feeder.Batch(train, indices);
                    lossSum += trainer.Step(batch) * indices.Length;
                    seen += indices.Length;
                    steps++;
                    epochSteps++;
                }

                if (!double.IsFinite(lossSum) || !AllFinite(program))
                {
                    throw new RecyclingException($"training diverged in epoch {epoch} (a loss or a weight is not finite); lower --lr or clip gradients (--clip-grad-norm); nothing was written");
                }

                var speed = seen / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                var (valLoss, valAccuracy) = validation is null ? ((double?)null, (double?)null) : Evaluate(trainer, feeder, validation, options.BatchSize);
                var report = new EpochReport(epoch, epochSteps, lossSum / Math.Max(seen, 1), valLoss, valAccuracy, speed);
                reports.Add(report);
                progress?.Invoke(Describe(report));
            }
        }

        Write(model, program, options, train, validation, head, preprocessing);
        var checkData = Subset(validation ?? train, CheckSamples);
        var gap = CompareWithOnnxRuntime(program, feeder, output, options.Output, checkData, preprocessing);
        if (gap > OnnxRuntimeTolerance)
        {
            throw new RecyclingException($"{options.Output}: ONNX Runtime's outputs differ from the trained program's by {gap:G3} (relative), more than {OnnxRuntimeTolerance:G1}; the written model is not trustworthy");
        }

        return new FineTuneResult(Path.GetFullPath(options.Output), output, program.Trainable.Count(), program.Trainable.Sum(p => p.numel()), reports, gap, checkData.Count);
    }

    internal static string Describe(EpochReport r) =>
        string.Create(CultureInfo.InvariantCulture, $"epoch {r.Epoch}: {r.Steps} steps, train loss {r.TrainLoss:F4}") +
        (r.ValidationAccuracy is { } acc ? string.Create(CultureInfo.InvariantCulture, $", val loss {r.ValidationLoss:F4}, val accuracy {acc * 100:F2}%") : "") +
        string.Create(CultureInfo.InvariantCulture, $", {r.SamplesPerSecond:F0} samples/s");

    internal static string ChooseOutput(OnnxProgram program, string modelPath, string? requested)
    {
        if (requested is not null)
        {
            return program.Outputs.Contains(requested) ? requested
                : throw new RecyclingException($"{modelPath}: no graph output '{requested}' (outputs: {string.Join(", ", program.Outputs)})");
        }

        return program.Outputs.Contains("logits") ? "logits"
            : program.Outputs.Count == 1 ? program.Outputs[0]
            : throw new RecyclingException($"{modelPath}: {program.Outputs.Count} outputs and none named 'logits'; choose one with --output ({string.Join(", ", program.Outputs)})");
    }

    internal static Dataset Subset(Dataset data, int count)
    {
        count = Math.Min(count, data.Count);
        return new Dataset(data.Name, data.Values.AsSpan(0, count * data.SampleSize).ToArray(), data.SampleShape, data.Labels[..count]);
    }

    private static void Validate(FineTuneOptions o)
    {
        if (o.Epochs < 1 || o.BatchSize < 1 || o.MaxSteps is < 1)
        {
            throw new RecyclingException($"epochs ({o.Epochs}), batch size ({o.BatchSize}) and steps ({o.MaxSteps}) must be at least 1");
        }

        var s = o.Settings;
        if (!(s.LearningRate > 0) || double.IsInfinity(s.LearningRate) || s.Momentum is < 0 or >= 1 || s.EffectiveWeightDecay < 0 || s.LabelSmoothing is < 0 or >= 1 || s.MaxGradNorm is <= 0)
        {
            throw new RecyclingException("learning rate must be > 0, momentum in [0, 1), weight decay >= 0, label smoothing in [0, 1), gradient clipping > 0");
        }

        if (s.Nesterov && (s.Optimizer != OptimizerKind.Sgd || s.Momentum == 0))
        {
            throw new RecyclingException("--nesterov needs --optimizer sgd with --momentum > 0");
        }

        if (Path.GetFullPath(o.Output) == Path.GetFullPath(o.Model))
        {
            throw new RecyclingException($"{o.Output}: the output would overwrite the input model; choose another path");
        }
    }

    private static (double Loss, double Accuracy) Evaluate(Trainer trainer, BatchFeeder feeder, Dataset data, int batchSize)
    {
        double loss = 0;
        var correct = 0;
        for (var start = 0; start < data.Count; start += batchSize)
        {
            using var batch = feeder.Batch(data, [.. Enumerable.Range(start, Math.Min(batchSize, data.Count - start))]);
            var (l, c) = trainer.Evaluate(batch);
            loss += l;
            correct += c;
        }

        return (loss / data.Count, (double)correct / data.Count);
    }

    private static void Write(OnnxModel model, OnnxProgram program, FineTuneOptions options, Dataset train, Dataset? validation, LinearHead? head, ImagePreprocessing? preprocessing)
    {
        var trained = program.Trainable.Select(p => p).ToHashSet();
        var values = program.Parameters.Where(p => trained.Contains(p.Value)).ToDictionary(p => p.Key, p => (Tensor)p.Value, StringComparer.Ordinal);
        if (options.Settings.BatchNorm == BatchNormMode.Train)
        {
            foreach (var (name, buffer) in program.Buffers)
            {
                values[name] = buffer;
            }
        }

        var metadata = new Dictionary<string, string>
        {
            ["recycling.finetune.parent"] = Path.GetFileName(options.Model),
            ["recycling.finetune.parent_sha256"] = Sha256(options.Model),
            ["recycling.finetune.train"] = train.Name,
            ["recycling.finetune.settings"] = JsonSerializer.Serialize(new
            {
                optimizer = options.Settings.Optimizer.ToString().ToLowerInvariant(),
                lr = options.Settings.LearningRate,
                momentum = options.Settings.Momentum,
                nesterov = options.Settings.Nesterov,
                weight_decay = options.Settings.EffectiveWeightDecay,
                label_smoothing = options.Settings.LabelSmoothing,
                max_grad_norm = options.Settings.MaxGradNorm,
                batchnorm = options.Settings.BatchNorm.ToString().ToLowerInvariant(),
                epochs = options.Epochs,
                max_steps = options.MaxSteps,
                batch_size = options.BatchSize,
                seed = options.Seed,
                shuffle = options.Shuffle,
                validation = validation?.Name,
                head = head is null ? null : new { at = head.At, classes = head.Classes, features = head.Features, init = options.Head!.Init.ToString().ToLowerInvariant() },
                preprocessing = preprocessing?.ToString(),
            }),
            ["recycling.finetune.tool"] = $"Recycling.Training {typeof(FineTuner).Assembly.GetName().Version}",
        };
        OnnxWriter.Write(model, options.Output, new OnnxWriteOptions { Metadata = metadata }, tensor =>
            tensor.Kind == TensorKind.Initializer && tensor.Path == $"graph/initializer[{tensor.Name}]" && values.TryGetValue(tensor.Name, out var value)
                ? new TensorReplacement(OnnxDataType.Float, TensorConversion.Float32Bytes(value))
                : null);
    }

    private static double CompareWithOnnxRuntime(OnnxProgram program, BatchFeeder feeder, string output, string path, Dataset data, ImagePreprocessing? preprocessing)
    {
        float[] ours;
        using (var batch = feeder.Batch(data, [.. Enumerable.Range(0, data.Count)]))
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            ours = TensorConversion.Floats(program.Forward(batch.Feeds, new OpContext(), [output])[output]);
        }

        using var scorer = OnnxScorer.Open(path, new ScoringOptions { Threads = 1 });
        var theirs = scorer.Run(preprocessing?.Apply(data) ?? data, output).Data;
        if (theirs.Length != ours.Length)
        {
            throw new RecyclingException($"{path}: ONNX Runtime gives {theirs.Length} values for '{output}', the trained program {ours.Length}");
        }

        double gap = 0, scale = 1e-12;
        for (var i = 0; i < ours.Length; i++)
        {
            gap = Math.Max(gap, Math.Abs(ours[i] - (double)theirs[i]));
            scale = Math.Max(scale, Math.Abs((double)ours[i]));
        }

        return gap / scale;
    }

    private static bool AllFinite(OnnxProgram program)
    {
        using var scope = NewDisposeScope();
        return program.Trainable.All(p => p.isfinite().all().item<bool>());
    }

    internal static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>Compiles a user's regular expression with a timeout, naming the option on error.</summary>
    public static Regex? Pattern(string? pattern, string option)
    {
        if (pattern is null)
        {
            return null;
        }

        try
        {
            return new Regex(pattern, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException e)
        {
            throw new RecyclingException($"{option} '{pattern}': not a valid regular expression: {e.Message}");
        }
    }
}
