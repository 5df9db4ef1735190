using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Recycling.Onnx.Merging;

/// <summary>
/// SHA-256 of a model's files (the .onnx file then its external-data files) for lineage metadata. Hashing costs more
/// CPU than a merge, so digests are cached outside the inputs, keyed by each file's full path, length and
/// modification time, as git and make trust them: a file changed without changing its size or time would keep a stale
/// digest. The cache lives in $RECYCLING_CACHE_DIR (default ~/.cache/recycling); RECYCLING_HASH_CACHE=0 turns it off.
/// </summary>
internal static class IngredientHashes
{
    public static string Sha256(IReadOnlyList<string> files)
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

    private static string Compute(IReadOnlyList<string> files)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            foreach (var file in files)
            {
                using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
                int n;
                while ((n = stream.Read(buffer, 0, buffer.Length)) > 0)
                {
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

    private static string? CacheFile(IReadOnlyList<string> files)
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
            var info = new FileInfo(file);
            key.Append(info.FullName).Append('\0')
                .Append(info.Length.ToString(CultureInfo.InvariantCulture)).Append('\0')
                .Append(info.LastWriteTimeUtc.Ticks.ToString(CultureInfo.InvariantCulture)).Append('\n');
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
