namespace Recycling.Onnx.Merging;

/// <summary>
/// Diagonal Fisher tensors, one file per merged input, keyed by the input's tensor names: an .onnx file whose
/// initializers carry the Fisher values.
/// </summary>
internal sealed class FisherSet : IDisposable
{
    private readonly List<Dictionary<string, OnnxTensor>> _byName;
    private readonly List<OnnxModel> _models;

    private FisherSet(List<OnnxModel> models)
    {
        _models = models;
        _byName = [.. models.Select(m => m.Tensors.Where(t => t.Kind == TensorKind.Initializer).GroupBy(t => t.Name).ToDictionary(g => g.Key, g => g.First()))];
    }

    public IEnumerable<string> Files => _models.SelectMany(m => m.Files);

    public static FisherSet Open(IReadOnlyList<string> files, IReadOnlyList<OnnxModel> inputs)
    {
        if (files.Count != inputs.Count)
        {
            throw new RecyclingException($"{files.Count} Fisher files given for {inputs.Count} models: give one per model, in the same order");
        }

        var models = new List<OnnxModel>();
        try
        {
            foreach (var file in files)
            {
                if (!file.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
                {
                    throw new RecyclingException($"{file}: Fisher files are read as ONNX models whose initializers hold the Fisher values (.onnx)");
                }

                models.Add(OnnxModel.Open(file));
            }

            return new FisherSet(models);
        }
        catch
        {
            models.ForEach(m => m.Dispose());
            throw;
        }
    }

    /// <summary>The Fisher values for <paramref name="tensor"/> of input <paramref name="input"/>, as float32.</summary>
    public float[] For(int input, OnnxTensor tensor)
    {
        if (!_byName[input].TryGetValue(tensor.Name, out var fisher))
        {
            throw new RecyclingException($"{_models[input].Path}: no Fisher tensor named '{tensor.Name}'");
        }

        if (fisher.ElementCount != tensor.ElementCount)
        {
            throw new RecyclingException($"{_models[input].Path}: Fisher tensor '{tensor.Name}' has {fisher.ElementCount} elements, the weight has {tensor.ElementCount}");
        }

        return fisher.ReadFloat32();
    }

    public void Dispose() => _models.ForEach(m => m.Dispose());
}
