using System.IO.Compression;

namespace Recycling.Onnx.Numpy;

/// <summary>
/// An open .npz archive (numpy.savez / savez_compressed) whose arrays are inflated only when asked for: a header costs
/// a few hundred bytes, and each member is checked against its declared sizes before its data is allocated.
/// </summary>
internal sealed class NpzArchive : IDisposable
{
    private readonly ZipArchive _zip;
    private readonly Dictionary<string, ZipArchiveEntry> _entries;
    private readonly Lock _lock = new();

    private NpzArchive(string path, ZipArchive zip, Dictionary<string, ZipArchiveEntry> entries)
    {
        Path = path;
        _zip = zip;
        _entries = entries;
    }

    public string Path { get; }

    /// <summary>Array names, without the ".npy" suffix, in archive order.</summary>
    public IReadOnlyCollection<string> Names => _entries.Keys;

    public static NpzArchive Open(string path)
    {
        var stream = NpyFile.OpenRead(path);
        try
        {
            var zip = new ZipArchive(stream, ZipArchiveMode.Read);
            var entries = new Dictionary<string, ZipArchiveEntry>(StringComparer.Ordinal);
            foreach (var entry in zip.Entries)
            {
                if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal))
                {
                    zip.Dispose();
                    throw new OnnxFormatException(path, $"entry '{entry.FullName}' is not a .npy array");
                }

                if (!entries.TryAdd(entry.FullName[..^4], entry))
                {
                    zip.Dispose();
                    throw new OnnxFormatException(path, $"array '{entry.FullName[..^4]}' appears twice");
                }
            }

            return new NpzArchive(path, zip, entries);
        }
        catch (InvalidDataException e)
        {
            stream.Dispose();
            throw new OnnxFormatException(path, $"not a valid .npz (zip) archive ({e.Message})", e);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <summary>The dtype and shape of array <paramref name="name"/>, from its header alone.</summary>
    public (NpyDType DType, long[] Shape) Header(string name) => Use(name, (stream, label, _) =>
    {
        var (dtype, shape, _) = NpyFile.ReadHeader(stream, label);
        return (dtype, shape);
    });

    /// <summary>Array <paramref name="name"/>; its header may declare no more than the entry's declared size, and a
    /// compressed entry no more than <see cref="NpyFile.MaxInflatedBytes"/>.</summary>
    public NpyArray Read(string name) => Use(name, (stream, label, entry) =>
        NpyFile.ReadPlain(stream, label, entry.Length, compressed: entry.CompressedLength < entry.Length));

    public void Dispose() => _zip.Dispose();

    private T Use<T>(string name, Func<Stream, string, ZipArchiveEntry, T> read)
    {
        var entry = _entries.GetValueOrDefault(name) ?? throw new OnnxFormatException(Path, $"no array named '{name}'");
        string label = $"{Path}[{name}]";
        lock (_lock)
        {
            try
            {
                using var stream = entry.Open();
                return read(stream, label, entry);
            }
            catch (InvalidDataException e)
            {
                throw new OnnxFormatException(label, $"corrupt compressed data ({e.Message})", e);
            }
        }
    }
}
