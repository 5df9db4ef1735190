using System.Globalization;
using System.Text;
using System.Text.Json;
using Recycling.MLNet.Data;
using Recycling.Onnx;

namespace Recycling.Training;

/// <summary>
/// Labelled text for BERT-style models: a CSV (RFC 4180 quoting), TSV (tab-separated, no quoting, as GLUE ships it)
/// or JSONL file (one object per line) whose header (or keys) name a text column, an optional second text column for
/// pairs and an integer label column. Each row is tokenised into a <see cref="Dataset"/> sample of shape [3, L]:
/// token ids, attention mask and token type ids, right-padded to L, the longest sample of the file.
/// </summary>
internal static class TextDataset
{
    /// <summary>Rows of <see cref="Ids"/>, <see cref="Mask"/> and <see cref="TypeIds"/> in a sample (<see cref="TokenizedText"/>).</summary>
    public const int Ids = TokenizedText.Ids, Mask = TokenizedText.Mask, TypeIds = TokenizedText.TypeIds;

    /// <summary>The longest record a text file may have (16 Mi characters).</summary>
    public const int MaxRecordChars = 1 << 24;

    private static readonly string[] TextNames = ["text", "sentence", "sentence1"];
    private static readonly string[] PairNames = ["sentence2", "text_pair"];

    public static Dataset Load(string path, TextTokenizer tokenizer, TextDataOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Onnx.IO.InputFile.RequireRegular(path);
        var lower = Format(path);
        var rows = lower.EndsWith(".jsonl", StringComparison.Ordinal) || lower.EndsWith(".ndjson", StringComparison.Ordinal)
            ? ReadJsonLines(path, options)
            : lower.EndsWith(".csv", StringComparison.Ordinal) || lower.EndsWith(".tsv", StringComparison.Ordinal) || lower.EndsWith(".txt", StringComparison.Ordinal)
                ? ReadDelimited(path, options)
                : throw new RecyclingException($"{MessageText.Path(path)}: text data must be .csv, .tsv, .txt (tab- or comma-separated) or .jsonl, each optionally gzip-compressed (.gz), with a header naming the columns");

        var encoded = new List<(int[] Ids, int[] Types)>();
        var labels = new List<int>();
        foreach (var (text, pair, label) in rows)
        {
            encoded.Add(tokenizer.Encode(text, pair));
            labels.Add(label);
        }

        if (encoded.Count == 0)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: no data rows");
        }

        var length = encoded.Max(e => e.Ids.Length);
        var values = new float[checked(encoded.Count * TokenizedText.Rows * length)];
        for (var i = 0; i < encoded.Count; i++)
        {
            var sample = values.AsSpan(i * TokenizedText.Rows * length, TokenizedText.Rows * length);
            var (ids, types) = encoded[i];
            sample.Slice(Ids * length, length).Fill(tokenizer.PadId);
            for (var t = 0; t < ids.Length; t++)
            {
                sample[(Ids * length) + t] = ids[t];
                sample[(Mask * length) + t] = 1;
                sample[(TypeIds * length) + t] = types[t];
            }
        }

