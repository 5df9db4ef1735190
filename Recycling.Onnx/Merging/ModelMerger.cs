using System.Buffers;
using System.Diagnostics;
using System.Numerics.Tensors;
using System.Text.Json;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.IO;
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

    /// <summary>More entries for the written model's lineage metadata (e.g. recycling.tuning), beside the merge's own.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }
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
        var inputFiles = models.SelectMany(m => m.Files).Concat(fishers?.Files ?? []).ToList();
        ModelWriter.Prepare(request.Output, new InputFiles(inputFiles), request.ExternalData); // before the prepasses, which may take long
        // One task per model beside the merge, so spare cores take the hashing (cached across runs).
        var hashing = Task.WhenAll(models.Select(m => Task.Run(() => new { file = Path.GetFileName(m.Path), sha256 = IngredientHashes.Sha256(m.OpenedFiles) })));
        using var job = new MergeJob(plan, request.Options, request.OutputType, request.AllowNonFinite, fishers, bytesProgress);
        var lineage = job.Lineage();
        foreach (var (key, value) in request.Metadata ?? new Dictionary<string, string>())
        {
            lineage[key] = value;
        }

        var written = ModelWriter.Write(job.Structure, job.Items, request.Output, new OnnxWriteOptions { ExternalData = request.ExternalData, Metadata = lineage },
            inputFiles,
            () => LateLineage(models, hashing, plan));

        if (request.ExternalData == ExternalDataMode.Auto && job.Items.Any(i => i.Target.ExternalData.Count > 0))
        {
            job.Notes.Add("the merged model is over the 2 GiB protobuf limit embedded, so its tensors were written as external data beside it");
        }

        return new MergeSummary(plan.Parameters.Count, job.MergedCount, job.BytesRead, written, clock.Elapsed, job.KernelName, job.SummaryNotes())
        {
            Warnings = job.Warning() is { } warning ? [warning] : [],
        };
    }

    /// <summary>
    /// The input hashes, once every tensor was merged: the model is written only when no input changed in place meanwhile
    /// (the hashes and the merge read the same opened files, so a path replaced or deleted meanwhile changes neither).
    /// </summary>
    private static Dictionary<string, string> LateLineage<T>(List<OnnxModel> models, Task<T[]> hashing, AlignmentPlan plan)
    {
        try
        {
            hashing.Wait();
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }

        models.ForEach(m => m.CheckUnchanged());
        var hashes = hashing.Result;
        return new Dictionary<string, string>
        {
            ["recycling.ingredients"] = JsonSerializer.Serialize(hashes.Take(plan.Inputs.Count)),
            ["recycling.base"] = plan.Base is null ? "" : JsonSerializer.Serialize(hashes[^1]),
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
        using var job = new MergeJob(plan, options with { AllowOverflow = true }, outputType, allowNonFinite: true, fishers, progress: null);
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

        private static string OverflowRange(OnnxDataType type) => type == OnnxDataType.Float16
            ? "fp16 range (±65504)" : "bf16 range (±3.39e38)";

        public void Dispose() => _kernels.Dispose();
    }

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

    /// <summary>
    /// One parameter's tensors read a chunk at a time through the files' handles (pread) into reused pinned buffers: never
    /// through the memory mapping, so an input shortened by another process mid-merge is an error naming it, not SIGBUS,
    /// and a tensor of any size is merged in bounded memory. Float32/16/bf16 values are copied as stored; typed fields
    /// (decoded once) and other float types are widened to fp32.
    /// </summary>
    private sealed unsafe class ParameterChunks : ITensorChunks
    {
        /// <summary>1 Mi elements (4 MiB of fp32 per input): a multiple of the TIES sample stride and of the kernels' chunks,
        /// large enough that a kernel call spreads over every core.</summary>
        public const int ChunkElementCount = 1 << 20;

        private readonly OnnxTensor[] _tensors;
        private readonly float[][]? _fisherValues;
        private readonly byte[]?[] _typed;
        private readonly ChunkBuffers _buffers;
        private readonly TensorSource[] _inputs;
        private readonly TensorSource[] _fishers;
        private TensorSource? _base;
        private long _offset;
        private int _count;

        public ParameterChunks(AlignedParameter p, FisherSet? fishers, ChunkBuffers buffers)
        {
            _tensors = [.. p.Tensors, .. p.Base is null ? Array.Empty<OnnxTensor>() : [p.Base]];
            _fisherValues = fishers is null ? null : [.. p.Tensors.Select((t, i) => fishers.For(i, t))];
            _typed = new byte[]?[_tensors.Length];
            _buffers = buffers;
            _inputs = new TensorSource[p.Tensors.Count];
            _fishers = new TensorSource[_fisherValues?.Length ?? 0];
            _base = p.Base is null ? null : default(TensorSource);
            Length = p.Tensors[0].ElementCount;
        }

        public long Length { get; }

        public int ChunkElements => ChunkElementCount;

        public ReadOnlySpan<TensorSource> Inputs => _inputs;

        public TensorSource? Base => _base;

        public ReadOnlySpan<TensorSource> Fishers => _fishers;

        public void Load(long offset, int count, ulong? sampleOf = null)
        {
            (_offset, _count) = (offset, count);
            var views = new TensorSource[_tensors.Length];
            for (var i = 0; i < _tensors.Length; i++)
            {
                _buffers.Slot(i, (long)count * sizeof(float)); // slots grow here, not inside the parallel reads
            }

            // The files are read in parallel (each read is a page-cache copy, or disk I/O), as the kernels' threads
            // faulted pages of the mappings in parallel before.
            if (count >= 1 << 16 && _tensors.Length > 1)
            {
                try
                {
                    Parallel.For(0, _tensors.Length, i => views[i] = Read(i, _tensors[i], offset, count, sampleOf));
                }
                catch (AggregateException e)
                {
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
                }
            }
            else
            {
                for (var i = 0; i < _tensors.Length; i++)
                {
                    views[i] = Read(i, _tensors[i], offset, count, sampleOf);
                }
            }

            views.AsSpan(0, _inputs.Length).CopyTo(_inputs);
            _base = _tensors.Length > _inputs.Length ? views[^1] : null;

            for (var k = 0; k < _fishers.Length; k++)
            {
                var buffer = _buffers.Slot(_tensors.Length + k, (long)count * sizeof(float));
                _fisherValues![k].AsSpan((int)offset, count).CopyTo(new Span<float>(buffer, count));
                _fishers[k] = new TensorSource(buffer, count, OnnxDataType.Float);
            }
        }

        /// <summary>The first tensor whose current chunk holds NaN or infinity, or null.</summary>
        public OnnxTensor? NonFiniteInput()
        {
            var values = new float[_count];
            foreach (var t in _tensors)
            {
                t.ReadFloat32(_offset, values);
                if (!TensorPrimitives.IsFiniteAll<float>(values))
                {
                    return t;
                }
            }

            return null;
        }

        private TensorSource Read(int slot, OnnxTensor t, long offset, int count, ulong? sampleOf)
        {
            if (t.ElementCount != Length)
            {
                throw new RecyclingException($"{t.Path} has {t.ElementCount} elements where {Length} are expected");
            }

            if (!TensorSource.IsSupported(t.DataType))
            {
                var widened = _buffers.Slot(slot, (long)count * sizeof(float));
                t.ReadFloat32(offset, new Span<float>(widened, count));
                return new TensorSource(widened, count, OnnxDataType.Float);
            }

            var size = TensorSource.ElementSize(t.DataType);
            var buffer = _buffers.Slot(slot, (long)count * size);
            if (t.Storage == TensorStorage.Typed)
            {
                _typed[slot] ??= t.ReadRawBytes();
                _typed[slot].AsSpan((int)(offset * size), count * size).CopyTo(new Span<byte>(buffer, count * size));
            }
            else if (sampleOf is { } id)
            {
                foreach (var (start, length, _) in MagnitudeThreshold.SampleBlocks(Length, id, offset, offset + count))
                {
                    t.ReadRaw(start * size, new Span<byte>(buffer + ((start - offset) * size), length * size));
                }
            }
            else
            {
                t.ReadRaw(offset * size, new Span<byte>(buffer, count * size));
            }

            return new TensorSource(buffer, count, t.DataType);
        }
    }

    /// <summary>Encodes merged fp32 chunks to the stored type and writes them to the writer's stream.</summary>
    private sealed class StreamSink(Stream stream, OnnxDataType type, ChunkBuffers buffers, Action<long> onOverflow) : TensorMerger.ITensorSink
    {
        private readonly long _start = stream.Position;

        public void Write(long offset, ReadOnlySpan<float> values)
        {
            if (stream.Position != _start + OnnxDataTypes.RawByteLength(type, offset))
            {
                throw new InvalidOperationException($"chunk at element {offset} written out of order");
            }

            if (type == OnnxDataType.Float)
            {
                stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
                return;
            }

            var encoded = buffers.Encoded(OnnxDataTypes.RawByteLength(type, values.Length));
            var overflowed = ElementCodec.Encode(values, type, encoded);
            if (overflowed > 0)
            {
                onOverflow(overflowed);
            }

            stream.Write(encoded);
        }

        public void Patch(long index, float value)
        {
            var end = stream.Position;
            Span<byte> encoded = stackalloc byte[4];
            var size = (int)OnnxDataTypes.RawByteLength(type, 1);
            if (ElementCodec.Encode([value], type, encoded[..size]) > 0)
            {
                onOverflow(1);
            }

            stream.Position = _start + (index * size);
            stream.Write(encoded[..size]);
            stream.Position = end;
        }
    }

    /// <summary>
    /// Buffers reused for every tensor of a merge: pinned read slots (one per input, base and Fisher tensor), the merged
    /// fp32 chunk and its encoding. At most a chunk each, whatever the tensor sizes.
    /// </summary>
    private sealed unsafe class ChunkBuffers
    {
        private readonly List<byte[]> _slots = [];
        private float[] _values = [];
        private byte[] _encoded = [];

        /// <summary>A pinned buffer of at least <paramref name="bytes"/> bytes for slot <paramref name="index"/>, valid until that slot is asked again.</summary>
        public byte* Slot(int index, long bytes)
        {
            while (_slots.Count <= index)
            {
                _slots.Add([]);
            }

            if (_slots[index].Length < bytes)
            {
                _slots[index] = GC.AllocateUninitializedArray<byte>(checked((int)Math.Max(bytes, 4096)), pinned: true);
            }

            return (byte*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref _slots[index][0]);
        }

        /// <summary>Room for <paramref name="count"/> fp32 values (at most a chunk), valid until the next call.</summary>
        public Span<float> Values(long count)
        {
            if (_values.Length < count)
            {
                _values = GC.AllocateUninitializedArray<float>(checked((int)count));
            }

            return _values.AsSpan(0, (int)count);
        }

        public Span<byte> Encoded(long bytes)
        {
            if (_encoded.Length < bytes)
            {
                _encoded = GC.AllocateUninitializedArray<byte>(checked((int)bytes));
            }

            return _encoded.AsSpan(0, (int)bytes);
        }
    }
}
