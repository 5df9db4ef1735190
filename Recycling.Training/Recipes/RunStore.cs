using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Runtime.InteropServices;
using System.Text.Json;
using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Onnx.IO;

namespace Recycling.Training.Recipes;

/// <summary>
/// One run of a recipe, identified by its content: the hashes of its input models and data files and its
/// hyperparameters (a sorted map of strings). Two specs with the same content share one output folder.
/// </summary>
public sealed record RunSpec
{
    /// <summary>What the run does (e.g. "finetune"), part of the identity.</summary>
    public required string Kind { get; init; }

    /// <summary>Human-readable label for progress lines and reports (not part of the identity).</summary>
    public required string Label { get; init; }

    /// <summary>Input model files by role (e.g. "model" -> path).</summary>
    public IReadOnlyDictionary<string, string> Models { get; init; } = new Dictionary<string, string>();

    /// <summary>Data specs by role (e.g. "train" -> models/data/probe_train): every file they name is hashed.</summary>
    public IReadOnlyDictionary<string, string> Data { get; init; } = new Dictionary<string, string>();

    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();

    /// <summary>Where a training run trains (not part of the identity: a run made on the CPU is reused on a GPU and back).</summary>
    public TrainingDevice Device { get; init; } = TrainingDevice.Cpu;
}

/// <summary>A finished run: its folder, its model, and what its executor recorded (e.g. validation accuracy).</summary>
public sealed record RunRecord(string Key, string Label, string Folder, string Model, IReadOnlyDictionary<string, double> Figures, double Seconds, bool Reused);

/// <summary>
/// Content-addressed run folders: <c>ROOT/runs/KEY/model.onnx</c> and <c>run.json</c>, KEY the SHA-256 of the
/// spec's content. run.json is written last (atomically), so a run killed midway leaves no run.json and is redone;
/// a finished run is reused without running again; a fine-tuning killed midway resumes from its checkpoint
/// (<c>model.onnx.ckpt/</c> in its folder). Independent runs execute on threads, at most <see cref="Parallelism"/> at
/// a time, and LibTorch's intra-op threads are divided among min(<see cref="Parallelism"/>, runs of the recipe), so
/// that the runs redone after a kill use the thread count, hence compute the bytes, of an uninterrupted recipe.
/// </summary>
public sealed class RunStore
{
    public const string ModelFile = "model.onnx";

    public const string RecordFile = "run.json";

    private readonly ConcurrentDictionary<string, string> _hashes = new(StringComparer.Ordinal);

    public RunStore(string root, int? parallelism = null)
    {
        Root = Path.GetFullPath(root);
        Parallelism = parallelism ?? DefaultParallelism();
        if (Parallelism < 1)
        {
            throw new RecyclingException($"parallel runs must be at least 1 (got {Parallelism})");
        }
    }

    public string Root { get; }

    public int Parallelism { get; }

