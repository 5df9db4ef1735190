using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Recycling.Onnx;

/// <summary>
/// The one JSON style of every document the toolkit prints or writes (docs/json.md): camelCase names, indented, `&lt;`,
/// `&gt;`, `+` and non-ASCII text unescaped, numbers in their shortest round-trip form, and NaN or ±Infinity written as
/// null with a note (JSON has no such numbers), never an exception.
/// </summary>
internal static class JsonStyle
{
    public static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DictionaryKeyPolicy = null,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new NonFiniteDouble(), new NonFiniteFloat() },
    };

    [ThreadStatic]
    private static int _nonFinite;

    /// <summary>
    /// Serializes <paramref name="value"/>. When it held NaN or infinities, a root object gets the note in its "notes"
    /// array (created when absent); for any other root the note goes to <paramref name="note"/>.
    /// </summary>
    public static string Serialize(object? value, Action<string>? note = null)
    {
        _nonFinite = 0;
        var node = JsonSerializer.SerializeToNode(value, Options);
        return Finish(node, note);
    }

    /// <summary>Rewrites a JSON text in this style (keys as they are).</summary>
    public static string Restyle(string json, Action<string>? note = null)
    {
        _nonFinite = 0;
        return Finish(JsonNode.Parse(json), note);
    }

    private static string Finish(JsonNode? node, Action<string>? note)
    {
        if (_nonFinite > 0)
        {
            var text = $"{_nonFinite} number{(_nonFinite == 1 ? " was" : "s were")} NaN or infinite, written as null";
            if (node is JsonObject root)
            {
                if (root["notes"] is not JsonArray notes)
                {
                    notes = [];
                    root["notes"] = notes;
                }

                notes.Add(text);
            }
            else
            {
                note?.Invoke("note: " + text);
            }
        }

        return node?.ToJsonString(Options) ?? "null";
    }

    private sealed class NonFiniteDouble : JsonConverter<double>
    {
        public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetDouble();

        public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options)
        {
            if (double.IsFinite(value))
            {
                writer.WriteNumberValue(value);
            }
            else
            {
                _nonFinite++;
                writer.WriteNullValue();
            }
        }
    }

    private sealed class NonFiniteFloat : JsonConverter<float>
    {
        public override float Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetSingle();

        public override void Write(Utf8JsonWriter writer, float value, JsonSerializerOptions options)
        {
            if (float.IsFinite(value))
            {
                writer.WriteNumberValue(value);
            }
            else
            {
                _nonFinite++;
                writer.WriteNullValue();
            }
        }
    }
}
