using System.Globalization;
using System.IO.Compression;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.MLNet.Data;

/// <summary>How text files name their label and domain columns.</summary>
public sealed record TextColumns
{
    /// <summary>Label column: a header name (case-insensitive) or a 0-based index; default "Label", else the first column.</summary>
    public string? Label { get; init; }

    /// <summary>Domain-id column (header name or index), optional; "Domain" is used when the header has one.</summary>
    public string? Domain { get; init; }
}

/// <summary>
/// Loads labelled data in the formats the toolkit reads: the zoo's split files (PREFIX_images/_labels/_domains .npy,
/// gzip allowed), an .npz archive (images|x|features, labels|y, optional domains), and delimited text files as ML.NET
/// reads them (CSV/TSV/semicolon, optional header, gzip allowed) with a label column and numeric feature columns.
/// uint8 arrays are scaled to [0, 1] (value / 255), the zoo's input convention; other numbers are used as they are.
/// </summary>
public static class DatasetLoader
{
    private static readonly string[] ImageKeys = ["images", "x", "features", "inputs"];
    private static readonly string[] LabelKeys = ["labels", "y", "label"];

    /// <summary>
    /// Loads <paramref name="spec"/>: a text file (.csv, .tsv, .txt, optionally .gz), an .npz archive, an images .npy
    /// file named PREFIX_images.npy[.gz], or a split prefix such as models/data/val.
    /// </summary>
    public static Dataset Load(string spec, TextColumns? columns = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(spec);
        var lower = spec.ToLowerInvariant();
        var bare = lower.EndsWith(".gz", StringComparison.Ordinal) ? lower[..^3] : lower;
        if (bare.EndsWith(".csv", StringComparison.Ordinal) || bare.EndsWith(".tsv", StringComparison.Ordinal) || bare.EndsWith(".txt", StringComparison.Ordinal))
        {
            return LoadText(spec, columns ?? new TextColumns());
        }

        if (bare.EndsWith(".npz", StringComparison.Ordinal))
        {
            return LoadNpz(spec);
        }

        if (bare.EndsWith("_images.npy", StringComparison.Ordinal))
        {
            return LoadSplit(spec[..spec.LastIndexOf("_images", StringComparison.OrdinalIgnoreCase)]);
        }

        if (bare.EndsWith(".npy", StringComparison.Ordinal))
        {
            throw new RecyclingException($"{MessageText.Path(spec)}: a lone .npy holds no labels; name the images PREFIX_images.npy beside PREFIX_labels.npy, or use an .npz with images and labels");
        }

        return LoadSplit(spec);
    }

    /// <summary>The files <see cref="Load"/> may read for <paramref name="spec"/> (some may not exist): for declaring
    /// a command's inputs, which its outputs must not overwrite.</summary>
    internal static IEnumerable<string> Files(string spec)
    {
        ArgumentException.ThrowIfNullOrEmpty(spec);
        yield return spec;
        var bare = spec.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? spec[..^3] : spec;
        var prefix = bare.EndsWith("_images.npy", StringComparison.OrdinalIgnoreCase) ? spec[..spec.LastIndexOf("_images", StringComparison.OrdinalIgnoreCase)] : spec;
        foreach (var part in new[] { "images", "labels", "domains" })
        {
            yield return $"{prefix}_{part}.npy.gz";
            yield return $"{prefix}_{part}.npy";
        }
    }

    /// <summary>Loads PREFIX_images, PREFIX_labels and (when present) PREFIX_domains, each .npy or .npy.gz.</summary>
    public static Dataset LoadSplit(string prefix)
    {
        var images = Find(prefix, "images") ?? throw new RecyclingException(
            $"{prefix}: no data found: expected {prefix}_images.npy[.gz] with {prefix}_labels.npy[.gz], or a .csv/.tsv/.npz file");
        var labels = Find(prefix, "labels") ?? throw new RecyclingException($"{MessageText.Path(images)}: no labels beside it ({prefix}_labels.npy[.gz])");
        var domains = Find(prefix, "domains");
        return FromArrays(prefix, NpyFile.Read(images), images, NpyFile.Read(labels), labels, domains is null ? null : NpyFile.Read(domains), domains);
    }

