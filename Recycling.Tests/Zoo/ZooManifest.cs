using System.Security.Cryptography;
using System.Text.Json;

namespace Recycling.Tests.Zoo;

/// <summary>The parts of models/zoo.json the zoo tests check, read with System.Text.Json.</summary>
internal sealed record ZooModel(
    string Name,
    string File,
    string Sha256,
    string Architecture,
    string Role,
    string? Init,
    int NumClasses,
    double ValAccuracy,
    double OodAccuracy,
    string? Fisher,
    string? FisherSha256);

internal sealed record ZooDataFile(string Key, string File, string Sha256, string DType, long[] Shape);

internal sealed class ZooManifest
{
    private static readonly Lazy<ZooManifest> Shared = new(() => Load(Path.Combine(ZooPaths.ModelsDirectory, "zoo.json")));

    private ZooManifest(JsonElement root, IReadOnlyList<ZooModel> models, IReadOnlyDictionary<string, ZooDataFile> data)
    {
        Root = root;
        Models = models;
        Data = data;
    }

    public static ZooManifest Instance => Shared.Value;

    public JsonElement Root { get; }

    public IReadOnlyList<ZooModel> Models { get; }

    public IReadOnlyDictionary<string, ZooDataFile> Data { get; }

    public static string PathOf(string relative) => Path.Combine(ZooPaths.ModelsDirectory, relative);

    public static string Sha256Of(string relative)
    {
        using var stream = System.IO.File.OpenRead(PathOf(relative));
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static ZooManifest Load(string path)
    {
        using var doc = JsonDocument.Parse(System.IO.File.ReadAllBytes(path));
        var root = doc.RootElement.Clone();
        var models = root.GetProperty("models").EnumerateArray().Select(m => new ZooModel(
            m.GetProperty("name").GetString()!,
            m.GetProperty("file").GetString()!,
            m.GetProperty("sha256").GetString()!,
            m.GetProperty("architecture").GetString()!,
            m.GetProperty("role").GetString()!,
            m.GetProperty("init").ValueKind == JsonValueKind.Null ? null : m.GetProperty("init").GetString(),
            m.GetProperty("num_classes").GetInt32(),
            m.GetProperty("accuracy").GetProperty("val").GetDouble(),
            m.GetProperty("accuracy").GetProperty("ood_test").GetDouble(),
            m.TryGetProperty("fisher", out var f) ? f.GetString() : null,
            m.TryGetProperty("fisher_sha256", out var fs) ? fs.GetString() : null)).ToList();
        var data = root.GetProperty("data").EnumerateObject().ToDictionary(
            p => p.Name,
            p => new ZooDataFile(
                p.Name,
                p.Value.GetProperty("file").GetString()!,
                p.Value.GetProperty("sha256").GetString()!,
                p.Value.GetProperty("dtype").GetString()!,
                p.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray()));
        return new ZooManifest(root, models, data);
    }
}
