using Recycling.Onnx.Numpy;

namespace Recycling.Onnx.Merging;

/// <summary>
/// Diagonal Fisher tensors, one file per merged input, keyed by the input's tensor names: an .onnx file whose
/// initializers carry the Fisher values, or an .npz archive (numpy.savez) with one array per tensor name.
/// </summary>
internal sealed class FisherSet : IDisposable
{
    private readonly List<Func<string, FisherEntry?>> _byName;
    private readonly List<OnnxModel> _models;
    private readonly List<NpzArchive> _archives;
    private readonly IReadOnlyList<string> _files;

    private FisherSet(List<OnnxModel> models, List<NpzArchive> archives, List<Func<string, FisherEntry?>> byName, IReadOnlyList<string> files)
    {
        _models = models;
        _archives = archives;
        _byName = byName;
        _files = files;
    }

    public IEnumerable<string> Files => _models.SelectMany(m => m.Files).Concat(_files.Where(f => !f.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)));

    public static FisherSet Open(IReadOnlyList<string> files, IReadOnlyList<OnnxModel> inputs)
    {
        if (files.Count != inputs.Count)
        {
            throw new RecyclingException($"{files.Count} Fisher files given for {inputs.Count} models: give one per model, in the same order");
        }

        var models = new List<OnnxModel>();
        var archives = new List<NpzArchive>();
        var byName = new List<Func<string, FisherEntry?>>();
        try
        {
            foreach (var file in files)
            {
                if (file.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
                {
                    var model = OnnxModel.Open(file);
                    models.Add(model);
                    var tensors = model.Tensors.Where(t => t.Kind == TensorKind.Initializer).GroupBy(t => t.Name)
                        .ToDictionary(g => g.Key, g => new FisherEntry(g.First().Shape, g.First().ReadFloat32, g.First().ReadFloat32));
                    byName.Add(tensors.GetValueOrDefault);
                }
                else if (file.EndsWith(".npz", StringComparison.OrdinalIgnoreCase))
                {
                    // Members are read only when a merged tensor asks for them: header first, then the values.
                    var archive = NpzArchive.Open(Path.GetFullPath(file));
                    archives.Add(archive);
                    byName.Add(n => archive.Contains(n) ? new FisherEntry(archive.Header(n).Shape, () => archive.Read(n).ToSingleArray(), null) : null);
                }
                else
                {
                    throw new RecyclingException($"{file}: Fisher files are .onnx models whose initializers hold the Fisher values, or .npz archives of arrays named by tensor");
                }
            }

            return new FisherSet(models, archives, byName, [.. files.Select(Path.GetFullPath)]);
        }
        catch
        {
            models.ForEach(m => m.Dispose());
            archives.ForEach(a => a.Dispose());
            throw;
        }
    }

    /// <summary>The Fisher values for <paramref name="tensor"/> of input <paramref name="input"/>, as float32.</summary>
    public float[] For(int input, OnnxTensor tensor) => Entry(input, tensor).Read();

    /// <summary>
    /// Reads the Fisher values of <paramref name="tensor"/> of input <paramref name="input"/> a range at a time: from an
    /// .onnx Fisher file chunk by chunk (bounded memory), from an .npz member whole on the first call (members may be
    /// compressed), then from that copy.
    /// </summary>
    public FisherChunkReader Reader(int input, OnnxTensor tensor)
    {
        var entry = Entry(input, tensor);
        if (entry.ReadRange is { } range)
        {
            return (offset, destination) => range(offset, destination);
        }

        float[]? values = null;
        return (offset, destination) => (values ??= entry.Read()).AsSpan(checked((int)offset), destination.Length).CopyTo(destination);
    }

    private FisherEntry Entry(int input, OnnxTensor tensor)
    {
        var file = _files[input];
        var fisher = _byName[input](tensor.Name) ?? throw new RecyclingException($"{file}: no Fisher tensor named '{tensor.Name}'");

        if (!fisher.Shape.SequenceEqual(tensor.Shape))
        {
            throw new RecyclingException($"{file}: Fisher tensor '{tensor.Name}' has shape [{string.Join(",", fisher.Shape)}], the weight has shape [{string.Join(",", tensor.Shape)}]: a Fisher array must have the weight's exact shape");
        }

        return fisher;
    }

    public void Dispose()
    {
        _models.ForEach(m => m.Dispose());
        _archives.ForEach(a => a.Dispose());
    }

    private sealed record FisherEntry(IReadOnlyList<long> Shape, Func<float[]> Read, FisherChunkReader? ReadRange);
}

/// <summary>Reads Fisher values [offset, offset + destination.Length) of one tensor as float32.</summary>
internal delegate void FisherChunkReader(long offset, Span<float> destination);
