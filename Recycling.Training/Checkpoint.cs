using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>Where a run of <see cref="TrainingLoop"/> stands: the epoch in progress, the next batch in its data order, the running figures and the end-of-epoch results so far.</summary>
internal sealed class TrainingState : IDisposable
{
    /// <summary>The epoch in progress (1-based); past the last epoch when training is over.</summary>
    public int Epoch { get; set; } = 1;

    /// <summary>Index in the epoch's data order of the next batch's first sample.</summary>
    public int Start { get; set; }

    /// <summary>Optimizer steps done in all.</summary>
    public int Step { get; set; }

    public double LossSum { get; set; }

    public int Seen { get; set; }

    public int EpochSteps { get; set; }

    public double LearningRate { get; set; }

    /// <summary>Training time of the epoch in progress before this process (for its samples/s).</summary>
    public double Seconds { get; set; }

    public List<EpochReport> Reports { get; } = [];

    public int BestEpoch { get; set; }

    public double BestAccuracy { get; set; } = double.NegativeInfinity;

    public TrainingLoop.Snapshot? Best { get; set; }

    /// <summary>The float64 sum of the averaged epochs' end weights so far (--average-epochs).</summary>
    public TrainingLoop.Snapshot? Sum { get; set; }

    /// <summary>Moves to the start of the next epoch.</summary>
    public void NextEpoch()
    {
        Epoch++;
        (Start, LossSum, Seen, EpochSteps, LearningRate, Seconds) = (0, 0, 0, 0, 0, 0);
    }

    public void Dispose()
    {
        Best?.Dispose();
        Sum?.Dispose();
    }
}

/// <summary>
/// A fine-tuning run's checkpoint: one file, <c>FOLDER/state.ckpt</c>, replaced atomically (<see cref="OutputFile"/>) at
/// every save, holding everything an identical continuation needs: the trainable parameters and BatchNorm buffers,
/// the optimizer's state (momentum buffers, Adam moments and step counts), LibTorch's random generator, the loop's
/// position (epoch, step, place in the data order; the seeded orders of earlier epochs are replayed), the epoch
/// reports, the best epoch's weights and the epoch-average accumulator, under a fingerprint of everything that
/// defines the run (model and data SHA-256, every setting) and a SHA-256 of the file's content.
/// </summary>
internal sealed class Checkpoint
{
    public const string FileName = "state.ckpt";

    // 2: the optimizer state is ParameterOptimizer's (1 held TorchSharp's optimizers').
    private const string Magic = "recycling-finetune-checkpoint/2";

    private readonly IReadOnlyDictionary<string, string> _fingerprint;
    private readonly CheckpointSettings _settings;
    private readonly OutputFile _file;
    private readonly Stopwatch _sinceSave = Stopwatch.StartNew();

    private Checkpoint(string folder, OutputFile file, IReadOnlyDictionary<string, string> fingerprint, CheckpointSettings settings)
    {
        (Folder, _file, _fingerprint, _settings) = (folder, file, fingerprint, settings);
    }

    public string Folder { get; }

    public string Path => _file.Path;

    /// <summary>The checkpoint of the run <paramref name="options"/> define, or null when checkpoints are off.</summary>
    public static Checkpoint? For(FineTuneOptions options, InputFiles inputs)
    {
        var settings = options.Checkpoint ?? new CheckpointSettings();
        if (!settings.Enabled)
        {
            return null;
        }

        if (settings.Folder is null && WritesInPlace(options.Output, inputs))
        {
            return null; // a device, FIFO or standard stream has no folder beside it to hold a checkpoint
        }

        var folder = System.IO.Path.GetFullPath(settings.Folder ?? options.Output + ".ckpt");
        if (File.Exists(folder))
        {
            throw new RecyclingException($"--checkpoint {Quote(folder)}: is a file; checkpoints go into a folder");
        }

        var file = OutputFile.Prepare(System.IO.Path.Combine(folder, FileName), inputs, "--checkpoint", createFolder: true);
        return new Checkpoint(folder, file, Fingerprint(options), settings);
    }