    private static string? Find(string prefix, string part) =>
        new[] { $"{prefix}_{part}.npy.gz", $"{prefix}_{part}.npy" }.FirstOrDefault(File.Exists);

    private static Dataset LoadNpz(string path)
    {
        var arrays = NpyFile.ReadNpz(path);
        var images = ImageKeys.FirstOrDefault(arrays.ContainsKey) ?? throw new RecyclingException(
            $"{path}: no input array (looked for {string.Join(", ", ImageKeys)}; found {string.Join(", ", arrays.Keys)})");
        var labels = LabelKeys.FirstOrDefault(arrays.ContainsKey) ?? throw new RecyclingException(
            $"{path}: no label array (looked for {string.Join(", ", LabelKeys)}; found {string.Join(", ", arrays.Keys)})");
        var domains = arrays.ContainsKey("domains") ? "domains" : null;
        return FromArrays(path, arrays[images], $"{path}[{images}]", arrays[labels], $"{path}[{labels}]",
            domains is null ? null : arrays[domains], domains is null ? null : $"{path}[domains]");
    }

    private static Dataset FromArrays(string name, NpyArray images, string imagesName, NpyArray labels, string labelsName, NpyArray? domains, string? domainsName)
    {
        if (images.Shape.Count < 1)
        {
            throw new RecyclingException($"{imagesName}: a scalar is not a set of samples");
        }

        long count = images.Shape[0];
        if (labels.Shape.Count != 1 || labels.Shape[0] != count)
        {
            throw new RecyclingException($"{labelsName}: expected {count} labels (one per sample of {imagesName}), found shape [{string.Join(",", labels.Shape)}]");
        }

        if (domains is not null && (domains.Shape.Count != 1 || domains.Shape[0] != count))
        {
            throw new RecyclingException($"{domainsName}: expected {count} domain ids, found shape [{string.Join(",", domains.Shape)}]");
        }

        var values = images.ToSingleArray();
        if (images.DType == NpyDType.UInt8)
        {
            System.Numerics.Tensors.TensorPrimitives.Multiply(values, 1f / 255f, values);
        }

        if (images.Shape.Skip(1).Any(d => d > int.MaxValue))
        {
            throw new RecyclingException($"{MessageText.Path(imagesName)}: sample shape [{string.Join(",", images.Shape.Skip(1))}] is too large");
        }

        var shape = images.Shape.Count == 1 ? new[] { 1 } : images.Shape.Skip(1).Select(d => (int)d).ToArray();
        return new Dataset(name, values, shape, ToClassIndices(labels, labelsName), domains is null ? null : ToClassIndices(domains, domainsName!));
    }

    private static int[] ToClassIndices(NpyArray array, string name)
    {
        if (array.DType is NpyDType.Float16 or NpyDType.Float32 or NpyDType.Float64)
        {
            var floats = array.ToSingleArray();
            if (floats.Any(f => f != MathF.Round(f)))
            {
                throw new RecyclingException($"{MessageText.Path(name)}: labels must be integers, found {floats.First(f => f != MathF.Round(f))}");
            }

            if (floats.Any(f => f is < int.MinValue or > int.MaxValue))
            {
                throw new RecyclingException($"{MessageText.Path(name)}: labels must be class indices 0, 1, 2...; found {floats.First(f => f is < int.MinValue or > int.MaxValue)}");
            }

            return [.. floats.Select(f => (int)f)];
        }

        var longs = array.ToInt64Array();
        if (longs.Any(v => v is < int.MinValue or > int.MaxValue))
        {
            throw new RecyclingException($"{MessageText.Path(name)}: labels must be class indices 0, 1, 2...; found {longs.First(v => v is < int.MinValue or > int.MaxValue)}");
        }

        return [.. longs.Select(v => (int)v)];
    }

