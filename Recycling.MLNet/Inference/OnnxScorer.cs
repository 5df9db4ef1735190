using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Recycling.MLNet.Data;
using Recycling.Onnx;

namespace Recycling.MLNet.Inference;

/// <summary>Where ONNX Runtime runs a model.</summary>
public enum ExecutionDevice
{
    Cpu,

    /// <summary>The CUDA execution provider; an error when it cannot start.</summary>
    Cuda,

    /// <summary>The CUDA execution provider when it starts, else the CPU with a one-line notice.</summary>
    Auto,
}

/// <summary>How models are run: device, threads, batch size, and where the CPU-fallback notice goes.</summary>
public sealed record ScoringOptions
{
    public ExecutionDevice Device { get; init; } = ExecutionDevice.Cpu;

    /// <summary>Threads (default: one per core). On the CPU as many batches run at once, each on one thread; on CUDA,
    /// ONNX Runtime's intra-op threads for operators left on the CPU.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>Samples per ONNX Runtime call. Small batches run concurrently keep their activations in cache on the CPU
    /// (32 was fastest on the zoo's models, 256 up to 1.5x slower); a GPU wants larger ones.</summary>
    public int BatchSize { get; init; } = 32;

    /// <summary>Receives the notice when <see cref="ExecutionDevice.Auto"/> falls back to the CPU; default: standard error.</summary>
    public Action<string>? Notice { get; init; }
}

/// <summary>
/// Runs an ONNX model over a <see cref="Dataset"/> in batches through ONNX Runtime, to any graph output or internal
/// value (promoted to an output on an in-memory copy). Image models are fed their one float input; text models
/// (integer inputs) each token input by name (<see cref="ScoringInputs"/>). A model exported with a fixed batch
/// dimension (CNTK's ResNet18: [1,3,224,224]) is run as an in-memory copy whose batch axis is dynamic, once that copy
/// reproduces the original's outputs on the first samples; otherwise in runs of the fixed batch, zero-padded. One
/// session per scorer; dispose it.
/// </summary>
public sealed class OnnxScorer : IDisposable
{
    private static readonly Lock CudaLock = new();
    private static string? _cudaFailure;
    private static bool _noticeShown;

    /// <summary>Samples on which a dynamic-batch copy must reproduce the fixed-batch original.</summary>
    private const int CheckedSamples = 4;

    private readonly Lock _batchLock = new();
    private readonly ScoringOptions _options;
    private readonly ScoringInputs _inputs;
    private readonly int _concurrentBatches;
    private InferenceSession _session;
    private long _fixedBatch;
    private InferenceSession? _dynamicCopy;

    private OnnxScorer(InferenceSession session, InferenceSession? dynamicCopy, string name, ScoringOptions options, bool usesCuda)
    {
        _session = session;
        _dynamicCopy = dynamicCopy;
        _options = options;
        Name = name;
        UsesCuda = usesCuda;
        _concurrentBatches = usesCuda ? 1 : options.Threads;
        _inputs = ScoringInputs.For(session.InputMetadata, name);
        _fixedBatch = FixedBatch(session) ?? 0;
        InputName = _inputs.PrimaryName;
        OutputNames = [.. session.OutputMetadata.Keys];
    }

    public string Name { get; }

    public string InputName { get; }

    public IReadOnlyList<string> OutputNames { get; }

    /// <summary>True when the session runs on the CUDA execution provider.</summary>
    public bool UsesCuda { get; }

    /// <summary>The batch every ONNX Runtime call is fed (a fixed-batch export that could not be batched), or null
    /// when batches of <see cref="ScoringOptions.BatchSize"/> run. A fixed-batch export is decided on its first run.</summary>
    internal long? FedBatch
    {
        get
        {
            lock (_batchLock)
            {
                return _fixedBatch > 0 && _dynamicCopy is null ? _fixedBatch : null;
            }
        }
    }

    /// <summary>Opens <paramref name="path"/>; <paramref name="extraOutputs"/> names internal values to promote to outputs.</summary>
    public static OnnxScorer Open(string path, ScoringOptions? options = null, IReadOnlyCollection<string>? extraOutputs = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new RecyclingException($"{MessageText.Path(path)}: no such model file");
        }

        Recycling.Onnx.IO.InputFile.RequireRegular(path);

        var full = Path.GetFullPath(path);
        var folder = Path.GetDirectoryName(full);
        if (extraOutputs is { Count: > 0 })
        {
            var edited = OnnxGraph.WithOutputs(File.ReadAllBytes(full), extraOutputs, full);
            return Create(so => new InferenceSession(edited, so), full, options ?? new ScoringOptions(), folder, () => edited);
        }

