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
/// value (promoted to an output on an in-memory copy). One session per scorer; dispose it.
/// </summary>
public sealed class OnnxScorer : IDisposable
{
    private static readonly Lock CudaLock = new();
    private static string? _cudaFailure;
    private static bool _noticeShown;

    private readonly InferenceSession _session;
    private readonly ScoringOptions _options;
    private readonly long[] _inputShape;
    private readonly int _concurrentBatches;

    private OnnxScorer(InferenceSession session, string name, ScoringOptions options, bool usesCuda)
    {
        _session = session;
        _options = options;
        Name = name;
        UsesCuda = usesCuda;
        _concurrentBatches = usesCuda ? 1 : options.Threads;
        var input = session.InputMetadata.Count == 1 ? session.InputMetadata.First()
            : throw new RecyclingException($"{name}: the model has {session.InputMetadata.Count} inputs ({string.Join(", ", session.InputMetadata.Keys)}); scoring feeds one input");
        if (input.Value.ElementDataType != TensorElementType.Float)
        {
            throw new RecyclingException($"{name}: input '{input.Key}' is {input.Value.ElementDataType}; scoring feeds float32 inputs");
        }

        InputName = input.Key;
        _inputShape = [.. input.Value.Dimensions.Select(d => (long)d)];
        OutputNames = [.. session.OutputMetadata.Keys];
    }

    public string Name { get; }

    public string InputName { get; }

    public IReadOnlyList<string> OutputNames { get; }

    /// <summary>True when the session runs on the CUDA execution provider.</summary>
    public bool UsesCuda { get; }

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
        if (extraOutputs is { Count: > 0 })
        {
            var edited = OnnxGraph.WithOutputs(File.ReadAllBytes(full), extraOutputs, full);
            return Create(so => new InferenceSession(edited, so), full, options ?? new ScoringOptions(), Path.GetDirectoryName(full));
        }

