using System.Buffers;
using System.Globalization;
using System.Numerics.Tensors;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Proto;

namespace Recycling.Onnx.Merging;

/// <summary>One merge in progress: the kernels, the prepasses already run, and the structure and tensors to write.</summary>
internal sealed class MergeJob : IDisposable
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
    private readonly ChunkBuffers _buffers = new();
    private readonly HashSet<string> _tiedPrimaries;
    private readonly Dictionary<string, AlignedParameter> _byKey;
    private readonly TaskVectorNorms? _norms;
    private long _bytesRead;
    private long _overflowed;
    private OnnxDataType _overflowType;

    public MergeJob(AlignmentPlan plan, MergeOptions options, OnnxDataType? outputType, bool allowNonFinite, FisherSet? fishers, IProgress<long>? progress)
    {
        options.Validate(plan.Inputs.Count, plan.Base is not null);
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
        _merger = new TensorMerger(options, plan.Inputs.Count, _kernels, plan.Base is not null);
        // BatchNorm statistics follow an average's own non-negative weights (a soup of a subset), otherwise the uniform mean.
        var soupWeights = _merger.Method is Methods.Linear && options.Weights is { } w && w.All(x => x >= 0) ? w : null;
        _averager = new TensorMerger(new MergeOptions { Method = MergeMethod.Average, Weights = soupWeights, Device = options.Device }, plan.Inputs.Count, _kernels);
        _tiedPrimaries = plan.Parameters.Where(p => p.TiedTo is not null).Select(p => p.TiedTo!).ToHashSet();
        _byKey = plan.Parameters.ToDictionary(p => p.Key);
        _norms = _merger.Method is Methods.TaskArithmeticFamily ? new TaskVectorNorms(plan.Inputs.Count) : null;
        if (plan.Parameters.Any(p => p.IsBatchNormStatistic) && _merger.Method is not Methods.Linear)
        {
            Notes.Add("BatchNorm running statistics were averaged over the inputs, not merged with " + _merger.Method.Name + ", so variances stay non-negative");
        }

        if (_merger.Method is Methods.TaskArithmeticFamily { Sparsification: not Methods.Sparsification.None } family
            && _merger.Arguments.PerModel("density").All(d => d >= 1))
        {
            Notes.Add($"{family.Name} at density 1 (mergekit's default) keeps every task-vector entry; give a density (e.g. --density 0.2) to sparsify");
        }

        if (plan.Parameters.Any(p => p.Transform == ParameterTransform.FoldedIntoConv))
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

    /// <summary><see cref="Notes"/>, and how many values overflowed a narrower output type (with AllowOverflow).</summary>
    public IReadOnlyList<string> SummaryNotes() => _overflowed == 0 ? Notes
        : [.. Notes, $"{_overflowed} merged values exceeded the {OverflowRange(_overflowType)} and were stored as infinity (allowed by --allow-overflow)"];

    /// <summary>Once every tensor is merged: the warning of <see cref="TaskVectorNorms"/>, or null.</summary>
    public string? Warning() => _norms?.Warning(_options, [.. _plan.Inputs.Select(m => Path.GetFileName(m.Path))]);

    public Dictionary<string, string> Lineage()
    {
        var lineage = new Dictionary<string, string>
        {
            ["recycling.method"] = _options.Describe(),
            ["recycling.version"] = ModelMerger.ToolVersion,
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
                _merger.Prepass(pass, Info(p), new ParameterChunks(p, _fishers, _buffers));
            }

            _merger.CompletePrepass(pass);
        }

        Notes.AddRange(_merger.Notes);
    }

    private static Methods.TensorInfo Info(AlignedParameter p) => new(TensorId.FromKey(p.Key), p.Tensors[0].Name, p.Tensors[0].Shape);

    private Func<OnnxDataType, TensorReplacement>? ValuesFor(AlignedParameter p)
    {
        if (!p.IsFloat || (p.IsHead && _plan.Heads != HeadPolicy.Drop))
        {
            return null; // kept from the template: equal everywhere, or the chosen head
        }

        return templateType =>
        {
            var type = _outputType is { } wanted && TensorSource.IsSupported(templateType) ? wanted : TensorSource.IsSupported(templateType) ? templateType : OnnxDataType.Float;
            var count = p.Tensors[0].ElementCount;
            return TensorReplacement.Streamed(type, OnnxDataTypes.RawByteLength(type, count), stream => Produce(p, type, stream));
        };
    }

    /// <summary>Writes parameter <paramref name="p"/>'s merged values as <paramref name="type"/> to <paramref name="stream"/>, chunk by chunk.</summary>
    private void Produce(AlignedParameter p, OnnxDataType type, Stream stream)
    {
        var sink = new StreamSink(stream, type, _buffers, overflowed => Overflowed(p, type, overflowed));
        if (p.TiedTo is null)
        {
            Merge(p, sink);
            return;
        }

        var primary = _byKey[p.TiedTo];
        if (primary.Tensors[0].ElementCount > ParameterChunks.ChunkElementCount)
        {
            if (p.TiedTransposed)
            {
                throw new RecyclingException($"parameter {p.Key} ({p.Tensors[0].Name}) is a transposed copy of {primary.Key}, which has {primary.Tensors[0].ElementCount} elements: transposed tied copies are merged only up to {ParameterChunks.ChunkElementCount} elements");
            }

            Merge(primary, sink); // too large to keep: merged again (same tensor id, same values)
            return;
        }

        if (!_cache.TryGetValue(primary.Key, out var cached))
        {
            Merge(primary, null);
            cached = _cache[primary.Key];
        }

        var copy = _buffers.Values(cached.Length);
        if (p.TiedTransposed)
        {
            Transpose(cached, p.Tensors[0].Shape, copy);
        }
        else
        {
            cached.CopyTo(copy);
        }

        sink.Write(0, copy);
    }

    /// <summary>Merged values beyond the stored type's range: an error unless allowed, then counted for the summary.</summary>
    private void Overflowed(AlignedParameter p, OnnxDataType type, long overflowed)
    {
        if (!_options.AllowOverflow)
        {
            throw new RecyclingException(
                $"{_plan.Inputs[0].Path}: tensor '{p.Tensors[0].Name}' (parameter {p.Key}): {overflowed} merged values exceed the {OverflowRange(type)} and would become infinity; " +
                "nothing was written (keep fp32 with --dtype fp32, or use --allow-overflow to store them as infinity)");
        }

        Interlocked.Add(ref _overflowed, overflowed);
        _overflowType = type;
    }

    private void Merge(AlignedParameter p, StreamSink? sink)
    {
        var chunks = new ParameterChunks(p, _fishers, _buffers);
        var output = _buffers.Values(Math.Min(chunks.Length, chunks.ChunkElements));
        var keep = _tiedPrimaries.Contains(p.Key) && chunks.Length <= chunks.ChunkElements;
        var checkedSink = new CheckedSink(sink, chunks, p, this, keep ? new float[chunks.Length] : null);
        (p.IsBatchNormStatistic ? _averager : _merger).Merge(Info(p), chunks, output, checkedSink);
        if (checkedSink.Kept is { } kept)
        {
            _cache[p.Key] = kept;
        }

        MergedCount++;
        var read = Interlocked.Add(ref _bytesRead, p.AllTensors.Sum(t => t.ByteLength)); // not inside ?.Report(...): it must run without a listener
        _progress?.Report(read);
    }

    /// <summary>Checks each merged chunk for NaN and infinity (naming the input that holds them) and keeps a copy of tied primaries.</summary>
    private sealed class CheckedSink(StreamSink? inner, ParameterChunks chunks, AlignedParameter p, MergeJob job, float[]? kept) : TensorMerger.ITensorSink
    {
        private bool _reported;

        public float[]? Kept => kept;

        public void Write(long offset, ReadOnlySpan<float> values)
        {
            if (!_reported && !TensorPrimitives.IsFiniteAll(values))
            {
                _reported = true;
                ReportNonFinite(p, chunks.NonFiniteInput(), job._allowNonFinite, job.Notes);
            }

            if (kept is not null)
            {
                values.CopyTo(kept.AsSpan((int)offset));
            }

            if (job._norms is not null && !p.IsBatchNormStatistic && chunks.Base is { } baseChunk)
            {
                job._norms.AddChunk(chunks.Inputs, baseChunk, values, offset, chunks.Length); // while the chunk is loaded
            }

            inner?.Write(offset, values);
        }

        public void Patch(long index, float value)
        {
            if (kept is not null)
            {
                kept[index] = value;
            }

            inner?.Patch(index, value);
        }
    }

    /// <summary>"fp16 range (±65504)", "bf16 range (±3.39e38)".</summary>
    internal static string OverflowRange(OnnxDataType type)
    {
        var row = ElementTypes.Of(type);
        var exponent = (int)Math.Floor(Math.Log10(row.MaxFinite));
        var limit = exponent < 6
            ? row.MaxFinite.ToString("0", CultureInfo.InvariantCulture)
            : string.Create(CultureInfo.InvariantCulture, $"{row.MaxFinite / Math.Pow(10, exponent):0.##}e{exponent}");
        return $"{row.Name} range (±{limit})";
    }

    public void Dispose() => _kernels.Dispose();

    private static void ReportNonFinite(AlignedParameter p, OnnxTensor? culprit, bool allow, List<string> notes)
    {
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
}
