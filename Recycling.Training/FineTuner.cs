using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Onnx.IO;
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

    /// <summary>How text data are read for a model that takes token ids (null: the defaults); must be null for other models.</summary>
    public TextDataOptions? Text { get; init; }

    /// <summary>A new head attached before training (null: train the model's own output).</summary>
    public HeadSpec? Head { get; init; }

    /// <summary>Resize, grey to RGB, normalisation of every sample (train, validation, check). Grey data fed to a model
    /// that declares 3 channels is copied to 3 channels even when this is null.</summary>
    public ImagePreprocessing? Preprocessing { get; init; }

    /// <summary>The weights written: the last epoch's, or the best epoch's by validation accuracy (needs <see cref="Validation"/>).</summary>
    public KeepWeights Keep { get; init; } = KeepWeights.Last;

    /// <summary>Write the uniform average of the end-of-epoch weights (BatchNorm running statistics too) of the last K epochs run (all when K is at least their number); null: no averaging.</summary>
    public int? AverageEpochs { get; init; }

    /// <summary>A JSON Lines file rewritten after every epoch, one object per epoch so far.</summary>
    public string? Log { get; init; }

    /// <summary>Where the written model keeps its tensors; Auto: external data only past the 2 GiB protobuf limit.</summary>
    public ExternalDataMode ExternalData { get; init; } = ExternalDataMode.Auto;

    /// <summary>Where and how often the run saves a checkpoint it resumes from when rerun after a kill.</summary>
    public CheckpointSettings Checkpoint { get; init; } = new();

    /// <summary>Where LibTorch trains (not part of the checkpoint's fingerprint: a run may resume on another device).</summary>
    public TrainingDevice Device { get; init; } = TrainingDevice.Cpu;
}

public enum KeepWeights
{
    Last,
    Best,
}

/// <summary>One epoch's figures.</summary>
public sealed record EpochReport(int Epoch, int Steps, double TrainLoss, double? ValidationLoss, double? ValidationAccuracy, double SamplesPerSecond)
{
    /// <summary>The learning rate of the epoch's last step.</summary>
    public double LearningRate { get; init; }
}

/// <summary>The outcome of a fine-tuning run; <paramref name="KeptEpochs"/>: the epochs whose end weights were written (several when averaged).</summary>
public sealed record FineTuneResult(string Output, string TrainedOutput, int TrainableTensors, long TrainableValues, IReadOnlyList<EpochReport> Epochs,
    double OnnxRuntimeGap, int CheckedSamples, IReadOnlyList<int> KeptEpochs)
{
    /// <summary>The optimizer step the run resumed at from its checkpoint; null: it ran from the beginning.</summary>
    public int? ResumedAtStep { get; init; }
}

/// <summary>
/// Fine-tunes an ONNX model with TorchSharp: cross-entropy on one output, the graph's float initializers trained in
/// place, the result written as the same model with new values (and updated BatchNorm running statistics), then
/// checked: ONNX Runtime on the written file must reproduce the trained program's eval-mode outputs.
/// </summary>
public static class FineTuner
{
    /// <summary>Largest relative gap (max |ORT − TorchSharp| / max |TorchSharp|) accepted between the written model and the trained program
    /// (float32 and float64 models; float16 and bfloat16 ones: <see cref="MixedPrecision.OnnxRuntimeTolerance"/>).</summary>
    public const double OnnxRuntimeTolerance = 1e-4;

    private const int CheckSamples = 64;

    /// <summary>One line per node of <paramref name="modelPath"/> that cannot run (empty: all can).</summary>
    public static IReadOnlyList<string> Check(string modelPath)
    {
        using var model = OnnxModel.Open(modelPath);
        return OnnxProgram.Check(model);
    }

    /// <summary>Trains and writes <see cref="FineTuneOptions.Output"/>; <paramref name="progress"/> gets a line per epoch, <paramref name="status"/> one per step.</summary>
    public static FineTuneResult Run(FineTuneOptions options, Action<string>? progress = null, IProgress<string>? status = null) => RunWithNotices(options, progress, status, progress);

    /// <param name="notice">Gets the checkpoint's lines (resumed, not used, ignored).</param>
    internal static FineTuneResult RunWithNotices(FineTuneOptions options, Action<string>? progress, IProgress<string>? status, Action<string>? notice)
    {
        ArgumentNullException.ThrowIfNull(options);
        Validate(options);
        var device = TrainingDevices.Resolve(options.Device, notice);
        try
        {
            return Train(options, device, progress, status, notice);
        }
        catch (Exception e) when (LibTorchError.InFineTuning(e, options.Model) is { } failure)
        {
            throw failure;
        }
    }

