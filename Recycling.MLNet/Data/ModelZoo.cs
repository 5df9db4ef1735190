using System.Text.Json;
using Recycling.Onnx;

namespace Recycling.MLNet.Data;

/// <summary>One model of the zoo as zoo.json records it.</summary>
public sealed record ZooModel(
    string Name,
    string Path,
    string Architecture,
    string Role,
    string? Init,
    string Task,
    int ClassCount,
    double ValAccuracy,
    double OodAccuracy,
    string? FisherPath);

/// <summary>
/// The model zoo (models/zoo.json, issue 4): fine-tunings of one base per architecture with roles base / auxiliary /
/// target, evaluation splits (probe_train, val, ood_test) and the PyTorch reference results of the recycling study.
/// </summary>
public sealed class ModelZoo
{
    private readonly JsonElement _root;
    private readonly Dictionary<string, Dataset> _splits = [];

    private ModelZoo(string path, JsonElement root, IReadOnlyList<ZooModel> models)
    {
        FilePath = path;
        Folder = System.IO.Path.GetDirectoryName(path)!;
        _root = root;
        Models = models;
    }

    /// <summary>Full path of zoo.json.</summary>
    public string FilePath { get; }

    public string Folder { get; }

    public IReadOnlyList<ZooModel> Models { get; }

    public IReadOnlyList<string> Architectures => [.. Models.Select(m => m.Architecture).Distinct()];

    /// <summary>Reads zoo.json (or the zoo.json inside a folder).</summary>
    public static ModelZoo Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var file = Directory.Exists(path) ? System.IO.Path.Combine(path, "zoo.json") : path;
        file = System.IO.Path.GetFullPath(file);
        if (!File.Exists(file))
        {
            throw new RecyclingException($"{file}: no model zoo here (models/zoo.json is written by models/generate_zoo.py)");
        }

        JsonElement root;
        try
        {
            Recycling.Onnx.IO.InputFile.RequireRegular(file);
            using var document = JsonDocument.Parse(File.ReadAllBytes(file));
            root = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new RecyclingException($"{file}: not valid JSON ({e.Message})", e);
        }

        var folder = System.IO.Path.GetDirectoryName(file)!;
        try
        {
            var models = root.GetProperty("models").EnumerateArray().Select(m => new ZooModel(
                m.GetProperty("name").GetString()!,
                System.IO.Path.Combine(folder, m.GetProperty("file").GetString()!),
                m.GetProperty("architecture").GetString()!,
                m.GetProperty("role").GetString()!,
                m.TryGetProperty("init", out var init) && init.ValueKind == JsonValueKind.String ? init.GetString() : null,
                m.GetProperty("task").GetString()!,
                m.GetProperty("num_classes").GetInt32(),
                m.GetProperty("accuracy").GetProperty("val").GetDouble(),
                m.GetProperty("accuracy").GetProperty("ood_test").GetDouble(),
                m.TryGetProperty("fisher", out var fisher) && fisher.ValueKind == JsonValueKind.String ? System.IO.Path.Combine(folder, fisher.GetString()!) : null)).ToList();
            return new ModelZoo(file, root, models);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new RecyclingException($"{file}: not a zoo description ({e.Message})", e);
        }
    }

    /// <summary>Finds models/zoo.json from the current directory upwards (the repository root holds models/).</summary>
    public static string? FindDefault(string? start = null)
    {
        for (var dir = new DirectoryInfo(start ?? Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            var candidate = System.IO.Path.Combine(dir.FullName, "models", "zoo.json");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    public IReadOnlyList<ZooModel> Select(string architecture, string role) =>
        [.. Models.Where(m => m.Architecture == architecture && m.Role == role)];

    public ZooModel Model(string name) =>
        Models.FirstOrDefault(m => m.Name == name) ?? throw new RecyclingException($"{FilePath}: no model named '{name}'");

    /// <summary>A shipped split (probe_train, val, ood_test), loaded once.</summary>
    public Dataset Split(string split)
    {
        if (!_splits.TryGetValue(split, out var data))
        {
            var images = _root.GetProperty("data").TryGetProperty($"{split}_images", out var entry)
                ? entry.GetProperty("file").GetString()!
                : throw new RecyclingException($"{FilePath}: no split '{split}'");
            var prefix = System.IO.Path.Combine(Folder, images[..images.LastIndexOf("_images", StringComparison.Ordinal)]);
            var loaded = DatasetLoader.LoadSplit(prefix);
            data = new Dataset(split, loaded.Values, loaded.SampleShape, loaded.Labels, loaded.Domains);
            _splits[split] = data;
        }

        return data;
    }

    /// <summary>
    /// A number of the PyTorch reference study, e.g. Reference("cnn", "onnx", "uniform_soup_diwa", "val");
    /// null when zoo.json does not record it.
    /// </summary>
    public double? Reference(params string[] keys)
    {
        var e = ReferenceElement(keys);
        return e is { ValueKind: JsonValueKind.Number } n ? n.GetDouble() : null;
    }

    /// <summary>A list of model names in the reference study (e.g. a greedy soup's accepted set); empty when absent.</summary>
    public IReadOnlyList<string> ReferenceNames(params string[] keys)
    {
        var e = ReferenceElement(keys);
        return e is { ValueKind: JsonValueKind.Array } a ? [.. a.EnumerateArray().Select(x => x.GetString() ?? "")] : [];
    }

    private JsonElement? ReferenceElement(string[] keys)
    {
        if (!_root.TryGetProperty("reference", out var e))
        {
            return null;
        }

        foreach (var key in keys)
        {
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty(key, out e))
            {
                return null;
            }
        }

        return e;
    }

    /// <summary>The linear-probe regularisation the generator used (l2 of mean cross-entropy + l2/2·‖W‖²), if recorded.</summary>
    public double? ProbeL2 =>
        _root.TryGetProperty("linear_probe", out var lp) && lp.TryGetProperty("l2", out var l2) && l2.ValueKind == JsonValueKind.Number ? l2.GetDouble() : null;
}