    private static bool WritesInPlace(string output, InputFiles inputs)
    {
        try
        {
            return OutputFile.Prepare(output, inputs).WritesInPlace;
        }
        catch (RecyclingException)
        {
            return false; // the model's writer reports the problem with the output itself
        }
    }

    /// <summary>Whether a save is due after optimizer step <paramref name="step"/> (epoch ends always save).</summary>
    public bool Due(int step) => _settings.EverySteps is { } every
        ? every > 0 && step % every == 0
        : _sinceSave.Elapsed >= CheckpointSettings.DefaultInterval;

    /// <summary>Writes the state (replacing the previous checkpoint in one rename).</summary>
    public void Save(TrainingState state, OnnxProgram program, Trainer trainer)
    {
        _file.Write(stream =>
        {
            using var hashing = new HashingStream(stream);
            using (var writer = new BinaryWriter(hashing, Encoding.UTF8, leaveOpen: true))
            {
                writer.Write(Magic);
                writer.Write(JsonSerializer.Serialize(_fingerprint));
                writer.Write(state.Epoch);
                writer.Write(state.Start);
                writer.Write(state.Step);
                writer.Write(state.LossSum);
                writer.Write(state.Seen);
                writer.Write(state.EpochSteps);
                writer.Write(state.LearningRate);
                writer.Write(state.Seconds);
                writer.Write(JsonSerializer.Serialize(state.Reports));
                writer.Write(state.BestEpoch);
                writer.Write(state.BestAccuracy);
                WriteTensors(writer, TrainingLoop.Snapshot.Tensors(program).ToList());
                WriteTensors(writer, state.Best?.Values.ToList() ?? []);
                WriteTensors(writer, state.Sum?.Values.ToList() ?? []);
                WriteBytes(writer, trainer.OptimizerState());
                using var rng = TorchSharp.torch.random.get_rng_state();
                WriteBytes(writer, rng.bytes.ToArray());
            }

            stream.Write(hashing.Hash());
        });
        _sinceSave.Restart();
    }

    /// <summary>
    /// Loads this run's checkpoint into <paramref name="program"/>, <paramref name="trainer"/> and LibTorch's random
    /// generator and returns the state to continue from; null to start from the beginning: no checkpoint, --restart or
    /// another run's checkpoint (one line to <paramref name="notice"/> says which). A damaged checkpoint is an error.
    /// </summary>
    public TrainingState? Resume(OnnxProgram program, Trainer trainer, Action<string>? notice)
    {
        if (!File.Exists(Path))
        {
            return null;
        }

        if (_settings.Restart)
        {
            notice?.Invoke($"checkpoint {Quote(Path)} ignored (--restart); training starts from the beginning");
            return null;
        }

        var state = new TrainingState();
        try
        {
            VerifyHash(Path);
            using var stream = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            var end = stream.Length - 32;
            using var reader = new BinaryReader(stream, Encoding.UTF8);
            if (reader.ReadString() != Magic)
            {
                throw new InvalidDataException("not a checkpoint of this version");
            }

            var theirs = JsonSerializer.Deserialize<Dictionary<string, string>>(reader.ReadString()) ?? throw new InvalidDataException("no fingerprint");
            if (Difference(theirs) is { } difference)
            {
                notice?.Invoke($"checkpoint {Quote(Path)} not used: it was made by a different run ({difference}); training starts from the beginning");
                state.Dispose();
                return null;
            }

            state.Epoch = reader.ReadInt32();
            state.Start = reader.ReadInt32();
            state.Step = reader.ReadInt32();
            state.LossSum = reader.ReadDouble();
            state.Seen = reader.ReadInt32();
            state.EpochSteps = reader.ReadInt32();
            state.LearningRate = reader.ReadDouble();
            state.Seconds = reader.ReadDouble();
            state.Reports.AddRange(JsonSerializer.Deserialize<List<EpochReport>>(reader.ReadString()) ?? throw new InvalidDataException("no epoch reports"));
            state.BestEpoch = reader.ReadInt32();
            state.BestAccuracy = reader.ReadDouble();
            if (state.Epoch < 1 || state.Start < 0 || state.Step < 0 || state.Seen < 0 || state.EpochSteps < 0 || state.Reports.Count != state.Epoch - 1)
            {
                throw new InvalidDataException("its position is not consistent");
            }

            var current = ReadTensors(reader, end);
            var best = ReadTensors(reader, end);
            var sum = ReadTensors(reader, end);
            var optimizer = ReadBytes(reader, end);
            var rng = ReadBytes(reader, end);
            if (stream.Position != end)
            {
                throw new InvalidDataException("unexpected bytes after the state");
            }

            state.Best = best.Count == 0 ? null : TrainingLoop.Snapshot.From(best);
            state.Sum = sum.Count == 0 ? null : TrainingLoop.Snapshot.From(sum);
            using (var values = TrainingLoop.Snapshot.From(current))
            {
                values.Load(program);
            }

            trainer.LoadOptimizerState(optimizer);
            using var generator = tensor(rng, device: CPU);
            TorchSharp.torch.random.set_rng_state(generator);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or JsonException or ArgumentException or FormatException or OverflowException
            or UnauthorizedAccessException or NotSupportedException or System.Runtime.InteropServices.ExternalException)
        {
            state.Dispose();
            throw new RecyclingException($"checkpoint {Quote(Path)} is damaged ({e.Message}); delete it or rerun with --restart");
        }

        return state;
    }