    private static FineTuneResult Train(FineTuneOptions options, Device device, Action<string>? progress, IProgress<string>? status, Action<string>? notice)
    {
        using var original = OnnxModel.Open(options.Model);
        var data = TrainingData.For(original, options.Text);
        var train = data.Load(options.Train);
        var validation = options.Validation is null ? null : data.Load(options.Validation);
        var preprocessing = PreparedModel.Preprocessing(original, train, options.Preprocessing);
        using var prepared = PreparedModel.Prepare(original, options.Head, train, preprocessing, device);
        var model = prepared.Model;
        using var program = OnnxProgram.Load(model, options.Parameters, device: device);
        var feeder = BatchFeeder.For(program, original.Path, train, preprocessing);
        var head = prepared.Head is null ? null : prepared.InitializeHead(program, feeder, train, options.Head!.Init, options.Seed, options.Head.ProbeL2);
        var output = ChooseOutput(program, original.Path, options.OutputName);
        feeder.CheckLabels(program, output, train, validation);

        var checkpoint = Checkpoint.For(options, InputFiles.Of([options.Model], [.. DatasetLoader.Files(options.Train), .. options.Validation is null ? [] : DatasetLoader.Files(options.Validation)]));
        var (reports, kept, resumedAt) = new TrainingLoop(program, feeder, options, train, validation).Run(output, progress, status, checkpoint, notice);
        Write(model, program, options, train, validation, kept, head, preprocessing);
        var checkData = Subset(validation ?? train, CheckSamples);
        double gap;
        var checkedSamples = checkData.Count;
        try
        {
            gap = CompareWithOnnxRuntime(program, feeder, output, options.Output, checkData, preprocessing);
        }
        catch (OnnxRuntimeRun.NoKernelException e) when (!OnnxRuntimeRun.Loads(options.Model))
        {
            // ONNX Runtime lacks a kernel the parent needs as much (float64 Conv on the CPU): nothing to compare with.
            notice?.Invoke($"notice: {e.Message}, nor its parent {MessageText.Path(options.Model)}: the written model was not checked by ONNX Runtime");
            (gap, checkedSamples) = (0, 0);
        }

        var tolerance = MixedPrecision.OnnxRuntimeTolerance(program);
        if (!(gap <= tolerance))
        {
            throw new RecyclingException($"{options.Output}: ONNX Runtime's outputs differ from the trained program's by {gap:G3} (relative), more than {tolerance:G2}; the written model is not trustworthy");
        }

        checkpoint?.Finish();
        return new FineTuneResult(Path.GetFullPath(options.Output), output, program.Trainable.Count(), program.Trainable.Sum(p => p.numel()), reports, gap, checkedSamples, kept) { ResumedAtStep = resumedAt };
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

        if (o.Checkpoint is { } c && (c.EverySteps is < 0 || (!c.Enabled && (c.Folder is not null || c.EverySteps is not null || c.Restart || c.KeepAfterSuccess))))
        {
            throw new RecyclingException(c.EverySteps is < 0 ? $"--checkpoint-every must be at least 0 (0: only at epoch ends), not {c.EverySteps}"
                : "--no-checkpoint excludes --checkpoint, --checkpoint-every, --restart and --keep-checkpoint");
        }

        if (o.Settings.WarmupSteps < 0 || o.AverageEpochs is < 1)
        {
            throw new RecyclingException($"warmup steps ({o.Settings.WarmupSteps}) must be at least 0 and averaged epochs ({o.AverageEpochs}) at least 1");
        }

        if (o.Keep == KeepWeights.Best && (o.Validation is null || o.AverageEpochs is not null))
        {
            throw new RecyclingException(o.Validation is null ? "--keep best needs validation data (--test)" : "--keep best and --average-epochs exclude each other: choose one epoch or an average");
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

    private static void Write(OnnxModel model, OnnxProgram program, FineTuneOptions options, Dataset train, Dataset? validation, IReadOnlyList<int> kept, LinearHead? head, ImagePreprocessing? preprocessing)
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
            ["recycling.finetune.train_sha256"] = DataSha256(options.Train),
            ["recycling.finetune.settings"] = JsonSerializer.Serialize(new
            {
                optimizer = options.Settings.Optimizer.ToString().ToLowerInvariant(),
                lr = options.Settings.LearningRate,
                momentum = options.Settings.Momentum,
                nesterov = options.Settings.Nesterov,
                weight_decay = options.Settings.EffectiveWeightDecay,
                label_smoothing = options.Settings.LabelSmoothing,
                max_grad_norm = options.Settings.MaxGradNorm,
                schedule = options.Settings.Schedule.ToString().ToLowerInvariant(),
                warmup_steps = options.Settings.WarmupSteps,
                batchnorm = options.Settings.BatchNorm.ToString().ToLowerInvariant(),
                epochs = options.Epochs,
                max_steps = options.MaxSteps,
                batch_size = options.BatchSize,
                seed = options.Seed,
                shuffle = options.Shuffle,
                validation = validation?.Name,
                head = head is null ? null : new { at = head.At, classes = head.Classes, features = head.Features, init = options.Head!.Init.ToString().ToLowerInvariant() },
                preprocessing = preprocessing?.ToString(),
                validation_sha256 = options.Validation is null ? null : DataSha256(options.Validation),
                keep = options.Keep.ToString().ToLowerInvariant(),
                average_epochs = options.AverageEpochs,
                kept_epochs = kept,
            }),
            ["recycling.finetune.tool"] = $"Recycling.Training {typeof(FineTuner).Assembly.GetName().Version}",
        };
        OnnxWriter.Write(model, options.Output, new OnnxWriteOptions { Metadata = metadata, ExternalData = options.ExternalData }, tensor =>
            tensor.Kind == TensorKind.Initializer && tensor.Path == $"graph/initializer[{tensor.Name}]" && values.TryGetValue(tensor.Name, out var value)
                ? Replacement(value, program.StoredType(tensor.Name, value), tensor.Name)
                : null);
    }

