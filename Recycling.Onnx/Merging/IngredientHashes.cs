using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Recycling.Onnx.Merging;

/// <summary>
/// SHA-256 of a model's files (the .onnx file then its external-data files) for lineage metadata, read through the
/// same opened handles the merge reads, so the digest is of the bytes merged even when a path is replaced or deleted
/// meanwhile (a change in place is caught by <see cref="OnnxModel.CheckUnchanged"/>). Hashing costs more CPU than a
/// merge, so digests are cached outside the inputs, keyed by each file's full path, and the length and modification
/// time fstat gave on open, as git and make trust them: a file changed without changing its size or time would keep a
/// stale digest. The cache lives in $RECYCLING_CACHE_DIR (default ~/.cache/recycling); RECYCLING_HASH_CACHE=0 turns it off.
/// </summary>
internal static class IngredientHashes
{
    public static string Sha256(IReadOnlyList<IO.MappedFile> files)
    {
        var cacheFile = CacheFile(files);
        if (cacheFile is not null)
        {
            try
            {
                var cached = File.ReadAllText(cacheFile).Trim();
                if (cached.Length == 64)
                {
                    return cached;
                }
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        var digest = Compute(files);
        if (cacheFile is not null)
        {
            TryStore(cacheFile, digest);
        }

        return digest;
    }

    private static string Compute(IReadOnlyList<IO.MappedFile> files)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            foreach (var file in files)
            {
                for (long offset = 0; offset < file.Length; offset += buffer.Length)
                {
                    var n = (int)Math.Min(buffer.Length, file.Length - offset);
                    file.Read(offset, buffer.AsSpan(0, n));
                    hash.AppendData(buffer, 0, n);
                }
            }

            return Convert.ToHexStringLower(hash.GetHashAndReset());
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static string? CacheFile(IReadOnlyList<IO.MappedFile> files)
    {
        if (Environment.GetEnvironmentVariable("RECYCLING_HASH_CACHE") == "0")
        {
            return null;
        }

        var root = Environment.GetEnvironmentVariable("RECYCLING_CACHE_DIR");
        if (string.IsNullOrEmpty(root))
        {
            var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            if (string.IsNullOrEmpty(home))
            {
                return null;
            }

            root = Path.Combine(home, ".cache", "recycling");
        }

        var key = new StringBuilder();
        foreach (var file in files)
        {
            key.Append(Path.GetFullPath(file.Path)).Append('\0')
                .Append(file.Opened.Size.ToString(CultureInfo.InvariantCulture)).Append('\0')
                .Append(file.Opened.ModifiedTicks.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        var name = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString())));
        return Path.Combine(root, "sha256", name);
    }

    private static void TryStore(string cacheFile, string digest)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(cacheFile)!);
            IO.OutputFile.WriteAllText(cacheFile, digest);
        }
        catch (Exception e) when (e is RecyclingException or IOException or UnauthorizedAccessException)
        {
            // Best effort: without the cache the next merge hashes again.
        }
    }
}