        return Create(so => new InferenceSession(full, so), full, options ?? new ScoringOptions(), null,
            () => new FileInfo(full).Length <= MaxCopiedModelBytes ? File.ReadAllBytes(full) : null, folder);
    }

    /// <summary>Runs an in-memory model (e.g. a merged candidate from ModelMerger.MergeToBytes).</summary>
    public static OnnxScorer FromBytes(byte[] model, string name, ScoringOptions? options = null, IReadOnlyCollection<string>? extraOutputs = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var bytes = extraOutputs is { Count: > 0 } ? OnnxGraph.WithOutputs(model, extraOutputs, name) : model;
        return Create(so => new InferenceSession(bytes, so), name, options ?? new ScoringOptions(), null, () => bytes);
    }

    /// <summary>The largest model file read into memory to make its fixed batch dynamic (1 GiB); larger ones run in fixed batches.</summary>
    private const long MaxCopiedModelBytes = 1L << 30;

    /// <param name="modelBytes">The model's bytes, for a dynamic-batch copy when it declares a fixed batch (null: none).</param>
    /// <param name="copyFolder">Where the copy's external data live when not <paramref name="externalFolder"/>.</param>
    private static OnnxScorer Create(Func<SessionOptions, InferenceSession> open, string name, ScoringOptions options, string? externalFolder,
        Func<byte[]?> modelBytes, string? copyFolder = null)
    {
        if (options.BatchSize < 1 || options.Threads < 1)
        {
            throw new RecyclingException($"batch size and threads must be positive (got {options.BatchSize} and {options.Threads})");
        }

        if (options.Device != ExecutionDevice.Cpu)
        {
            var cuda = TryCreate(open, options, externalFolder, cuda: true, name);
            if (cuda is not null)
            {
                return WithDynamicCopy(cuda, name, options, externalFolder ?? copyFolder, modelBytes, usesCuda: true);
            }

            if (options.Device == ExecutionDevice.Cuda)
            {
                throw new RecyclingException($"--device cuda: CUDA is not usable here ({CudaFailure}); --device auto runs on the CPU instead");
            }

            lock (CudaLock)
            {
                if (!_noticeShown)
                {
                    _noticeShown = true;
                    (options.Notice ?? (m => Console.Error.WriteLine(m)))($"notice: CUDA is not usable here ({_cudaFailure}); running on the CPU");
                }
            }
        }

        var session = TryCreate(open, options, externalFolder, cuda: false, name)!;
        return WithDynamicCopy(session, name, options, externalFolder ?? copyFolder, modelBytes, usesCuda: false);
    }

    /// <summary>The scorer of <paramref name="session"/>, with a dynamic-batch copy of the model when it declares a fixed batch and one can be made.</summary>
    private static OnnxScorer WithDynamicCopy(InferenceSession session, string name, ScoringOptions options, string? folder, Func<byte[]?> modelBytes, bool usesCuda)
    {
        InferenceSession? copy = null;
        try
        {
            if (FixedBatch(session) is not null && modelBytes() is { } bytes)
            {
                var proto = Recycling.Onnx.Proto.ModelProto.Parser.ParseFrom(bytes);
                if (DynamicBatch.Apply(proto))
                {
                    var dynamicBytes = Google.Protobuf.MessageExtensions.ToByteArray(proto);
                    using var so = NewSessionOptions(options, folder, usesCuda);
                    copy = new InferenceSession(dynamicBytes, so);
                }
            }
        }
        catch (Exception e) when (e is OnnxRuntimeException or Google.Protobuf.InvalidProtocolBufferException or IOException)
        {
            // The graph cannot take another batch (or the copy cannot be made): it runs in its fixed batches.
            copy = null;
        }

        try
        {
            return new OnnxScorer(session, copy, name, options, usesCuda);
        }
        catch
        {
            session.Dispose();
            copy?.Dispose();
            throw;
        }
    }

    /// <summary>The first dimension the model's inputs declare when every input declares the same positive one, else null.</summary>
    private static long? FixedBatch(InferenceSession session)
    {
        var first = session.InputMetadata.Values.Select(m => m.Dimensions.Length > 0 ? m.Dimensions[0] : -1).Distinct().ToList();
        return first is [> 0] ? first[0] : null;
    }

    private static SessionOptions NewSessionOptions(ScoringOptions options, string? externalFolder, bool cuda)
    {
        // On the CPU, whole batches run concurrently, one per thread, each single-threaded inside ONNX Runtime: small
        // operators scale poorly across an intra-op pool, independent batches scale with the cores.
        var so = new SessionOptions
        {
            IntraOpNumThreads = cuda ? options.Threads : 1,
            InterOpNumThreads = 1,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            // ORT would print its own error line for a missing CUDA library before our one-line notice.
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL,
        };
        // Spinning workers (the CUDA session's CPU fallback pool) burn the cores other processes need.
        so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        if (externalFolder is not null)
        {
            so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", externalFolder);
        }

        if (cuda)
        {
            so.AppendExecutionProvider_CUDA(0);
        }

        return so;
    }

    private static InferenceSession? TryCreate(Func<SessionOptions, InferenceSession> open, ScoringOptions options, string? externalFolder, bool cuda, string name)
    {
        if (!cuda)
        {
            using var so = NewSessionOptions(options, externalFolder, cuda: false);
            return Wrap(() => open(so), name);
        }

        lock (CudaLock)
        {
            if (_cudaFailure is not null)
            {
                return null;
            }

            var env = OrtEnv.Instance();
            var level = env.EnvLogLevel;
            env.EnvLogLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL;
            try
            {
                using var so = NewSessionOptions(options, externalFolder, cuda: true);
                return open(so);
            }
            catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException or ExternalException)
            {
                _cudaFailure = FirstLine(e.Message);
                return null;
            }
            finally
            {
                env.EnvLogLevel = level;
            }
        }
    }

    /// <summary>Why CUDA could not be used in this process, or null when it was not tried or worked.</summary>
    public static string? CudaFailure
    {
        get
        {
            lock (CudaLock)
            {
                return _cudaFailure;
            }
        }
    }

    /// <summary>Forgets an earlier CUDA failure so the next CUDA request tries again and shows its notice (tests).</summary>
    internal static void ResetCudaState()
    {
        lock (CudaLock)
        {
            _cudaFailure = null;
            _noticeShown = false;
        }
    }

    private static string FirstLine(string message) => MessageText.Joined(message);

    private static InferenceSession Wrap(Func<InferenceSession> open, string name)
    {
        try
        {
            return open();
        }
        catch (OnnxRuntimeException e)
        {
            throw new RecyclingException($"{name}: ONNX Runtime cannot load the model ({FirstLine(e.Message)})", e);
        }
    }

    /// <summary>Runs the model over <paramref name="data"/> and returns <paramref name="output"/>, one row per sample.</summary>
    public FloatMatrix Run(Dataset data, string output) => Run(data, [output])[output];

    /// <summary>Runs the model over <paramref name="data"/> once, returning each requested output (one row per sample).</summary>
    public IReadOnlyDictionary<string, FloatMatrix> Run(Dataset data, IReadOnlyList<string> outputs)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(outputs);
        foreach (var o in outputs.Where(o => !OutputNames.Contains(o)))
        {
            throw new RecyclingException($"{MessageText.Path(Name)}: no output named '{o}' (outputs: {string.Join(", ", OutputNames)}); internal values can be promoted with extra outputs");
        }

        var sampleShape = _inputs.SampleShape(data);
        InferenceSession session;
        long fixedBatch;
        lock (_batchLock)
        {
            if (_dynamicCopy is not null && data.Count > 0)
            {
                AdoptDynamicCopyIfEqual(data, outputs, sampleShape);
            }

            (session, fixedBatch) = (_session, _dynamicCopy is null ? _fixedBatch : 0);
        }

        // A model that keeps a fixed batch dimension takes exactly that many samples: the last batch is padded.
        if (fixedBatch > 0 && fixedBatch * (double)data.SampleSize * sizeof(float) > MaxBatchBytes)
        {
            throw new RecyclingException(
                $"{Name}: input '{InputName}' declares a fixed batch of {fixedBatch} samples of {data.SampleSize} values, over the limit of {MaxBatchBytes} bytes (1 GiB) per call; export the model with a dynamic batch dimension");
        }

        int batch = fixedBatch > 0 ? (int)fixedBatch : _options.BatchSize;
        int batches = (data.Count + batch - 1) / batch;
        var results = new float[outputs.Count][];
        var widths = new int[outputs.Count];

        void RunBatch(int index)
        {
            int start = index * batch;
            int n = Math.Min(batch, data.Count - start);
            var (values, batchWidths) = RunRows(session, fixedBatch, data, sampleShape, start, n, outputs);
            for (int k = 0; k < outputs.Count; k++)
            {
                if (results[k] is null)
                {
                    widths[k] = batchWidths[k];
                    results[k] = new float[(long)data.Count * batchWidths[k]];
                }
                else if (batchWidths[k] != widths[k])
                {
                    throw new RecyclingException($"{MessageText.Path(Name)}: output '{outputs[k]}' has {batchWidths[k]} values per sample in one batch and {widths[k]} in another");
                }

                values[k].CopyTo(results[k].AsSpan(start * widths[k]));
            }
        }

        // The first batch learns the output widths; the others then fill their own rows, concurrently on the CPU.
        if (batches > 0)
        {
            RunBatch(0);
        }

        try
        {
            Parallel.For(1, batches, new ParallelOptions { MaxDegreeOfParallelism = _concurrentBatches }, RunBatch);
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }

        var map = new Dictionary<string, FloatMatrix>(StringComparer.Ordinal);
        for (int k = 0; k < outputs.Count; k++)
        {
            map[outputs[k]] = new FloatMatrix(data.Count, widths[k], results[k] ?? []);
        }

        return map;
    }

    /// <summary>
    /// Runs the dynamic-batch copy on the first samples in one batch and the original in its fixed batches; the copy
    /// replaces the original when every output agrees (1e-4 of the output's largest magnitude), else it is dropped.
    /// </summary>
    private void AdoptDynamicCopyIfEqual(Dataset data, IReadOnlyList<string> outputs, long[] sampleShape)
    {
        var copy = _dynamicCopy!;
        int n = Math.Min(data.Count, CheckedSamples);
        int? tokens = _inputs.FeedsTokens ? _inputs.TokenLength(data, 0, n) : null;
        var reference = new float[outputs.Count][];
        var width = new int[outputs.Count];
        for (int start = 0; start < n; start += (int)_fixedBatch)
        {
            var count = (int)Math.Min(_fixedBatch, n - start);
            var (values, widths) = RunRows(_session, _fixedBatch, data, sampleShape, start, count, outputs, tokens);
            for (int k = 0; k < outputs.Count; k++)
            {
                reference[k] ??= new float[n * widths[k]];
                width[k] = widths[k];
                values[k].CopyTo(reference[k].AsSpan(start * widths[k]));
            }
        }

        bool equal;
        try
        {
            var (batched, _) = RunRows(copy, 0, data, sampleShape, 0, n, outputs, tokens);
            equal = batched.Zip(reference).All(p => p.First.Length == p.Second.Length && Close(p.First, p.Second));
        }
        catch (RecyclingException)
        {
            equal = false;
        }

        if (equal)
        {
            _session.Dispose();
            _session = copy;
            _fixedBatch = 0;
        }
        else
        {
            copy.Dispose();
        }

        _dynamicCopy = null;

        static bool Close(float[] batched, float[] reference)
        {
            var scale = Math.Max(1f, reference.Length == 0 ? 0 : System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(reference));
            for (int i = 0; i < batched.Length; i++)
            {
                if (!(Math.Abs(batched[i] - reference[i]) <= 1e-4f * scale) && !(float.IsNaN(batched[i]) && float.IsNaN(reference[i])))
                {
                    return false;
                }
            }

            return true;
        }
    }

    /// <summary>Runs samples [start, start + n) as one call (padded to <paramref name="fixedBatch"/> when positive); each output's values of the n samples and their width.</summary>
    private (float[][] Values, int[] Widths) RunRows(InferenceSession session, long fixedBatch, Dataset data, long[] sampleShape, int start, int n,
        IReadOnlyList<string> outputs, int? tokenLength = null)
    {
        int fed = fixedBatch > 0 ? (int)fixedBatch : n;
        var (names, inputs) = _inputs.Feed(data, sampleShape, start, n, fed, tokenLength);
        try
        {
            using var runOptions = new RunOptions();
            IDisposableReadOnlyCollection<OrtValue> values;
            try
            {
                values = session.Run(runOptions, names, inputs, outputs);
            }
            catch (OnnxRuntimeException e)
            {
                throw new RecyclingException($"{MessageText.Path(Name)}: ONNX Runtime failed on {data.Name} ({FirstLine(e.Message)})", e);
            }

            using (values)
            {
                var result = new float[outputs.Count][];
                var widths = new int[outputs.Count];
                for (int k = 0; k < outputs.Count; k++)
                {
                    var tensor = values[k];
                    var info = tensor.GetTensorTypeAndShape();
                    if (info.ElementDataType != TensorElementType.Float)
                    {
                        throw new RecyclingException($"{MessageText.Path(Name)}: output '{outputs[k]}' is {info.ElementDataType}, not float");
                    }

                    var span = tensor.GetTensorDataAsSpan<float>();
                    if (info.Shape.Length == 0 || info.Shape[0] != fed)
                    {
                        throw new RecyclingException($"{MessageText.Path(Name)}: output '{outputs[k]}' has shape [{string.Join(",", info.Shape)}], expected a batch of {fed} first");
                    }

                    widths[k] = span.Length / fed;
                    result[k] = span[..(n * widths[k])].ToArray();
                }

                return (result, widths);
            }
        }
        finally
        {
            foreach (var input in inputs)
            {
                input.Dispose();
            }
        }
    }

    /// <summary>The most bytes of input one ONNX Runtime call is fed (a fixed batch dimension sets it; 1 GiB).</summary>
    public const long MaxBatchBytes = 1L << 30;

    public void Dispose()
    {
        _session.Dispose();
        _dynamicCopy?.Dispose();
    }
}