    /// <summary>A trained value in the type the model stores it in (rounded to nearest even when narrower than its master).</summary>
    private static TensorReplacement Replacement(Tensor value, ScalarType stored, string name) =>
        stored == ScalarType.Float32
            ? new TensorReplacement(OnnxDataType.Float, TensorConversion.Float32Bytes(value))
            : new TensorReplacement(MixedPrecision.OnnxType(stored), MixedPrecision.Bytes(value, stored, name));

    private static double CompareWithOnnxRuntime(OnnxProgram program, BatchFeeder feeder, string output, string path, Dataset data, ImagePreprocessing? preprocessing)
    {
        float[] ours;
        using (var batch = feeder.Batch(data, [.. Enumerable.Range(0, data.Count)]))
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            ours = TensorConversion.Floats(program.Forward(batch.Feeds, new OpContext(), [output])[output]);
        }

        float[] theirs;
        if (feeder.FeedsTokens || feeder.InputType != ScalarType.Float32)
        {
            using var batch = feeder.Batch(data, [.. Enumerable.Range(0, data.Count)]);
            theirs = OnnxRuntimeRun.Output(path, batch.Feeds, output);
        }
        else
        {
            using var scorer = OnnxScorer.Open(path, new ScoringOptions { Threads = 1 });
            theirs = scorer.Run(preprocessing?.Apply(data) ?? data, output).Data;
        }

        return RelativeGap(ours, theirs, path, output, "the trained program");
    }

    /// <summary>max |ours − ONNX Runtime's| / max |ours|: how far the written model's outputs are from the program's.</summary>
    internal static double RelativeGap(float[] ours, float[] theirs, string path, string output, string what)
    {
        if (theirs.Length != ours.Length)
        {
            throw new RecyclingException($"{path}: ONNX Runtime gives {theirs.Length} values for '{output}', {what} {ours.Length}");
        }

        double gap = 0, scale = 1e-12;
        for (var i = 0; i < ours.Length; i++)
        {
            gap = Math.Max(gap, Math.Abs(ours[i] - (double)theirs[i]));
            scale = Math.Max(scale, Math.Abs((double)ours[i]));
        }

        return gap / scale;
    }

    /// <summary>SHA-256 of the bytes of the files a data spec reads (images, labels, domains), one after another in that order (one file: its own SHA-256).</summary>
    internal static string DataSha256(string spec)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        foreach (var file in DatasetLoader.Files(spec).Where(File.Exists).Distinct(StringComparer.Ordinal))
        {
            using var stream = File.OpenRead(file);
            for (int read; (read = stream.Read(buffer)) > 0;)
            {
                hash.AppendData(buffer, 0, read);
            }
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
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