        return Create(so => new InferenceSession(full, so), full, options ?? new ScoringOptions(), null);
    }

    /// <summary>Runs an in-memory model (e.g. a merged candidate from ModelMerger.MergeToBytes).</summary>
    public static OnnxScorer FromBytes(byte[] model, string name, ScoringOptions? options = null, IReadOnlyCollection<string>? extraOutputs = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var bytes = extraOutputs is { Count: > 0 } ? OnnxGraph.WithOutputs(model, extraOutputs, name) : model;
        return Create(so => new InferenceSession(bytes, so), name, options ?? new ScoringOptions(), null);
    }

    private static OnnxScorer Create(Func<SessionOptions, InferenceSession> open, string name, ScoringOptions options, string? externalFolder)
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
                return new OnnxScorer(cuda, name, options, usesCuda: true);
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
        return new OnnxScorer(session, name, options, usesCuda: false);
    }

    private static InferenceSession? TryCreate(Func<SessionOptions, InferenceSession> open, ScoringOptions options, string? externalFolder, bool cuda, string name)
    {
        // On the CPU, whole batches run concurrently, one per thread, each single-threaded inside ONNX Runtime: small
        // operators scale poorly across an intra-op pool, independent batches scale with the cores.
        using var so = new SessionOptions
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

        if (!cuda)
        {
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
                so.AppendExecutionProvider_CUDA(0);
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

        var sampleShape = SampleShape(data);
        // A model exported with a fixed batch dimension takes exactly that many samples: the last batch is zero-padded.
        long fixedBatch = _inputShape.Length > 0 && _inputShape[0] > 0 ? _inputShape[0] : 0;
        if (fixedBatch > 0 && fixedBatch * (double)data.SampleSize * sizeof(float) > MaxBatchBytes)
        {
            throw new RecyclingException(
                $"{Name}: input '{InputName}' declares a fixed batch of {fixedBatch} samples of {data.SampleSize} values, over the limit of {MaxBatchBytes} bytes (1 GiB) per call; export the model with a dynamic batch dimension");
        }
        int batch = fixedBatch > 0 ? (int)fixedBatch : _options.BatchSize;
        int batches = (data.Count + batch - 1) / batch;
        var results = new float[outputs.Count][];
        var widths = new int[outputs.Count];
        float[] NewBuffer() => new float[Math.Min(batch, fixedBatch > 0 ? batch : Math.Max(data.Count, 1)) * data.SampleSize];

        // The first batch learns the output widths; the others then fill their own rows, concurrently on the CPU.
        if (batches > 0)
        {
            RunBatch(data, outputs, sampleShape, batch, fixedBatch, 0, NewBuffer(), results, widths);
        }

        try
        {
            Parallel.For(1, batches, new ParallelOptions { MaxDegreeOfParallelism = _concurrentBatches }, NewBuffer,
                (b, _, buffer) =>
                {
                    RunBatch(data, outputs, sampleShape, batch, fixedBatch, b, buffer, results, widths);
                    return buffer;
                },
                _ => { });
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

    private void RunBatch(Dataset data, IReadOnlyList<string> outputs, long[] sampleShape, int batch, long fixedBatch, int index,
        float[] buffer, float[][] results, int[] widths)
    {
        int start = index * batch;
        int n = Math.Min(batch, data.Count - start);
        int fed = fixedBatch > 0 ? batch : n;
        var slice = fed * data.SampleSize == buffer.Length ? buffer : new float[fed * data.SampleSize];
        data.Values.AsSpan(start * data.SampleSize, n * data.SampleSize).CopyTo(slice);
        slice.AsSpan(n * data.SampleSize).Clear();
        using var input = OrtValue.CreateTensorValueFromMemory(slice, [fed, .. sampleShape]);
        using var runOptions = new RunOptions();
        IDisposableReadOnlyCollection<OrtValue> values;
        try
        {
            values = _session.Run(runOptions, [InputName], [input], outputs);
        }
        catch (OnnxRuntimeException e)
        {
            throw new RecyclingException($"{MessageText.Path(Name)}: ONNX Runtime failed on {data.Name} ({FirstLine(e.Message)})", e);
        }

        using (values)
        {
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

                int width = span.Length / fed;
                if (results[k] is null)
                {
                    widths[k] = width;
                    results[k] = new float[(long)data.Count * width];
                }
                else if (width != widths[k])
                {
                    throw new RecyclingException($"{MessageText.Path(Name)}: output '{outputs[k]}' has {width} values per sample in one batch and {widths[k]} in another");
                }

                span[..(n * width)].CopyTo(results[k].AsSpan(start * width));
            }
        }
    }

    /// <summary>The most bytes of input one ONNX Runtime call is fed (a fixed batch dimension sets it; 1 GiB).</summary>
    public const long MaxBatchBytes = 1L << 30;

    private long[] SampleShape(Dataset data)
    {
        var modelSample = _inputShape.Skip(1).ToArray();
        if (modelSample.All(d => d > 0))
        {
            long size = modelSample.Aggregate(1L, (a, d) => Math.Min(a * Math.Min(d, 1L << 31), 1L << 31)); // saturates: no overflow
            if (size != data.SampleSize)
            {
                throw new RecyclingException(
                    $"{Name}: input '{InputName}' takes samples of [{string.Join(",", modelSample)}] ({size} values); {data.Name} has samples of [{string.Join(",", data.SampleShape)}] ({data.SampleSize} values)");
            }

            return modelSample;
        }

        if (modelSample.Length != data.SampleShape.Count)
        {
            throw new RecyclingException(
                $"{Name}: input '{InputName}' has shape [{string.Join(",", _inputShape)}]; {data.Name} has samples of [{string.Join(",", data.SampleShape)}]");
        }

        return [.. data.SampleShape.Select(d => (long)d)];
    }

    public void Dispose() => _session.Dispose();
}
