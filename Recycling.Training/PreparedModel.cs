using System.Runtime;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Probing;
using Recycling.Onnx;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>
/// The model <see cref="FineTuner"/> trains: the original when it can train as it is, else a temporary copy with a
/// new head (<see cref="HeadSpec"/>) and/or its fixed batch axis made dynamic. Disposing deletes the copy.
/// </summary>
internal sealed class PreparedModel : IDisposable
{
    /// <summary>Most feature values (samples × features) a probe initialisation holds in memory.</summary>
    private const long MaxProbeValues = 1L << 28;

    private readonly string? _folder;
    private readonly bool _owned;

    private readonly (string Weight, string Bias)? _headNames;

    private PreparedModel(OnnxModel model, bool owned, string? folder, LinearHead? head, (string Weight, string Bias)? headNames)
    {
        _headNames = headNames;
        Model = model;
        _owned = owned;
        _folder = folder;
        Head = head;
    }

    public OnnxModel Model { get; }

    /// <summary>The attached head (its weights as initialised before training), or null.</summary>
    public LinearHead? Head { get; }

    /// <param name="device">Where the head's width is measured (one forward pass of the original model).</param>
    public static PreparedModel Prepare(OnnxModel original, HeadSpec? spec, Dataset train, ImagePreprocessing? preprocessing, Device? device = null)
    {
        var fixedBatch = DynamicBatch.FixedBatch(original.Proto.Graph);
        var sampleShape = NewSampleShape(original, train, preprocessing);
        if (spec is null && fixedBatch is null && sampleShape is null)
        {
            return new PreparedModel(original, owned: false, null, null, null);
        }

        LinearHead? head = null;
        if (spec is not null)
        {
            var at = spec.At ?? HeadAttachment.DefaultCut(original);
            HeadAttachment.CheckCut(original, at);
            var classes = spec.Classes ?? Math.Max(train.ClassCount, 2);
            if (classes is < 2 or > HeadSpec.MaxClasses)
            {
                throw new RecyclingException($"a head of {classes} classes: use 2..{HeadSpec.MaxClasses}");
            }

            var features = FeatureCount(original, at, train, preprocessing, (int)(fixedBatch ?? 1), classes, device ?? CPU);
            CollectPreparationGarbage();
            head = new LinearHead(at, classes, features, new float[(long)classes * features], new float[classes]);
        }

        var folder = Directory.CreateTempSubdirectory("recycling-finetune-").FullName;
        try
        {
            var path = Path.Combine(folder, "prepared.onnx");
            var names = HeadAttachment.Write(original, path, head, new OnnxWriteOptions { ExternalData = ExternalDataMode.Auto }, sampleShape);
            CollectPreparationGarbage();
            return new PreparedModel(OnnxModel.Open(path), owned: true, folder, head, names);
        }
        catch
        {
            Directory.Delete(folder, recursive: true);
            throw;
        }
    }

    /// <summary>
    /// Collects what sizing the head and writing the copy left behind before the caller loads the program that trains,
    /// so that the two do not add up at the process's peak: the write leaves about twice the weights as managed garbage
    /// (ResNet18: 80–120 MiB), which the runtime would otherwise keep until a later collection. Only a full, compacting
    /// collection returns freed large objects to the system.
    /// </summary>
    private static void CollectPreparationGarbage()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    /// <summary>The preprocessing <paramref name="requested"/>, with grey data copied to 3 channels when the model's
    /// single input declares [N, 3, H, W] and the channel count was not given; null when there is nothing to do.</summary>
    public static ImagePreprocessing? Preprocessing(OnnxModel model, Dataset train, ImagePreprocessing? requested) =>
        ImagePreprocessing.ForModel(ImagePreprocessing.InputDims(model), train, requested);

    /// <summary>The preprocessed sample shape when it differs from the single input's declared one (null: unchanged).</summary>
    private static long[]? NewSampleShape(OnnxModel model, Dataset train, ImagePreprocessing? preprocessing)
    {
        if (preprocessing is null)
        {
            return null;
        }

        var shape = preprocessing.OutputShape(train.SampleShape, train.Name).Select(d => (long)d).ToArray();
        var graph = model.Proto.Graph;
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var dims = graph.Input.Where(i => !initializers.Contains(i.Name)).Select(i => i.Type?.TensorType?.Shape?.Dim).ToList();
        var declared = dims is [{ Count: > 1 } d] ? d.Skip(1).Select(x => x.ValueCase == Onnx.Proto.TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? x.DimValue : -1).ToArray() : null;
        return declared is not null && declared.Length == shape.Length && declared.Zip(shape).All(p => p.First == -1 || p.First == p.Second) ? null : shape;
    }

    /// <summary>Sets the head's parameters in <paramref name="program"/> as <paramref name="init"/> says; returns the values set.</summary>
    public LinearHead InitializeHead(OnnxProgram program, BatchFeeder feeder, Dataset train, HeadInit init, int seed, double? probeL2 = null)
    {
        var head = Head ?? throw new InvalidOperationException("no head attached");
        var (weightName, biasName) = _headNames!.Value;
        var (weight, bias) = init switch
        {
            HeadInit.Zeros => (head.Weight, head.Bias),
            HeadInit.Random => RandomLinear(head.Features, head.Classes, seed),
            HeadInit.Probe => Probe(program, feeder, train, head, seed, probeL2),
            _ => throw new ArgumentOutOfRangeException(nameof(init)),
        };

        using (no_grad())
        {
            program.Parameters[weightName].copy_(tensor(weight, [head.Classes, head.Features], device: program.Device));
            program.Parameters[biasName].copy_(tensor(bias, [head.Classes], device: program.Device));
        }

        return head with { Weight = weight, Bias = bias };
    }

