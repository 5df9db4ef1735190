using System.Globalization;
using System.IO.Compression;
using Recycling.Onnx;
using Recycling.Onnx.IO;
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
        if (File.Exists(spec))
        {
            InputFile.RequireRegular(spec);
        }

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
        // Only the arrays used are inflated: an archive may carry other, large members.
        using var archive = NpzArchive.Open(path);
        var images = ImageKeys.FirstOrDefault(archive.Contains) ?? throw new RecyclingException(
            $"{MessageText.Path(path)}: no input array (looked for {string.Join(", ", ImageKeys)}; found {string.Join(", ", archive.Names)})");
        var labels = LabelKeys.FirstOrDefault(archive.Contains) ?? throw new RecyclingException(
            $"{MessageText.Path(path)}: no label array (looked for {string.Join(", ", LabelKeys)}; found {string.Join(", ", archive.Names)})");
        var domains = archive.Contains("domains") ? "domains" : null;
        return FromArrays(path, archive.Read(images), $"{path}[{images}]", archive.Read(labels), $"{path}[{labels}]",
            domains is null ? null : archive.Read(domains), domains is null ? null : $"{path}[domains]");
    }

    private static Dataset FromArrays(string name, NpyArray images, string imagesName, NpyArray labels, string labelsName, NpyArray? domains, string? domainsName)
    {
        if (images.Shape.Count < 1)
        {
            throw new RecyclingException($"{MessageText.Path(imagesName)}: a scalar is not a set of samples");
        }

        long count = images.Shape[0];
        if (labels.Shape.Count != 1 || labels.Shape[0] != count)
        {
            throw new RecyclingException($"{MessageText.Path(labelsName)}: expected {count} labels (one per sample of {imagesName}), found shape [{string.Join(",", labels.Shape)}]");
        }

        if (domains is not null && (domains.Shape.Count != 1 || domains.Shape[0] != count))
        {
            throw new RecyclingException($"{MessageText.Path(domainsName)}: expected {count} domain ids, found shape [{string.Join(",", domains.Shape)}]");
        }

        long sampleSize = images.Shape.Skip(1).Aggregate(1L, (a, d) => a * Math.Min(d, int.MaxValue));
        if (sampleSize is 0 or > int.MaxValue)
        {
            throw new RecyclingException($"{MessageText.Path(imagesName)}: samples of shape [{string.Join(",", images.Shape.Skip(1))}] hold {(sampleSize == 0 ? "no values" : "over 2^31 values")}");
        }

        var shape = images.Shape.Count == 1 ? new[] { 1 } : images.Shape.Skip(1).Select(d => (int)d).ToArray();
        var values = images.ToSingleArray();
        if (images.DType == NpyDType.UInt8)
        {
            System.Numerics.Tensors.TensorPrimitives.Multiply(values, 1f / 255f, values);
        }

        return new Dataset(name, values, shape, ToClassIndices(labels, labelsName), domains is null ? null : ToClassIndices(domains, domainsName!));
    }

    private static int[] ToClassIndices(NpyArray array, string name)
    {
        if (array.DType.Row().IsFloatingPoint)
        {
            var floats = array.ToSingleArray();
            foreach (var f in floats.Where(f => f != MathF.Round(f) || !(f >= 0 && f < int.MaxValue)))
            {
                throw new RecyclingException($"{MessageText.Path(name)}: labels must be class indices 0, 1, 2..., found {f}");
            }

            return [.. floats.Select(f => (int)f)];
        }

        var values = array.ToInt64Array();
        foreach (var v in values.Where(v => v is < 0 or > int.MaxValue))
        {
            throw new RecyclingException($"{MessageText.Path(name)}: labels must be class indices 0, 1, 2..., found {v}");
        }

        return [.. values.Select(v => (int)v)];
    }

    /// <summary>
    /// Reads a delimited text file (separator detected from the first line: tab, comma, semicolon or spaces), row by
    /// row into the value array. Lines are limited to <see cref="MaxLineChars"/> characters and gzip-compressed text
    /// to <see cref="MaxInflatedTextBytes"/> once inflated.
    /// </summary>
    public static Dataset LoadText(string path, TextColumns columns)
    {
        ArgumentNullException.ThrowIfNull(columns);
        using var reader = OpenText(path);
        char[]? separators = null;
        string[]? header = null;
        int width = 0, labelColumn = 0;
        int? domainColumn = null;
        int[] featureColumns = [];
        var values = new List<float>();
        var labels = new List<int>();
        var domains = new List<int>();
        int row = 0;
        foreach (var line in Lines(reader, path))
        {
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            separators ??= line.Contains('\t', StringComparison.Ordinal) ? ['\t'] : line.Contains(',', StringComparison.Ordinal) ? [','] : line.Contains(';', StringComparison.Ordinal) ? [';'] : [' '];
            var fields = line.Split(separators, separators[0] == ' ' ? StringSplitOptions.RemoveEmptyEntries : StringSplitOptions.None);
            if (header is null && row == 0 && fields.Any(f => !double.TryParse(f, NumberStyles.Float, CultureInfo.InvariantCulture, out _)))
            {
                header = [.. fields.Select(f => f.Trim().Trim('"'))];
                continue;
            }

            if (row == 0)
            {
                width = header?.Length ?? fields.Length;
                labelColumn = Column(columns.Label, header, width, path, "label") ?? (header is not null ? Column("Label", header, width, path, "label", optional: true) : null) ?? 0;
                domainColumn = Column(columns.Domain, header, width, path, "domain") ?? (header is not null ? Column("Domain", header, width, path, "domain", optional: true) : null);
                int label = labelColumn;
                int? domain = domainColumn;
                featureColumns = [.. Enumerable.Range(0, width).Where(c => c != label && c != domain)];
                if (featureColumns.Length == 0)
                {
                    throw new RecyclingException($"{MessageText.Path(path)}: no feature columns besides the label");
                }
            }

            if (fields.Length != width)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: data row {row + 1} has {fields.Length} fields, expected {width}");
            }

            labels.Add(ParseInt(fields[labelColumn], path, row, "label"));
            if (domainColumn is { } d)
            {
                domains.Add(ParseInt(fields[d], path, row, "domain"));
            }

            foreach (int c in featureColumns)
            {
                var field = fields[c].Trim();
                if (!float.TryParse(field, NumberStyles.Float, CultureInfo.InvariantCulture, out float value))
                {
                    throw new RecyclingException($"{MessageText.Path(path)}: data row {row + 1}, column {c + 1}: '{field}' is not a number");
                }

                values.Add(value);
            }

            row++;
        }

        if (row == 0)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: no data rows");
        }

        return new Dataset(path, [.. values], [featureColumns.Length], [.. labels], domainColumn is null ? null : [.. domains]);
    }

    /// <summary>The most bytes gzip-compressed text data may inflate to (256 MiB; the values take up to about 4 times
    /// that in memory). Uncompressed files are not limited: their size is their own.</summary>
    public const long MaxInflatedTextBytes = 256L << 20;

    /// <summary>The longest line a text data file may have (64 Mi characters: a row of millions of values).</summary>
    public const int MaxLineChars = 1 << 26;

    /// <summary>The lines of <paramref name="reader"/> (ended by \n or \r\n), each at most <see cref="MaxLineChars"/> long.</summary>
    private static IEnumerable<string> Lines(TextReader reader, string path)
    {
        var buffer = new char[1 << 16];
        var line = new System.Text.StringBuilder();
        int n;
        while ((n = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < n; i++)
            {
                if (buffer[i] == '\n')
                {
                    line.Append(buffer, start, i - start);
                    yield return Finish(line);
                    start = i + 1;
                }
            }

            line.Append(buffer, start, n - start);
            if (line.Length > MaxLineChars)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: a line longer than {MaxLineChars} characters: not a delimited text data file");
            }
        }

        if (line.Length > 0)
        {
            yield return Finish(line);
        }

        static string Finish(System.Text.StringBuilder line)
        {
            int end = line.Length > 0 && line[^1] == '\r' ? line.Length - 1 : line.Length;
            var text = line.ToString(0, end);
            line.Clear();
            return text;
        }
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
            $"{MessageText.Path(path)}: no {what} column '{wanted}' ({(header is null ? $"no header; give a 0-based index below {width}" : $"columns: {string.Join(", ", header)}")})");
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

    /// <summary>A text file, inflated (at most <see cref="MaxInflatedTextBytes"/>) when it starts with gzip's magic bytes.</summary>
    internal static StreamReader OpenText(string path)
    {
        InputFile.RequireRegular(path);
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
        Stream stream = got == 2 && first[0] == 0x1F && first[1] == 0x8B
            ? new BoundedStream(new GZipStream(file, CompressionMode.Decompress), MaxInflatedTextBytes, path)
            : file;
        return new StreamReader(stream);
    }

    /// <summary>Reads at most <paramref name="limit"/> bytes of <paramref name="inner"/>, then fails naming the file.</summary>
    private sealed class BoundedStream(Stream inner, long limit, string path) : ReadOnlyStream
    {
        private long _read;

        public override int Read(Span<byte> buffer)
        {
            int n;
            try
            {
                n = inner.Read(buffer);
            }
            catch (InvalidDataException e)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: corrupt compressed data ({e.Message})", e);
            }

            _read += n;
            if (_read > limit)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: inflates to more than {limit} bytes, the limit for compressed text data; decompress it first");
            }

            return n;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