    /// <summary>Removes the checkpoint after a successful run (unless kept), and its folder when nothing else is in it.</summary>
    public void Finish()
    {
        if (_settings.KeepAfterSuccess)
        {
            return;
        }

        OutputFile.TryDelete(Path);
        OutputFile.RemoveStaleTemporaries(Folder, FileName);
        try
        {
            if (Directory.Exists(Folder) && !Directory.EnumerateFileSystemEntries(Folder).Any())
            {
                Directory.Delete(Folder);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A folder that cannot be removed is harmless.
        }
    }

    /// <summary>Everything that defines the run, by name: a checkpoint continues only a run with the same values.</summary>
    internal static SortedDictionary<string, string> Fingerprint(FineTuneOptions o)
    {
        var items = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["model"] = FineTuner.Sha256(o.Model),
            ["train"] = FineTuner.DataSha256(o.Train),
            ["validation"] = o.Validation is null ? "none" : FineTuner.DataSha256(o.Validation),
            ["epochs"] = Invariant(o.Epochs),
            ["steps"] = Invariant(o.MaxSteps),
            ["batch-size"] = Invariant(o.BatchSize),
            ["seed"] = Invariant(o.Seed),
            ["shuffle"] = Invariant(o.Shuffle),
            ["output-name"] = o.OutputName ?? "default",
            ["freeze"] = o.Parameters.Freeze?.ToString() ?? "none",
            ["train-only"] = o.Parameters.TrainOnly?.ToString() ?? "none",
            ["head"] = o.Head is null ? "none" : JsonSerializer.Serialize(o.Head),
            ["preprocessing"] = o.Preprocessing?.ToString() ?? "none",
            ["text"] = o.Text is null ? "none" : JsonSerializer.Serialize(o.Text),
            ["vocab"] = o.Text?.Vocab is { } vocab && File.Exists(vocab) ? FineTuner.Sha256(vocab) : "default",
            ["keep"] = o.Keep.ToString(),
            ["average-epochs"] = Invariant(o.AverageEpochs),
            ["tool"] = typeof(Checkpoint).Assembly.GetName().Version?.ToString() ?? "",
        };
        using var settings = JsonDocument.Parse(JsonSerializer.Serialize(o.Settings));
        foreach (var property in settings.RootElement.EnumerateObject())
        {
            items["settings." + property.Name] = property.Value.GetRawText();
        }

        return items;
    }

    private string? Difference(Dictionary<string, string> theirs)
    {
        foreach (var key in _fingerprint.Keys.Union(theirs.Keys).Order(StringComparer.Ordinal))
        {
            var (a, b) = (theirs.GetValueOrDefault(key), _fingerprint.GetValueOrDefault(key));
            if (a != b)
            {
                return $"{key}: {Short(a)} then, {Short(b)} now";
            }
        }

        return null;
    }

