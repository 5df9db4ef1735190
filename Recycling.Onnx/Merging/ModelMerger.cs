using System.Buffers;
using System.Diagnostics;
using System.Numerics.Tensors;
using System.Text.Json;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Proto;

namespace Recycling.Onnx.Merging;

/// <summary>A merge of fine-tuned exports into one model file.</summary>
public sealed record MergeRequest
{
    public required IReadOnlyList<string> Inputs { get; init; }

    public required string Output { get; init; }

    public string? Base { get; init; }

    public MergeOptions Options { get; init; } = new();

    public HeadPolicy Heads { get; init; } = HeadPolicy.Error;

    /// <summary>Element type of merged float tensors; null keeps each tensor's type in the template.</summary>
    public OnnxDataType? OutputType { get; init; }

    public ExternalDataMode ExternalData { get; init; } = ExternalDataMode.Auto;

    /// <summary>Proceed when inputs hold NaN or infinities (they are reported either way).</summary>
    public bool AllowNonFinite { get; init; }

    /// <summary>One diagonal-Fisher file per input (.onnx with initializers, or .npz arrays, keyed by the input's tensor names).</summary>
    public IReadOnlyList<string>? FisherFiles { get; init; }
}

public sealed record MergeSummary(int Parameters, int Merged, long BytesRead, long BytesWritten, TimeSpan Elapsed, string Kernels, IReadOnlyList<string> Notes)
{
    /// <summary>Signs that the merged model is likely broken (a task vector far longer than any input's); empty when none.</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];
}

/// <summary>
/// Streams a merge: aligns the inputs, then produces each merged tensor as the writer reaches it, reading the inputs in
/// place from their memory mappings, so peak memory is a few tensors whatever the model size. Linear methods read each
/// input once; global TIES first samples and counts magnitudes (one full pass; three when the sample misleads), Fisher first measures Fisher norms (one pass).
/// </summary>
public static class ModelMerger
{
    public const string ToolVersion = "0.1.0";

    public static MergeSummary Merge(MergeRequest request, IProgress<long>? bytesProgress = null)
    {
        var opened = new List<OnnxModel>();
        try
        {
            foreach (var path in request.Inputs)
            {
                opened.Add(OnnxModel.Open(path));
            }

            using var baseModel = request.Base is null ? null : OnnxModel.Open(request.Base);
            var plan = Aligner.Align(opened, baseModel, request.Heads);
            using var fishers = request.FisherFiles is null ? null : FisherSet.Open(request.FisherFiles, opened);
            return Merge(plan, request, fishers, bytesProgress);
        }
        finally
        {
            opened.ForEach(m => m.Dispose());
        }
    }

    internal static MergeSummary Merge(AlignmentPlan plan, MergeRequest request, FisherSet? fishers, IProgress<long>? bytesProgress)
    {
        var clock = Stopwatch.StartNew();
        var models = plan.Inputs.Concat(plan.Base is null ? [] : [plan.Base]).ToList();
        // One task per model beside the merge, so spare cores take the hashing (cached across runs).
        var hashing = Task.WhenAll(models.Select(m => Task.Run(() => new { file = Path.GetFileName(m.Path), sha256 = IngredientHashes.Sha256(m.Files) })));
        using var job = new MergeJob(plan, request.Options, request.OutputType, request.AllowNonFinite, fishers, bytesProgress);
        var lineage = job.Lineage();
        ModelWriter.Write(job.Structure, job.Items, request.Output, new OnnxWriteOptions { ExternalData = request.ExternalData, Metadata = lineage },
            models.SelectMany(m => m.Files).Concat(fishers?.Files ?? []),
            () => new Dictionary<string, string>
            {
                ["recycling.ingredients"] = JsonSerializer.Serialize(hashing.Result.Take(plan.Inputs.Count)),
                ["recycling.base"] = plan.Base is null ? "" : JsonSerializer.Serialize(hashing.Result[^1]),
            });

        var output = Path.GetFullPath(request.Output);
        var written = new FileInfo(output).Length + (job.Items.Any(i => i.Target.ExternalData.Count > 0) ? new FileInfo(output + ".data").Length : 0);
        return new MergeSummary(plan.Parameters.Count, job.MergedCount, job.BytesRead, written, clock.Elapsed, job.KernelName, job.Notes)
        {
            Warnings = job.Warning() is { } warning ? [warning] : [],
        };
    }