    /// <summary>Reads a delimited text file (separator detected from the first line: tab, comma, semicolon or spaces).</summary>
    public static Dataset LoadText(string path, TextColumns columns)
    {
        ArgumentNullException.ThrowIfNull(columns);
        using var reader = OpenText(path);
        var lines = new List<string[]>();
        char[]? separators = null;
        string? line;
        int lineNumber = 0;
        string[]? header = null;
        while ((line = reader.ReadLine()) is not null)
        {
            lineNumber++;
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            separators ??= line.Contains('\t', StringComparison.Ordinal) ? ['\t'] : line.Contains(',', StringComparison.Ordinal) ? [','] : line.Contains(';', StringComparison.Ordinal) ? [';'] : [' '];
            var fields = line.Split(separators, separators[0] == ' ' ? StringSplitOptions.RemoveEmptyEntries : StringSplitOptions.None);
            if (header is null && lines.Count == 0 && fields.Any(f => !double.TryParse(f, NumberStyles.Float, CultureInfo.InvariantCulture, out _)))
            {
                header = [.. fields.Select(f => f.Trim().Trim('"'))];
                continue;
            }

            lines.Add(fields);
        }

        if (lines.Count == 0)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: no data rows");
        }

        int width = header?.Length ?? lines[0].Length;
        int labelColumn = Column(columns.Label, header, width, path, "label") ?? (header is not null ? Column("Label", header, width, path, "label", optional: true) : null) ?? 0;
        int? domainColumn = Column(columns.Domain, header, width, path, "domain") ?? (header is not null ? Column("Domain", header, width, path, "domain", optional: true) : null);
        var featureColumns = Enumerable.Range(0, width).Where(c => c != labelColumn && c != domainColumn).ToArray();
        if (featureColumns.Length == 0)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: no feature columns besides the label");
        }

        var values = new float[checked(lines.Count * featureColumns.Length)];
        var labels = new int[lines.Count];
        var domains = domainColumn is null ? null : new int[lines.Count];
        for (int r = 0; r < lines.Count; r++)
        {
            var fields = lines[r];
            if (fields.Length != width)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: data row {r + 1} has {fields.Length} fields, expected {width}");
            }

            labels[r] = ParseInt(fields[labelColumn], path, r, "label");
            if (domains is not null)
            {
                domains[r] = ParseInt(fields[domainColumn!.Value], path, r, "domain");
            }

            for (int c = 0; c < featureColumns.Length; c++)
            {
                var field = fields[featureColumns[c]].Trim();
                if (!float.TryParse(field, NumberStyles.Float, CultureInfo.InvariantCulture, out values[(r * featureColumns.Length) + c]))
                {
                    throw new RecyclingException($"{MessageText.Path(path)}: data row {r + 1}, column {featureColumns[c] + 1}: '{field}' is not a number");
                }
            }
        }

        return new Dataset(path, values, [featureColumns.Length], labels, domains);
    }

    private static int? Column(string? wanted, string[]? header, int width, string path, string what, bool optional = false)
    {
        if (wanted is null)
        {
            return null;
        }

        if (header is not null)
        {
            int index = Array.FindIndex(header, h => string.Equals(h, wanted, StringComparison.OrdinalIgnoreCase));
            if (index >= 0)
            {
                return index;
            }
        }

        if (int.TryParse(wanted, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < width)
        {
            return i;
        }

        return optional ? null : throw new RecyclingException(
            $"{path}: no {what} column '{wanted}' ({(header is null ? $"no header; give a 0-based index below {width}" : $"columns: {string.Join(", ", header)}")})");
    }

    private static int ParseInt(string field, string path, int row, string what)
    {
        field = field.Trim().Trim('"');
        if (int.TryParse(field, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= 0)
        {
            return v;
        }

        if (double.TryParse(field, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && d == Math.Round(d) && d >= 0 && d < int.MaxValue)
        {
            return (int)d;
        }

        throw new RecyclingException($"{MessageText.Path(path)}: data row {row + 1}: {what} '{field}' is not a class index (0, 1, 2...)");
    }

    private static StreamReader OpenText(string path)
    {
        FileStream file;
        try
        {
            file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: cannot open ({e.Message})", e);
        }

        var first = new byte[2];
        int got = file.Read(first);
        file.Position = 0;
        Stream stream = got == 2 && first[0] == 0x1F && first[1] == 0x8B ? new GZipStream(file, CompressionMode.Decompress) : file;
        return new StreamReader(stream);
    }
}