    /// <summary>
    /// One run per core, and no more than the memory allows at about 1 GiB each (LibTorch, the datasets and two
    /// copies of a small model; larger models should pass a smaller number).
    /// </summary>
    public static int DefaultParallelism()
    {
        var memoryGiB = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1L << 30);
        return (int)Math.Max(1, Math.Min(Environment.ProcessorCount, memoryGiB));
    }

    /// <summary>The run's content key: SHA-256 over its kind, file hashes and parameters.</summary>
    public string Key(RunSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var canonical = new StringBuilder();
        canonical.Append("kind=").Append(spec.Kind).Append('\n');
        foreach (var (role, path) in spec.Models.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            canonical.Append("model.").Append(role).Append('=').Append(FileHash(path)).Append('\n');
        }

        foreach (var (role, data) in spec.Data.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            canonical.Append("data.").Append(role).Append('=');
            var files = DatasetLoader.Files(data).Where(File.Exists).ToList();
            if (files.Count == 0)
            {
                throw new RecyclingException($"'{data}': no data found ({role} data of run '{spec.Label}')");
            }

            foreach (var file in files)
            {
                canonical.Append(FileHash(file)).Append(',');
            }

            canonical.Append('\n');
        }

        foreach (var (name, value) in spec.Parameters.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            canonical.Append("param.").Append(name).Append('=').Append(value.Replace("\n", "\\n", StringComparison.Ordinal)).Append('\n');
        }

        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonical.ToString())));
    }

    public string FolderOf(string key) => Path.Combine(Root, "runs", key);

    /// <summary>The finished run of <paramref name="spec"/>, or null when it has not finished (or its model changed since).</summary>
    public RunRecord? Finished(RunSpec spec)
    {
        var key = Key(spec);
        var folder = FolderOf(key);
        var record = Path.Combine(folder, RecordFile);
        var model = Path.Combine(folder, ModelFile);
        if (!File.Exists(record) || !File.Exists(model))
        {
            return null;
        }

        try
        {
            using var json = JsonDocument.Parse(File.ReadAllText(record));
            var root = json.RootElement;
            if (root.GetProperty("modelSha256").GetString() != FileHash(model))
            {
                return null;
            }

            var figures = root.GetProperty("figures").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble(), StringComparer.Ordinal);
            return new RunRecord(key, spec.Label, folder, model, figures, root.GetProperty("seconds").GetDouble(), Reused: true);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return null; // a damaged record: the run is redone
        }
    }

    /// <summary>
    /// Runs every spec that has not finished (reusing the others), at most <see cref="Parallelism"/> at a time.
    /// <paramref name="execute"/> writes the run's model to the path it is given and returns its figures; it must
    /// depend only on the spec. Results are in spec order. The first failure is rethrown once the runs under way end.
    /// </summary>
    public IReadOnlyList<RunRecord> RunAll(IReadOnlyList<RunSpec> specs, Func<RunSpec, string, IReadOnlyDictionary<string, double>> execute, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(specs);
        ArgumentNullException.ThrowIfNull(execute);
        var results = new RunRecord[specs.Count];
        var pending = new List<int>();
        for (var i = 0; i < specs.Count; i++)
        {
            if (Finished(specs[i]) is { } done)
            {
                results[i] = done;
                progress?.Invoke($"{specs[i].Label}: reused {done.Folder}");
            }
            else
            {
                pending.Add(i);
            }
        }

        if (pending.Count > 0)
        {
            // LibTorch's threads are shared as if every run of the recipe were pending: a run's float reductions depend
            // on its thread count, so a resumed recipe computes the bytes an uninterrupted one would.
            var parallel = Math.Min(Parallelism, pending.Count);
            var previous = TorchSharp.torch.get_num_threads();
            var threads = Math.Max(1, Environment.ProcessorCount / Math.Min(Parallelism, specs.Count));
            try
            {
                Parallel.ForEach(pending, new ParallelOptions { MaxDegreeOfParallelism = parallel }, i =>
                {
                    // LibTorch's thread count belongs to the thread that sets it (OpenMP), and a pool thread keeps the
                    // count it first ran LibTorch with: each run sets it on the thread that runs it.
                    TorchSharp.torch.set_num_threads(threads);
                    results[i] = RunOne(specs[i], execute);
                    progress?.Invoke(string.Create(CultureInfo.InvariantCulture, $"{specs[i].Label}: done in {results[i].Seconds:F1} s"));
                });
            }
            catch (AggregateException e)
            {
                throw e.InnerExceptions[0] is RecyclingException first ? new RecyclingException(first.Message, e) : e.InnerExceptions[0];
            }
            finally
            {
                TorchSharp.torch.set_num_threads(previous);
            }
        }

        return results;
    }

    private RunRecord RunOne(RunSpec spec, Func<RunSpec, string, IReadOnlyDictionary<string, double>> execute)
    {
        var key = Key(spec);
        var folder = FolderOf(key);
        Directory.CreateDirectory(folder);
        OutputFile.TryDelete(Path.Combine(folder, RecordFile));
        var model = Path.Combine(folder, ModelFile);
        var clock = Stopwatch.StartNew();
        IReadOnlyDictionary<string, double> figures;
        try
        {
            figures = execute(spec, model);
        }
        catch (ExternalException e)
        {
            throw new RecyclingException($"run '{MessageText.OneLine(spec.Label)}': LibTorch failed: {LibTorchError.FirstLine(e)}", e);
        }
        catch (RecyclingException e)
        {
            throw new RecyclingException($"run '{MessageText.OneLine(spec.Label)}': {e.Message}", e);
        }

        var seconds = clock.Elapsed.TotalSeconds;
        if (!File.Exists(model))
        {
            throw new RecyclingException($"run '{spec.Label}' wrote no model at {model}");
        }

        var record = new
        {
            key,
            label = spec.Label,
            kind = spec.Kind,
            models = spec.Models.ToDictionary(p => p.Key, p => new { path = Path.GetFullPath(p.Value), sha256 = FileHash(p.Value) }),
            data = spec.Data,
            parameters = spec.Parameters,
            modelSha256 = FileHash(model),
            figures,
            seconds,
            finished = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture),
        };
        OutputFile.WriteAllText(Path.Combine(folder, RecordFile), JsonSerializer.Serialize(record, new JsonSerializerOptions { WriteIndented = true }));
        return new RunRecord(key, spec.Label, folder, model, figures, seconds, Reused: false);
    }

    /// <summary>SHA-256 of a file, cached by path, size and modification time (inputs are hashed once per store).</summary>
    private string FileHash(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
        {
            throw new RecyclingException($"'{path}': no such file");
        }

        var id = string.Create(CultureInfo.InvariantCulture, $"{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}");
        return _hashes.GetOrAdd(id, _ => FineTuner.Sha256(info.FullName));
    }
}