    /// <summary>
    /// Merges into an embedded ONNX model in memory, without touching the disk: for evaluating candidates (soups,
    /// interpolation curves) of small models. The plan's models must stay open until this returns.
    /// </summary>
    public static byte[] MergeToBytes(AlignmentPlan plan, MergeOptions options, OnnxDataType? outputType = null) =>
        MergeToBytes(plan, options, fishers: null, outputType);

    /// <summary>As <see cref="MergeToBytes(AlignmentPlan, MergeOptions, OnnxDataType?)"/>, with the Fisher tensors a Fisher merge needs.</summary>
    internal static byte[] MergeToBytes(AlignmentPlan plan, MergeOptions options, FisherSet? fishers, OnnxDataType? outputType = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        using var job = new MergeJob(plan, options, outputType, allowNonFinite: true, fishers, progress: null);
        using var stream = new MemoryStream();
        ModelWriter.WriteEmbedded(job.Structure, job.Items, stream, job.Lineage());
        return stream.ToArray();
    }

    /// <summary>One merge in progress: the kernels, the prepasses already run, and the structure and tensors to write.</summary>
    private sealed class MergeJob : IDisposable
    {
        private readonly AlignmentPlan _plan;
        private readonly MergeOptions _options;
        private readonly OnnxDataType? _outputType;
        private readonly bool _allowNonFinite;
        private readonly FisherSet? _fishers;
        private readonly IProgress<long>? _progress;
        private readonly IMergeKernels _kernels;
        private readonly TensorMerger _merger;
        private readonly TensorMerger _averager;
        private readonly Dictionary<string, float[]> _cache = [];
        private readonly OutputBuffers _buffers = new();
        private readonly HashSet<string> _tiedPrimaries;
        private readonly Dictionary<string, AlignedParameter> _byKey;
        private readonly TaskVectorNorms? _norms;
        private long _bytesRead;

        public MergeJob(AlignmentPlan plan, MergeOptions options, OnnxDataType? outputType, bool allowNonFinite, FisherSet? fishers, IProgress<long>? progress)
        {
            options.Validate(plan.Inputs.Count);
            if (options.RequiresBase && plan.Base is null)
            {
                throw new RecyclingException($"{options.Describe()} needs the base model: give it with --base");
            }

            if (options.RequiresFisher && fishers is null)
            {
                throw new RecyclingException("Fisher merging needs one Fisher file per input (--fisher)");
            }

            (_plan, _options, _outputType, _allowNonFinite, _fishers, _progress) = (plan, options, outputType, allowNonFinite, fishers, progress);
            _kernels = MergeKernels.Create(options.Device);
            _merger = new TensorMerger(options, plan.Inputs.Count, _kernels);
            // BatchNorm statistics follow an average's own weights (a soup of a subset), otherwise the uniform mean.
            _averager = new TensorMerger(new MergeOptions { Method = MergeMethod.Average, Weights = options.Method == MergeMethod.Average ? options.Weights : null, Device = options.Device }, plan.Inputs.Count, _kernels);
            _tiedPrimaries = plan.Parameters.Where(p => p.TiedTo is not null).Select(p => p.TiedTo!).ToHashSet();
            _byKey = plan.Parameters.ToDictionary(p => p.Key);
            _norms = TaskVectorNorms.Applies(options) ? new TaskVectorNorms(plan.Inputs.Count) : null;
            if (plan.Parameters.Any(p => p.IsBatchNormStatistic) && options.Method != MergeMethod.Average)
            {
                Notes.Add("BatchNorm running statistics were averaged over the inputs, not merged with " + options.Method + ", so variances stay non-negative");
            }

            if (plan.Parameters.Any(p => p.Transformed?.Contains("BatchNorm", StringComparison.Ordinal) == true))
            {
                Notes.Add("some weights were folded by the exporter (BatchNorm into Conv): averaging them approximates averaging the original parameters");
            }

            RunPrepasses();
            var builder = new MergedModelBuilder(plan);
            Items = builder.Build(ValuesFor, outputType);
            Structure = builder.Structure;
        }

        public ModelProto Structure { get; }

        public List<WriteItem> Items { get; }

        public List<string> Notes { get; } = [];

        public int MergedCount { get; private set; }

        public long BytesRead => Interlocked.Read(ref _bytesRead);

        public string KernelName => _kernels.Name;

        /// <summary>Once every tensor is merged: the warning of <see cref="TaskVectorNorms"/>, or null.</summary>
        public string? Warning() => _norms?.Warning(_options, [.. _plan.Inputs.Select(m => Path.GetFileName(m.Path))]);