    /// <summary>PyTorch's nn.Linear(features, classes) initialisation after torch.manual_seed(seed): kaiming-uniform with
    /// a = sqrt(5) for W, i.e. U(±1/sqrt(features)), then U(±1/sqrt(features)) for b, drawn in that order. Drawn from a
    /// generator of its own seeded alike (the same numbers), so that runs on other threads cannot draw in between.</summary>
    internal static (float[] Weight, float[] Bias) RandomLinear(int features, int classes, int seed)
    {
        using var generator = new Generator((ulong)seed);
        var a = Math.Sqrt(5);
        var weightBound = Math.Sqrt(3.0) * (Math.Sqrt(2.0 / (1 + (a * a))) / Math.Sqrt(features));
        var biasBound = 1 / Math.Sqrt(features);
        using var weight = empty([classes, features], device: CPU);
        using var bias = empty([classes], device: CPU);
        weight.uniform_(-weightBound, weightBound, generator);
        bias.uniform_(-biasBound, biasBound, generator);
        return (TensorConversion.Floats(weight), TensorConversion.Floats(bias));
    }

    /// <summary>Features at the cut for every training sample (eval mode), flattened per sample.</summary>
    internal static FloatMatrix Features(OnnxProgram program, BatchFeeder feeder, Dataset data, string at, int features, int batchSize = 64)
    {
        if ((long)data.Count * features > MaxProbeValues)
        {
            throw new RecyclingException($"{MessageText.Path(data.Name)}: a probe on {data.Count} samples × {features} features would hold more than {MaxProbeValues} values; cut at a smaller value or use fewer samples");
        }

        var values = new float[data.Count * features];
        for (var start = 0; start < data.Count; start += batchSize)
        {
            var count = Math.Min(batchSize, data.Count - start);
            using var batch = feeder.Batch(data, [.. Enumerable.Range(start, count)]);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var value = program.Forward(batch.Feeds, new OpContext(), [at])[at];
            if (value.dim() < 1 || value.shape[0] != count || value.numel() != (long)count * features)
            {
                throw new RecyclingException($"'{at}' has shape [{string.Join(",", value.shape)}] for a batch of {count}: a head needs the batch as its first axis and {features} values per sample");
            }

            TensorConversion.Floats(value.to_type(ScalarType.Float32)).CopyTo(values, start * features);
        }

        return new FloatMatrix(data.Count, features, values);
    }

    public void Dispose()
    {
        if (_owned)
        {
            Model.Dispose();
        }

        if (_folder is not null)
        {
            try
            {
                Directory.Delete(_folder, recursive: true);
            }
            catch (IOException)
            {
                // A temporary folder left behind is harmless.
            }
        }
    }

    private static (float[] Weight, float[] Bias) Probe(OnnxProgram program, BatchFeeder feeder, Dataset train, LinearHead head, int seed, double? l2)
    {
        if (train.ClassCount > head.Classes)
        {
            throw new RecyclingException($"{MessageText.Path(train.Name)}: labels go up to {train.ClassCount - 1} but the head has {head.Classes} classes");
        }

        var features = Features(program, feeder, train, head.At, head.Features);
        return HeadProbe.Fit(features, train.Labels, head.Classes, seed, l2 ?? new ProbeOptions().L2, MessageText.Path(train.Name));
    }

    /// <summary>Values per sample at <paramref name="at"/>, from one batch of the original graph (the fixed batch size, if any).</summary>
    private static int FeatureCount(OnnxModel original, string at, Dataset train, ImagePreprocessing? preprocessing, int batch, int classes, Device device)
    {
        if (train.Count < batch)
        {
            throw new RecyclingException($"{MessageText.Path(train.Name)}: {train.Count} samples, the model's fixed batch is {batch}");
        }

        using var body = OnnxProgram.Load(original, new ParameterSelection(), device: device);
        var feeder = BatchFeeder.For(body, original.Path, train, preprocessing);
        using var samples = feeder.Batch(train, [.. Enumerable.Range(0, batch)]);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var value = body.Forward(samples.Feeds, new OpContext(), [at])[at];
        if (value.dtype != ScalarType.Float32)
        {
            throw new RecyclingException($"{MessageText.Path(original.Path)}: '{at}' is {value.dtype}; a head reads float32 values");
        }

        if (value.dim() < 1 || value.shape[0] != batch)
        {
            throw new RecyclingException($"{MessageText.Path(original.Path)}: '{at}' has shape [{string.Join(",", value.shape)}] for a batch of {batch}: a head needs the batch as its first axis");
        }

        var features = value.numel() / batch;
        return features >= 1 && features * classes <= Array.MaxLength ? (int)features
            : throw new RecyclingException($"{MessageText.Path(original.Path)}: '{at}' has {features} values per sample; a head of {classes} classes needs 1..{Array.MaxLength / classes}");
    }
}
