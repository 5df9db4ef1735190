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
    private readonly JsonInput _input;
    private readonly JsonElement _root;
    private readonly Dictionary<string, Dataset> _splits = [];

    private ModelZoo(string path, JsonInput root, IReadOnlyList<ZooModel> models)
    {
        FilePath = path;
        Folder = System.IO.Path.GetDirectoryName(path)!;
        _input = root;
        _root = root.Element;
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
            throw new RecyclingException($"{MessageText.Path(file)}: no model zoo here (models/zoo.json is written by models/generate_zoo.py)");
        }

        var root = JsonInput.Load(file, "a zoo description");
        var folder = System.IO.Path.GetDirectoryName(file)!;
        var models = root.Array("models", required: true).Select(m =>
        {
            // A foundation zoo records no accuracy for its base and auxiliary models (their heads answer other tasks):
            // the key is absent there; a key present must hold the object (a null is a damaged file).
            var accuracy = m.Element.TryGetProperty("accuracy", out _) ? m.Object("accuracy") : (JsonInput?)null;
            return new ZooModel(
                m.String("name"),
                System.IO.Path.Combine(folder, m.String("file")),
                m.String("architecture"),
                m.String("role"),
                m.OptionalString("init"),
                m.String("task"),
                m.Int("num_classes"),
                accuracy?.Number("val") ?? double.NaN,
                accuracy?.Number("ood_test") ?? double.NaN,
                m.OptionalString("fisher") is { } fisher ? System.IO.Path.Combine(folder, fisher) : null);
        }).ToList();
        var preprocessing = root.OptionalObject("preprocessing") is { } p
            ? ImagePreprocessing.Parse(p.OptionalString("resize"), p.OptionalNumber("channels") is { } c ? (int)c : null, p.OptionalString("normalize"))
            : null;
        return new ModelZoo(file, root, models)
        {
            Preprocessing = preprocessing,
            FeatureOutput = root.OptionalString("features") ?? "features",
            AccuracySource = root.OptionalString("accuracy_source") ?? "PyTorch",
            OodDescription = root.OptionalString("ood_description") is { } ood ? MessageText.OneLine(ood) : DescribeDomains(root.Element),
        };
    }

    /// <summary>What the OOD test split is, in words: zoo.json's "ood_description" (foundation zoos), else its "domains" (the bundled zoo: rotations); null when it records neither.</summary>
    public string? OodDescription { get; private init; }

    /// <summary>What every split is preprocessed with before a model sees it (a foundation zoo's resize and normalisation); null: none.</summary>
    public ImagePreprocessing? Preprocessing { get; private init; }

    /// <summary>What computed the models' recorded accuracies (zoo.json's "accuracy_source", default PyTorch: the small zoo's generator).</summary>
    public string AccuracySource { get; private init; } = "PyTorch";

    /// <summary>The graph output the linear probes read (zoo.json's "features", default "features").</summary>
    public string FeatureOutput { get; private init; } = "features";

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
        Models.FirstOrDefault(m => m.Name == name) ?? throw new RecyclingException($"{MessageText.Path(FilePath)}: no model named '{name}'");

    /// <summary>A shipped split (probe_train, val, ood_test), loaded once and preprocessed as <see cref="Preprocessing"/> says.</summary>
    public Dataset Split(string split)
    {
        if (!_splits.TryGetValue(split, out var data))
        {
            var images = _input.Object("data").OptionalObject($"{split}_images")?.String("file")
                ?? throw new RecyclingException($"{MessageText.Path(FilePath)}: no split '{split}'");
            if (!images.Contains("_images", StringComparison.Ordinal))
            {
                throw _input.Error($"data.{split}_images.file must name a PREFIX_images.npy[.gz] file, found '{MessageText.OneLine(images)}'");
            }

            var prefix = System.IO.Path.Combine(Folder, images[..images.LastIndexOf("_images", StringComparison.Ordinal)]);
            var loaded = DatasetLoader.LoadSplit(prefix);
            data = new Dataset(split, loaded.Values, loaded.SampleShape, loaded.Labels, loaded.Domains);
            data = Preprocessing?.Apply(data) ?? data;
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
        return e is { ValueKind: JsonValueKind.Array } a ? [.. a.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()! : "")] : [];
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

    /// <summary>The bundled zoo's "domains" {train: [...], ood: X, meaning: "..."} as "MEANING: X (in domain: ...)"; null when absent or of another shape.</summary>
    private static string? DescribeDomains(JsonElement root)
    {
        if (!root.TryGetProperty("domains", out var domains) || domains.ValueKind != JsonValueKind.Object
            || !domains.TryGetProperty("ood", out var ood) || ood.ValueKind is not (JsonValueKind.Number or JsonValueKind.String))
        {
            return null;
        }

        string Text(JsonElement e) => e.ValueKind == JsonValueKind.String ? e.GetString()! : e.GetRawText();
        var meaning = domains.TryGetProperty("meaning", out var m) && m.ValueKind == JsonValueKind.String ? $"{m.GetString()}: " : "domain ";
        var train = domains.TryGetProperty("train", out var t) && t.ValueKind == JsonValueKind.Array
            ? $" (in domain: {string.Join(", ", t.EnumerateArray().Select(Text))})" : "";
        return MessageText.OneLine(meaning + Text(ood) + train);
    }

    /// <summary>The linear-probe regularisation the generator used (l2 of mean cross-entropy + l2/2·‖W‖²), if recorded.</summary>
    public double? ProbeL2 =>
        _root.TryGetProperty("linear_probe", out var lp) && lp.ValueKind == JsonValueKind.Object && lp.TryGetProperty("l2", out var l2) && l2.ValueKind == JsonValueKind.Number ? l2.GetDouble() : null;
}