        public Dictionary<string, string> Lineage()
        {
            var lineage = new Dictionary<string, string>
            {
                ["recycling.method"] = _options.Describe(),
                ["recycling.version"] = ToolVersion,
                ["recycling.heads"] = _plan.Heads.ToString().ToLowerInvariant(),
            };
            if (_outputType is not null)
            {
                lineage["recycling.dtype"] = _outputType.Value.ToString();
            }

            return lineage;
        }

        private void RunPrepasses()
        {
            var mergeable = _plan.Parameters.Where(p => p.IsFloat && !p.IsHead && p.TiedTo is null && !p.IsBatchNormStatistic).ToList();
            for (var pass = 0; _merger.NeedsPrepass(pass); pass++)
            {
                foreach (var p in mergeable)
                {
                    using var sources = new Sources(p, _fishers);
                    _merger.Prepass(pass, TensorId.FromKey(p.Key), sources.Inputs, sources.Base, sources.Fishers);
                }

                _merger.CompletePrepass(pass);
            }

            if (_merger.CountingPasses is { } counting && counting.Max() > 0)
            {
                Notes.Add(counting.Max() == 1
                    ? "TIES global trim: the inputs were read once to count task-vector magnitudes, guided by a sample"
                    : $"TIES global trim: the inputs were read {counting.Max()} times to count task-vector magnitudes (the sample's estimate missed for some model)");
            }
        }

        private Func<OnnxDataType, TensorReplacement>? ValuesFor(AlignedParameter p)
        {
            if (!p.IsFloat || (p.IsHead && _plan.Heads != HeadPolicy.Drop))
            {
                return null; // kept from the template: equal everywhere, or the chosen head
            }

            return templateType =>
            {
                if (p.TiedTo is null)
                {
                    MergedValues(p);
                }
                else
                {
                    MergedValues(_byKey[p.TiedTo]);
                    var primary = _cache[p.TiedTo]; // not the values buffer, which the copy is about to reuse
                    var copy = _buffers.Values(p.Tensors[0].ElementCount);
                    if (p.TiedTransposed)
                    {
                        Transpose(primary, p.Tensors[0].Shape, copy);
                    }
                    else
                    {
                        primary.CopyTo(copy);
                    }
                }

                return Encode(templateType);
            };
        }

        private ReadOnlySpan<float> MergedValues(AlignedParameter p)
        {
            if (_cache.TryGetValue(p.Key, out var cached))
            {
                return cached;
            }

            var output = _buffers.Values(p.Tensors[0].ElementCount);
            using (var sources = new Sources(p, _fishers))
            {
                if (p.IsBatchNormStatistic)
                {
                    _averager.Merge(TensorId.FromKey(p.Key), sources.Inputs, null, [], output);
                }
                else
                {
                    var measured = _norms is not null && sources.Base is not null;
                    if (measured)
                    {
                        _norms!.AddInputs(sources.Inputs, sources.Base!.Value); // before the kernels release the inputs' pages
                    }

                    _merger.Merge(TensorId.FromKey(p.Key), sources.Inputs, sources.Base, sources.Fishers, output);
                    if (measured)
                    {
                        _norms!.AddMerged(output);
                    }
                }

                var read = Interlocked.Add(ref _bytesRead, sources.Bytes); // not inside ?.Report(...): it must run without a listener
                _progress?.Report(read);
            }

            if (!TensorPrimitives.IsFiniteAll<float>(output))
            {
                ReportNonFinite(p, _allowNonFinite, Notes);
            }

            MergedCount++;
            if (_tiedPrimaries.Contains(p.Key))
            {
                _cache[p.Key] = output.ToArray();
            }

            return output;
        }

        /// <summary>The current values in the stored type. The writer consumes a replacement before asking for the next,
        /// so two reused buffers serve every tensor: no per-tensor arrays to collect.</summary>
        private TensorReplacement Encode(OnnxDataType templateType)
        {
            var type = _outputType is { } wanted && TensorSource.IsSupported(templateType) ? wanted : TensorSource.IsSupported(templateType) ? templateType : OnnxDataType.Float;
            return new TensorReplacement(type, _buffers.Encoded(type));
        }

        public void Dispose() => _kernels.Dispose();
    }

