using System.Text.Json;

namespace Recycling.Tests.Cli;

/// <summary>
/// Checks a command's JSON against its documented schema (docs/json/COMMAND.schema.json): the subset of JSON Schema
/// the documents use (type, enum, properties, required, additionalProperties, items).
/// </summary>
internal static class JsonSchemaCheck
{
    private static readonly string Folder = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "docs", "json"));

    /// <summary>Parses <paramref name="json"/>, asserts it fits docs/json/<paramref name="command"/>.schema.json, and returns the document.</summary>
    public static JsonDocument Validate(string command, string json)
    {
        using var schema = JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, command + ".schema.json")));
        var document = JsonDocument.Parse(json);
        var problems = new List<string>();
        Check(schema.RootElement, document.RootElement, "$", problems);
        Assert.IsEmpty(problems, $"{command} JSON does not fit its schema:\n{string.Join("\n", problems.Take(20))}\n{json[..Math.Min(json.Length, 2000)]}");
        return document;
    }

    private static void Check(JsonElement schema, JsonElement value, string path, List<string> problems)
    {
        if (schema.TryGetProperty("type", out var type))
        {
            var allowed = type.ValueKind == JsonValueKind.Array ? type.EnumerateArray().Select(t => t.GetString()!).ToList() : [type.GetString()!];
            if (!allowed.Any(t => Fits(t, value)))
            {
                problems.Add($"{path}: expected {string.Join(" or ", allowed)}, found {value.ValueKind} {Excerpt(value)}");
                return;
            }
        }

        if (schema.TryGetProperty("enum", out var choices) && !choices.EnumerateArray().Any(c => c.GetRawText() == value.GetRawText()))
        {
            problems.Add($"{path}: {value.GetRawText()} is not one of {choices.GetRawText()}");
        }

        if (value.ValueKind == JsonValueKind.Object)
        {
            var properties = schema.TryGetProperty("properties", out var p) ? p : default;
            if (schema.TryGetProperty("required", out var required))
            {
                foreach (var key in required.EnumerateArray().Select(k => k.GetString()!).Where(k => !value.TryGetProperty(k, out _)))
                {
                    problems.Add($"{path}: missing key {key}");
                }
            }

            foreach (var member in value.EnumerateObject())
            {
                if (properties.ValueKind == JsonValueKind.Object && properties.TryGetProperty(member.Name, out var memberSchema))
                {
                    Check(memberSchema, member.Value, $"{path}.{member.Name}", problems);
                }
                else if (schema.TryGetProperty("additionalProperties", out var additional))
                {
                    if (additional.ValueKind == JsonValueKind.False)
                    {
                        problems.Add($"{path}: undocumented key {member.Name}");
                    }
                    else if (additional.ValueKind == JsonValueKind.Object)
                    {
                        Check(additional, member.Value, $"{path}.{member.Name}", problems);
                    }
                }
            }
        }

        if (value.ValueKind == JsonValueKind.Array && schema.TryGetProperty("items", out var items))
        {
            int i = 0;
            foreach (var item in value.EnumerateArray())
            {
                Check(items, item, $"{path}[{i++}]", problems);
            }
        }
    }

    private static bool Fits(string type, JsonElement value) => type switch
    {
        "object" => value.ValueKind == JsonValueKind.Object,
        "array" => value.ValueKind == JsonValueKind.Array,
        "string" => value.ValueKind == JsonValueKind.String,
        "number" => value.ValueKind == JsonValueKind.Number,
        "integer" => value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out _),
        "boolean" => value.ValueKind is JsonValueKind.True or JsonValueKind.False,
        "null" => value.ValueKind == JsonValueKind.Null,
        _ => throw new InvalidOperationException($"schema type {type} is not handled by this checker"),
    };

    private static string Excerpt(JsonElement value)
    {
        var text = value.GetRawText();
        return text.Length > 60 ? text[..60] + "..." : text;
    }
}