    private static string Short(string? value) => value is null ? "absent" : value.Length > 40 ? value[..16] + "…" : value;

    private static string Invariant<T>(T value) => value is null ? "none" : Convert.ToString(value, CultureInfo.InvariantCulture)!;

    private static string Quote(string path) => JsonSerializer.Serialize(path);

    private static void WriteTensors(BinaryWriter writer, IReadOnlyList<KeyValuePair<string, Tensor>> tensors)
    {
        writer.Write(tensors.Count);
        foreach (var (name, value) in tensors)
        {
            using var cpu = value.detach().cpu().contiguous();
            writer.Write(name);
            writer.Write((int)cpu.dtype);
            writer.Write(cpu.shape.Length);
            foreach (var d in cpu.shape)
            {
                writer.Write(d);
            }

            WriteBytes(writer, cpu.bytes);
        }
    }

    private static List<KeyValuePair<string, Tensor>> ReadTensors(BinaryReader reader, long end)
    {
        var count = reader.ReadInt32();
        if (count < 0 || count > end - reader.BaseStream.Position)
        {
            throw new InvalidDataException("bad tensor count");
        }

        var tensors = new List<KeyValuePair<string, Tensor>>(count);
        try
        {
            for (var i = 0; i < count; i++)
            {
                var name = reader.ReadString();
                var type = (ScalarType)reader.ReadInt32();
                var rank = reader.ReadInt32();
                if (rank is < 0 or > 16 || type is not (ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16))
                {
                    throw new InvalidDataException($"tensor '{name}' has an unexpected type or rank");
                }

                var shape = new long[rank];
                for (var d = 0; d < rank; d++)
                {
                    shape[d] = reader.ReadInt64();
                }

                var bytes = ReadBytes(reader, end);
                var t = empty(shape, type, device: CPU);
                if (t.NumberOfElements * t.ElementSize != bytes.Length)
                {
                    t.Dispose();
                    throw new InvalidDataException($"tensor '{name}' has {bytes.Length} bytes for shape [{string.Join(",", shape)}]");
                }

                t.bytes = bytes;
                tensors.Add(new(name, t));
            }
        }
        catch
        {
            tensors.ForEach(p => p.Value.Dispose());
            throw;
        }

        return tensors;
    }

    private static void WriteBytes(BinaryWriter writer, ReadOnlySpan<byte> bytes)
    {
        writer.Write((long)bytes.Length);
        writer.Write(bytes);
    }

    private static byte[] ReadBytes(BinaryReader reader, long end)
    {
        var length = reader.ReadInt64();
        if (length < 0 || length > end - reader.BaseStream.Position || length > Array.MaxLength)
        {
            throw new InvalidDataException("a length runs past the end of the file");
        }

        return reader.ReadBytes((int)length);
    }

    /// <summary>The last 32 bytes must be the SHA-256 of the rest (a cut or altered file is caught before it is read).</summary>
    private static void VerifyHash(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        if (stream.Length < 32)
        {
            throw new InvalidDataException($"{stream.Length} bytes, too short");
        }

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        for (var left = stream.Length - 32; left > 0;)
        {
            var read = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (read == 0)
            {
                throw new EndOfStreamException();
            }

            hash.AppendData(buffer, 0, read);
            left -= read;
        }

        var stored = new byte[32];
        stream.ReadExactly(stored);
        if (!CryptographicOperations.FixedTimeEquals(stored, hash.GetHashAndReset()))
        {
            throw new InvalidDataException("its SHA-256 does not match its content");
        }
    }

    /// <summary>Passes writes through to a stream and hashes them.</summary>
    private sealed class HashingStream(Stream inner) : Stream
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public byte[] Hash() => _hash.GetHashAndReset();

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            _hash.AppendData(buffer);
            inner.Write(buffer);
        }

        public override void Flush() => inner.Flush();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _hash.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