    private static void ReportNonFinite(AlignedParameter p, bool allow, List<string> notes)
    {
        var culprit = p.AllTensors.FirstOrDefault(t => !TensorPrimitives.IsFiniteAll<float>(t.ReadFloat32()));
        var where = culprit is null ? "the merge itself overflowed" : $"{culprit.Name} holds NaN or infinity in {culprit.Path}";
        var message = $"parameter {p.Key} ({p.Tensors[0].Name}): {where}";
        if (!allow)
        {
            throw new RecyclingException($"{message}; nothing was written (use --allow-nonfinite to merge anyway)");
        }

        notes.Add(message);
    }

    private static void Transpose(ReadOnlySpan<float> values, IReadOnlyList<long> copyShape, Span<float> result)
    {
        // The copy has shape [a, b]; the primary has shape [b, a].
        int a = (int)copyShape[0], b = (int)copyShape[1];
        for (var i = 0; i < a; i++)
        {
            for (var j = 0; j < b; j++)
            {
                result[(i * b) + j] = values[(j * a) + i];
            }
        }
    }

    /// <summary>Kernel views of one parameter's tensors: mapped bytes in place, or decoded copies for typed fields and other float types.</summary>
    private sealed unsafe class Sources : IDisposable
    {
        private readonly List<MemoryHandle> _pins = [];
        private readonly AlignedParameter _parameter;

        public Sources(AlignedParameter p, FisherSet? fishers)
        {
            _parameter = p;
            Inputs = [.. p.Tensors.Select(View)];
            Base = p.Base is null ? null : View(p.Base);
            Fishers = fishers is null ? [] : [.. p.Tensors.Select((t, i) => View(fishers.For(i, t)))];
            Bytes = p.AllTensors.Sum(t => t.ByteLength);
        }

        public TensorSource[] Inputs { get; }

        public TensorSource? Base { get; }

        public TensorSource[] Fishers { get; }

        public long Bytes { get; }

        private TensorSource View(OnnxTensor t)
        {
            if (t.Storage is TensorStorage.Raw or TensorStorage.External && TensorSource.IsSupported(t.DataType))
            {
                return new TensorSource(t.RawPointer, t.ElementCount, t.DataType) { IsMapped = true };
            }

            if (t.Storage == TensorStorage.Typed && TensorSource.IsSupported(t.DataType))
            {
                var pinned = TensorSource.Pin(t.ReadRawBytes(), t.DataType, out var pin);
                _pins.Add(pin);
                return pinned;
            }

            var widened = t.ReadFloat32();
            var source = TensorSource.Pin(System.Runtime.InteropServices.MemoryMarshal.AsBytes(widened.AsSpan()).ToArray(), OnnxDataType.Float, out var handle);
            _pins.Add(handle);
            return source;
        }

        private TensorSource View(float[] values)
        {
            var source = TensorSource.Pin(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray(), OnnxDataType.Float, out var handle);
            _pins.Add(handle);
            return source;
        }

        public void Dispose()
        {
            _pins.ForEach(p => p.Dispose());
            foreach (var t in _parameter.AllTensors)
            {
                t.ReleaseResidentPages();
            }
        }
    }

    /// <summary>Reused output buffers: the merged fp32 values of the current tensor and their encoded bytes.</summary>
    private sealed class OutputBuffers
    {
        private byte[] _values = [];
        private byte[] _encoded = [];
        private int _count;

        /// <summary>Room for <paramref name="count"/> fp32 values, valid until the next call.</summary>
        public Span<float> Values(long count)
        {
            var bytes = checked((int)(count * sizeof(float)));
            Grow(ref _values, bytes);
            _count = (int)count;
            return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(_values.AsSpan(0, bytes));
        }

        /// <summary>The last values as <paramref name="type"/>'s raw bytes (the values buffer itself for fp32).</summary>
        public ReadOnlyMemory<byte> Encoded(OnnxDataType type)
        {
            var bytes = _count * sizeof(float);
            if (type == OnnxDataType.Float)
            {
                return _values.AsMemory(0, bytes);
            }

            var length = (int)OnnxDataTypes.RawByteLength(type, _count);
            Grow(ref _encoded, length);
            ElementCodec.Encode(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(_values.AsSpan(0, bytes)), type, _encoded.AsSpan(0, length));
            return _encoded.AsMemory(0, length);
        }

        private static void Grow(ref byte[] buffer, int length)
        {
            if (buffer.Length < length)
            {
                buffer = GC.AllocateUninitializedArray<byte>(length);
            }
        }
    }
}
