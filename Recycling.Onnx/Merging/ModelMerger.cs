using System.Buffers;
using System.Diagnostics;
using System.Numerics.Tensors;
using System.Security.Cryptography;
using System.Text.Json;
using Recycling.Onnx.Alignment;

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

public sealed record MergeSummary(int Parameters, int Merged, long BytesRead, long BytesWritten, TimeSpan Elapsed, string Kernels, IReadOnlyList<string> Notes);

/// <summary>
/// Streams a merge: aligns the inputs, then produces each merged tensor as the writer reaches it, reading the inputs in
/// place from their memory mappings, so peak memory is a few tensors whatever the model size. Linear methods read each
/// input once; global TIES first counts magnitudes (two passes), Fisher first measures Fisher norms (one pass).
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
        var options = request.Options;
        options.Validate(plan.Inputs.Count);
        if (options.RequiresBase && plan.Base is null)
        {
            throw new RecyclingException($"{options.Describe()} needs the base model: give it with --base");
        }

        if (options.RequiresFisher && fishers is null)
        {
            throw new RecyclingException("Fisher merging needs one Fisher file per input (--fisher)");
        }

        var clock = Stopwatch.StartNew();
        var inputFiles = plan.Inputs.Concat(plan.Base is null ? [] : [plan.Base]).SelectMany(m => m.Files).Concat(fishers?.Files ?? []).ToList();
        // SHA-256 costs more CPU than the merge itself: one task per model, beside the merge, so spare cores take it.
        var hashing = Task.WhenAll(plan.Inputs.Concat(plan.Base is null ? [] : [plan.Base])
            .Select(m => Task.Run(() => new { file = Path.GetFileName(m.Path), sha256 = Sha256(m.Files) })));

        using var kernels = MergeKernels.Create(options.Device);
        var merger = new TensorMerger(options, plan.Inputs.Count, kernels);
        var averager = new TensorMerger(new MergeOptions { Method = MergeMethod.Average, Device = options.Device }, plan.Inputs.Count, kernels);
        var notes = new List<string>();
        var mergeable = plan.Parameters.Where(p => p.IsFloat && !p.IsHead && p.TiedTo is null && !p.IsBatchNormStatistic).ToList();
        if (plan.Parameters.Any(p => p.IsBatchNormStatistic) && options.Method != MergeMethod.Average)
        {
            notes.Add("BatchNorm running statistics were averaged over the inputs, not merged with " + options.Method + ", so variances stay non-negative");
        }

        if (plan.Parameters.Any(p => p.Transformed?.Contains("BatchNorm", StringComparison.Ordinal) == true))
        {
            notes.Add("some weights were folded by the exporter (BatchNorm into Conv): averaging them approximates averaging the original parameters");
        }

        long bytesRead = 0;
        for (var pass = 0; pass < merger.PrepassCount; pass++)
        {
            foreach (var p in mergeable)
            {
                using var sources = new Sources(p, fishers);
                merger.Prepass(pass, TensorId.FromKey(p.Key), sources.Inputs, sources.Base, sources.Fishers);
            }

            merger.CompletePrepass(pass);
        }

        var writer = new MergedModelBuilder(plan);
        var cache = new Dictionary<string, float[]>();
        var tiedPrimaries = plan.Parameters.Where(p => p.TiedTo is not null).Select(p => p.TiedTo!).ToHashSet();
        var byKey = plan.Parameters.ToDictionary(p => p.Key);
        var merged = 0;

        // The writer writes tensor i on a background thread while tensor i + 1 is merged, so two slots of buffers,
        // alternating, serve every tensor: no per-tensor arrays to collect, and memory for two tensors' outputs.
        var buffers = new OutputBuffers();

        ReadOnlySpan<float> MergedValues(AlignedParameter p)
        {
            if (cache.TryGetValue(p.Key, out var cached))
            {
                return cached;
            }

            var output = buffers.Values(p.Tensors[0].ElementCount);
            using (var sources = new Sources(p, fishers))
            {
                if (p.IsBatchNormStatistic)
                {
                    averager.Merge(TensorId.FromKey(p.Key), sources.Inputs, null, [], output);
                }
                else
                {
                    merger.Merge(TensorId.FromKey(p.Key), sources.Inputs, sources.Base, sources.Fishers, output);
                }

                Interlocked.Add(ref bytesRead, sources.Bytes);
                bytesProgress?.Report(Interlocked.Read(ref bytesRead));
            }

            if (!TensorPrimitives.IsFiniteAll<float>(output))
            {
                ReportNonFinite(p, request.AllowNonFinite, notes);
            }

            merged++;
            if (tiedPrimaries.Contains(p.Key))
            {
                cache[p.Key] = output.ToArray();
            }

            return output;
        }

        TensorReplacement Encode(OnnxDataType templateType)
        {
            var type = request.OutputType is { } wanted && TensorSource.IsSupported(templateType) ? wanted : TensorSource.IsSupported(templateType) ? templateType : OnnxDataType.Float;
            return new TensorReplacement(type, buffers.Encoded(type));
        }

        var items = writer.Build(p =>
        {
            if (!p.IsFloat || (p.IsHead && plan.Heads != HeadPolicy.Drop))
            {
                return null; // kept from the template: equal everywhere, or the chosen head
            }

            return templateType =>
            {
                buffers.NextSlot();
                if (p.TiedTo is null)
                {
                    MergedValues(p);
                }
                else
                {
                    MergedValues(byKey[p.TiedTo]);
                    var primary = cache[p.TiedTo]; // not the values buffer, which the copy is about to reuse
                    var copy = buffers.Values(p.Tensors[0].ElementCount);
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
        }, request.OutputType);

        var lineage = new Dictionary<string, string>
        {
            ["recycling.method"] = options.Describe(),
            ["recycling.version"] = ToolVersion,
            ["recycling.heads"] = plan.Heads.ToString().ToLowerInvariant(),
        };
        if (request.OutputType is not null)
        {
            lineage["recycling.dtype"] = request.OutputType.Value.ToString();
        }

        ModelWriter.Write(writer.Structure, items, request.Output, new OnnxWriteOptions { ExternalData = request.ExternalData, Metadata = lineage }, inputFiles,
            () => new Dictionary<string, string>
            {
                ["recycling.ingredients"] = JsonSerializer.Serialize(hashing.Result.Take(plan.Inputs.Count)),
                ["recycling.base"] = plan.Base is null ? "" : JsonSerializer.Serialize(hashing.Result[^1]),
            }, overlapWrites: true);

        var written = new FileInfo(Path.GetFullPath(request.Output)).Length + (File.Exists(Path.GetFullPath(request.Output) + ".data") && request.ExternalData != ExternalDataMode.Embedded ? new FileInfo(Path.GetFullPath(request.Output) + ".data").Length : 0);
        return new MergeSummary(plan.Parameters.Count, merged, bytesRead, written, clock.Elapsed, kernels.Name, notes);
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

    private static string Sha256(IEnumerable<string> files)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            foreach (var file in files)
            {
                using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
                int n;
                while ((n = stream.Read(buffer, 0, buffer.Length)) > 0)
                {
                    hash.AppendData(buffer, 0, n);
                }
            }

            return Convert.ToHexStringLower(hash.GetHashAndReset());
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
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

    /// <summary>
    /// Reused output buffers, in two slots used alternately (one may still be being written): the merged fp32 values of
    /// the current tensor and their encoded bytes when the stored type is not fp32.
    /// </summary>
    private sealed class OutputBuffers
    {
        private readonly byte[][] _values = [[], []];
        private readonly byte[][] _encoded = [[], []];
        private int _slot;
        private int _count;

        public void NextSlot() => _slot ^= 1;

        /// <summary>Room for <paramref name="count"/> fp32 values in the current slot.</summary>
        public Span<float> Values(long count)
        {
            var bytes = checked((int)(count * sizeof(float)));
            Grow(ref _values[_slot], bytes);
            _count = (int)count;
            return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(_values[_slot].AsSpan(0, bytes));
        }

        /// <summary>The current slot's values as <paramref name="type"/>'s raw bytes (the values buffer itself for fp32).</summary>
        public ReadOnlyMemory<byte> Encoded(OnnxDataType type)
        {
            var bytes = _count * sizeof(float);
            if (type == OnnxDataType.Float)
            {
                return _values[_slot].AsMemory(0, bytes);
            }

            var length = (int)OnnxDataTypes.RawByteLength(type, _count);
            Grow(ref _encoded[_slot], length);
            ElementCodec.Encode(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(_values[_slot].AsSpan(0, bytes)), type, _encoded[_slot].AsSpan(0, length));
            return _encoded[_slot].AsMemory(0, length);
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