        return new Dataset(path, values, [TokenizedText.Rows, length], [.. labels]);
    }

    private static IEnumerable<(string Text, string? Pair, int Label)> ReadJsonLines(string path, TextDataOptions options)
    {
        using var reader = Open(path);
        var line = 0;
        string? raw;
        while ((raw = reader.ReadLine()) is not null)
        {
            line++;
            if (raw.Length > MaxRecordChars)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: line {line} is longer than {MaxRecordChars} characters");
            }

            if (string.IsNullOrWhiteSpace(raw))
            {
                continue;
            }

            Dictionary<string, JsonElement> row;
            try
            {
                row = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(raw)
                    ?? throw new JsonException("null");
            }
            catch (Exception e) when (e is JsonException or ArgumentException)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: line {line} is not a JSON object ({MessageText.OneLine(e.Message)})", e);
            }

            var keys = row.Keys.ToArray();
            var (textKey, pairKey, labelKey) = Columns(keys, options, path, $"line {line}");
            yield return (Text(row[textKey], path, line, textKey), pairKey is null ? null : Text(row[pairKey], path, line, pairKey), Label(row[labelKey], path, line, labelKey));
        }

        static string Text(JsonElement value, string path, int line, string key) => value.ValueKind == JsonValueKind.String
            ? value.GetString()!
            : throw new RecyclingException($"{MessageText.Path(path)}: line {line}: '{key}' is {value.ValueKind.ToString().ToLowerInvariant()}, not a string");

        static int Label(JsonElement value, string path, int line, string key) =>
            value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out var label) && label >= 0
                ? label
                : throw new RecyclingException($"{MessageText.Path(path)}: line {line}: '{key}' is {MessageText.OneLine(value.GetRawText())}, not a class index (0, 1, 2...)");
    }

    private static IEnumerable<(string Text, string? Pair, int Label)> ReadDelimited(string path, TextDataOptions options)
    {
        var lower = Format(path);
        var separator = lower.EndsWith(".tsv", StringComparison.Ordinal) ? '\t' : lower.EndsWith(".csv", StringComparison.Ordinal) ? ',' : FirstLineSeparator(path);
        using var reader = Open(path);
        string[]? header = null;
        int text = 0, label = 0, width = 0;
        int? pair = null;
        var row = 0;
        foreach (var record in Records(reader, path, separator))
        {
            if (header is null)
            {
                header = [.. record.Select(h => h.Trim())];
                width = header.Length;
                var (t, p, l) = Columns(header, options, path, "header");
                (text, pair, label) = (Array.IndexOf(header, t), p is null ? null : Array.IndexOf(header, p), Array.IndexOf(header, l));
                continue;
            }

            row++;
            if (record.Count == 1 && record[0].Length == 0)
            {
                continue;
            }

            if (record.Count != width)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: data row {row} has {record.Count} fields, the header {width}");
            }

            var field = record[label].Trim();
            if (!int.TryParse(field, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) || value < 0)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: data row {row}: label '{MessageText.OneLine(field)}' is not a class index (0, 1, 2...)");
            }

            yield return (record[text], pair is { } q ? record[q] : null, value);
        }

        if (header is null)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: empty; text data needs a header naming its columns");
        }
    }

    /// <summary>Tab when the first line of a .txt file has one, else comma.</summary>
    private static char FirstLineSeparator(string path)
    {
        using var reader = Open(path);
        int c, n = 0;
        while ((c = reader.Read()) >= 0 && c != '\n' && n++ < MaxRecordChars)
        {
            if (c == '\t')
            {
                return '\t';
            }
        }

        return ',';
    }

    /// <summary>
    /// Records of a delimited file, ended by \n or \r\n. With ',' a field may be quoted ("a, b", "say ""hi""", line
    /// breaks inside quotes); with a tab nothing is quoted.
    /// </summary>
    private static IEnumerable<List<string>> Records(TextReader reader, string path, char separator)
    {
        var fields = new List<string>();
        var field = new StringBuilder();
        int recordChars = 0, line = 1, c;
        bool quoted = false, wasQuoted = false;
        while ((c = reader.Read()) >= 0)
        {
            var ch = (char)c;
            if (++recordChars > MaxRecordChars)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: the record at line {line} is longer than {MaxRecordChars} characters");
            }

            if (quoted)
            {
                if (ch != '"')
                {
                    line += ch == '\n' ? 1 : 0;
                    field.Append(ch);
                }
                else if (reader.Peek() == '"')
                {
                    reader.Read();
                    field.Append('"');
                }
                else
                {
                    quoted = false;
                }
            }
            else if (ch == '"' && separator == ',' && field.Length == 0 && !wasQuoted)
            {
                quoted = wasQuoted = true;
            }
            else if (ch == separator)
            {
                fields.Add(field.ToString());
                field.Clear();
                wasQuoted = false;
            }
            else if (ch == '\n')
            {
                if (field.Length > 0 && field[^1] == '\r')
                {
                    field.Length--;
                }

                fields.Add(field.ToString());
                yield return fields;
                fields = [];
                field.Clear();
                (wasQuoted, recordChars) = (false, 0);
                line++;
            }
            else
            {
                field.Append(ch);
            }
        }

        if (quoted)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: a quote opened before line {line} is never closed");
        }

        if (field.Length > 0 || fields.Count > 0 || wasQuoted)
        {
            fields.Add(field.Length > 0 && field[^1] == '\r' ? field.ToString(0, field.Length - 1) : field.ToString());
            yield return fields;
        }
    }

    private static (string Text, string? Pair, string Label) Columns(IReadOnlyList<string> names, TextDataOptions options, string path, string where)
    {
        string Find(string? wanted, string[] defaults, string what) =>
            (wanted is null ? defaults.Select(d => Match(d)).FirstOrDefault(m => m is not null) : Match(wanted))
            ?? throw new RecyclingException($"{MessageText.Path(path)}: {where}: no {what} column {(wanted is null ? string.Join(" or ", defaults.Select(d => $"'{d}'")) : $"'{wanted}'")} (columns: {MessageText.OneLine(string.Join(", ", names))})");

        string? Match(string name) => names.FirstOrDefault(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));

        var text = Find(options.TextColumn, TextNames, "text");
        var pair = options.PairColumn is not null ? Find(options.PairColumn, [], "pair text") : PairNames.Select(Match).FirstOrDefault(m => m is not null);
        var label = Find(options.LabelColumn, ["label"], "label");
        return (text, pair, label);
    }

    /// <summary>The lower-case name whose ending tells the format: a gzip file's name without ".gz".</summary>
    private static string Format(string path)
    {
        var lower = path.ToLowerInvariant();
        return lower.EndsWith(".gz", StringComparison.Ordinal) ? lower[..^3] : lower;
    }

    private static StreamReader Open(string path)
    {
        try
        {
            return DatasetLoader.OpenText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: cannot open ({e.Message})", e);
        }
    }
}
