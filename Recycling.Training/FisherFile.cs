using System.Globalization;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using Recycling.MLNet.Data;
using Recycling.Onnx;

namespace Recycling.Training;

/// <summary>What <see cref="FisherFile.Compute"/> estimates, on what, and where it writes.</summary>
public sealed record FisherOptions
{
    public required string Model { get; init; }

    public required string Data { get; init; }

    /// <summary>The .npz file written (one float32 array per initializer, numpy.savez layout).</summary>
    public required string Output { get; init; }

    /// <summary>Use the first N samples (null: all).</summary>
    public int? Samples { get; init; }

    public FisherLabels Labels { get; init; } = FisherLabels.Sampled;

    public int Seed { get; init; }

    /// <summary>The graph output read as logits (default "logits", else the only output).</summary>
    public string? OutputName { get; init; }

    /// <summary>How text data are read for a model that takes token ids (null: the defaults); must be null for other models.</summary>
    public TextDataOptions? Text { get; init; }

    /// <summary>Resize, grey to RGB, normalisation of every sample, as <see cref="FineTuneOptions.Preprocessing"/> (the
    /// same class and meaning: a model fine-tuned with some preprocessing gets its Fisher on the same inputs). Grey data
    /// fed to a model that declares 3 channels is copied to 3 channels even when this is null.</summary>
    public ImagePreprocessing? Preprocessing { get; init; }

    /// <summary>Where LibTorch computes the gradients.</summary>
    public TrainingDevice Device { get; init; } = TrainingDevice.Cpu;
}

/// <summary>Diagonal Fisher files for Fisher merging, computed from an ONNX model and labelled data.</summary>
public static class FisherFile
{
    /// <summary>Computes the diagonal Fisher and writes it atomically; returns the tensor count.</summary>
    /// <param name="notice">Gets the line saying that <see cref="TrainingDevice.Auto"/> runs on the CPU (default: standard error).</param>
    public static int Compute(FisherOptions options, Action<string>? notice = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Samples is < 1)
        {
            throw new RecyclingException($"--samples must be at least 1 (got {options.Samples})");
        }

        var device = TrainingDevices.Resolve(options.Device, notice);

        using var model = OnnxModel.Open(options.Model);
        var data = TrainingData.For(model, options.Text).Load(options.Data);
        if (options.Samples is { } n)
        {
            data = FineTuner.Subset(data, n);
        }

        // Prepared as for fine-tuning: a fixed batch or a declared input size other than the preprocessed one is made
        // to fit in a temporary copy (initializer names unchanged).
        var preprocessing = PreparedModel.Preprocessing(model, data, options.Preprocessing);
        using var prepared = PreparedModel.Prepare(model, null, data, preprocessing, device);
        using var program = OnnxProgram.Load(prepared.Model, device: device);
        var feeder = BatchFeeder.For(program, model.Path, data, preprocessing);
        var output = FineTuner.ChooseOutput(program, model.Path, options.OutputName);
        if (options.Labels == FisherLabels.True)
        {
            feeder.CheckLabels(program, output, data, null);
        }

        var samples = Enumerable.Range(0, data.Count).Select(i => feeder.Batch(data, [i])).ToList();
        Dictionary<string, float[]> fisher;
        try
        {
            fisher = FisherEstimator.Compute(program, output, samples, options.Labels, options.Seed);
        }
        finally
        {
            samples.ForEach(s => s.Dispose());
        }

        var shapes = program.Parameters.ToDictionary(p => p.Key, p => p.Value.shape);
        WriteNpz(options.Output, fisher.Select(f => (f.Key, shapes[f.Key], f.Value)));
        return fisher.Count;
    }

    /// <summary>Writes float32 arrays as an uncompressed .npz (numpy.savez), through a temporary file renamed into place.</summary>
    internal static void WriteNpz(string path, IEnumerable<(string Name, long[] Shape, float[] Values)> arrays)
    {
        var full = Path.GetFullPath(path);
        var temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            using (var zip = new ZipArchive(stream, ZipArchiveMode.Create))
            {
                foreach (var (name, shape, values) in arrays)
                {
                    using var entry = zip.CreateEntry(name + ".npy", CompressionLevel.NoCompression).Open();
                    var dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape.Select(d => d.ToString(CultureInfo.InvariantCulture)));
                    var header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}";
                    var padded = header.PadRight(((10 + header.Length + 1 + 63) / 64 * 64) - 10 - 1) + "\n";
                    entry.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y']);
                    entry.Write([1, 0, (byte)(padded.Length & 0xFF), (byte)(padded.Length >> 8)]);
                    entry.Write(Encoding.ASCII.GetBytes(padded));
                    entry.Write(MemoryMarshal.AsBytes(values.AsSpan()));
                }
            }

            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }
}
