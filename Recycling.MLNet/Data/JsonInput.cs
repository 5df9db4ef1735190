using System.Globalization;
using System.Text;
using System.Text.Json;
using Recycling.Onnx;

namespace Recycling.MLNet.Data;

/// <summary>
/// A JSON value read from a user's file (certificates, zoo manifests), with typed accessors whose errors are one line
/// naming the file and the key path: "'f.json': certificates[1].name must be a string, found null". Optional keys may
/// be absent or null.
/// </summary>
internal readonly struct JsonInput
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly string _file;
    private readonly string _path;

    private JsonInput(string file, string path, JsonElement element)
    {
        _file = file;
        _path = path;
        Element = element;
    }

    public JsonElement Element { get; }

    /// <summary>Parses <paramref name="file"/>; its root must be an object.</summary>
    public static JsonInput Load(string file, string what)
    {
        Recycling.Onnx.IO.InputFile.RequireRegular(file);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecyclingException($"{MessageText.Path(file)}: cannot read {what} ({MessageText.OneLine(e.Message)})", e);
        }

        try
        {
            _ = StrictUtf8.GetCharCount(bytes);
        }
        catch (DecoderFallbackException e)
        {
            // JsonDocument checks the UTF-8 of strings only when they are read, and then throws InvalidOperationException.
            throw new RecyclingException($"{MessageText.Path(file)}: not valid JSON (invalid UTF-8 at byte {e.Index})", e);
        }

        try
        {
            using var document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 64 });
            var root = new JsonInput(file, "", document.RootElement.Clone());
            return root.Element.ValueKind == JsonValueKind.Object
                ? root
                : throw new RecyclingException($"{MessageText.Path(file)}: not {what} (the document must be a JSON object, found {Kind(root.Element)})");
        }
        catch (JsonException e)
        {
            throw new RecyclingException($"{MessageText.Path(file)}: not valid JSON ({MessageText.OneLine(e.Message)})", e);
        }
    }

    public bool Has(string key) => Element.TryGetProperty(key, out var value) && value.ValueKind != JsonValueKind.Null;

    public string String(string key) => OptionalString(key) ?? throw Missing(key, "a string");

    public string? OptionalString(string key) => Get(key, JsonValueKind.String, "a string") is { } e ? e.GetString() : null;

    public double Number(string key) => OptionalNumber(key) ?? throw Missing(key, "a number");

    public double? OptionalNumber(string key) => Get(key, JsonValueKind.Number, "a number") is { } e ? e.GetDouble() : null;

    public int Int(string key)
    {
        var e = Get(key, JsonValueKind.Number, "a whole number") ?? throw Missing(key, "a whole number");
        return e.TryGetInt32(out var value) ? value : throw Wrong(key, "a whole number", e.GetRawText());
    }

    public JsonInput Object(string key) => OptionalObject(key) ?? throw Missing(key, "an object");

    public JsonInput? OptionalObject(string key) => Get(key, JsonValueKind.Object, "an object") is { } e ? new JsonInput(_file, Join(key), e) : null;

    /// <summary>The items of an array (empty when the key is absent and <paramref name="required"/> is false).</summary>
    public IReadOnlyList<JsonInput> Array(string key, bool required = false)
    {
        if (Get(key, JsonValueKind.Array, "an array") is not { } e)
        {
            return required ? throw Missing(key, "an array") : [];
        }

        var file = _file;
        var path = Join(key);
        return [.. e.EnumerateArray().Select((item, i) => new JsonInput(file, string.Create(CultureInfo.InvariantCulture, $"{path}[{i}]"), item))];
    }

    /// <summary>This value as a string (for array items).</summary>
    public string AsString() => Element.ValueKind == JsonValueKind.String
        ? Element.GetString()!
        : throw new RecyclingException($"{MessageText.Path(_file)}: {_path} must be a string, found {Kind(Element)}");

    /// <summary>An error about this value, naming the file and the key.</summary>
    public RecyclingException Error(string problem) => new($"{MessageText.Path(_file)}: {(_path.Length == 0 ? "" : _path + ": ")}{problem}");

    private JsonElement? Get(string key, JsonValueKind kind, string expected)
    {
        if (!Element.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        return value.ValueKind == kind ? value : throw Wrong(key, expected, Kind(value));
    }

    private string Join(string key) => _path.Length == 0 ? key : _path + "." + key;

    private RecyclingException Missing(string key, string expected) =>
        new($"{MessageText.Path(_file)}: {Join(key)} must be {expected}, found {(Element.TryGetProperty(key, out _) ? "null" : "nothing (the key is missing)")}");

    private RecyclingException Wrong(string key, string expected, string found) =>
        new($"{MessageText.Path(_file)}: {Join(key)} must be {expected}, found {MessageText.OneLine(found)}");

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "the number " + e.GetRawText(),
        JsonValueKind.True or JsonValueKind.False => e.GetRawText(),
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => "null",
    };
}
