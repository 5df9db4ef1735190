using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Recycling.Onnx.Merging;

/// <summary>
/// SHA-256 of a model's files (the .onnx file then its external-data files) for lineage metadata. The digest is taken
/// from the bytes the merge itself reads through the opened handles (<see cref="Following"/>), so each input byte is
/// read once, and the digest is of the bytes merged even when a path is replaced or deleted meanwhile (a change in
/// place is caught by <see cref="OnnxModel.CheckUnchanged"/>). Hashing costs more CPU than a merge, so digests are
/// cached outside the inputs, keyed by each file's full path, and the length and modification time fstat gave on
/// open, as git and make trust them: a file changed without changing its size or time would keep a stale digest. The
/// cache lives in $RECYCLING_CACHE_DIR (default ~/.cache/recycling); RECYCLING_HASH_CACHE=0 turns it off.
/// </summary>
internal static class IngredientHashes
{
    /// <summary>Starts the digest of one model's <paramref name="files"/>: the cached one, or one that follows their reads.</summary>
    public static Following Follow(IReadOnlyList<IO.MappedFile> files)
    {
        var cacheFile = CacheFile(files);
        return new Following(files, cacheFile, cacheFile is null ? null : Cached(cacheFile));
    }

    /// <summary>
    /// One model's digest in progress. Until <see cref="Finish"/>, it hashes the bytes of every read of the model's
    /// files that continues the hashed prefix (the files concatenated in order); a read that starts further on first
    /// makes it read the bytes in between itself (the protobuf framing, padding, tensors the merge does not read), and
    /// <see cref="Finish"/> reads what is left after the last read. A merge reads the tensors in file order, so each
    /// byte is read once; a read before the hashed prefix is not hashed again, so reads out of order cost a second read
    /// of the bytes skipped over, never a wrong digest.
    /// </summary>
    internal sealed class Following : IDisposable
    {
        private const int FillBufferBytes = 1 << 20;
        private readonly IReadOnlyList<IO.MappedFile> _files;
        private readonly string? _cacheFile;
        private readonly IO.MappedFile.ReadObserver?[] _observers;
        private readonly Lock _gate = new();
        private IncrementalHash? _hash;
        private string? _digest;
        private int _file;
        private long _hashed;

        internal Following(IReadOnlyList<IO.MappedFile> files, string? cacheFile, string? cached)
        {
            (_files, _cacheFile, _digest) = (files, cacheFile, cached);
            _observers = new IO.MappedFile.ReadObserver?[files.Count];
            if (cached is not null)
            {
                return;
            }

            _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            for (var k = 0; k < files.Count; k++)
            {
                var file = k;
                IO.MappedFile.ReadObserver observer = (offset, bytes) => Saw(file, offset, bytes);
                _observers[k] = files[k].TryObserve(observer) ? observer : null; // a file another digest follows is read here at the end
            }
        }

        /// <summary>The digest: the bytes not yet hashed are read now, then the cache is updated.</summary>
        public string Finish()
        {
            lock (_gate)
            {
                if (_digest is null)
                {
                    HashUpTo(_files.Count, 0);
                    _digest = Convert.ToHexStringLower(_hash!.GetHashAndReset());
                    Detach();
                    if (_cacheFile is not null)
                    {
                        TryStore(_cacheFile, _digest);
                    }
                }

                return _digest;
            }
        }

        public void Dispose()
        {
            lock (_gate)
            {
                Detach();
            }
        }

        private void Detach()
        {
            for (var k = 0; k < _files.Count; k++)
            {
                if (_observers[k] is { } observer)
                {
                    _files[k].StopObserving(observer);
                    _observers[k] = null;
                }
            }

            _hash?.Dispose();
            _hash = null;
        }

        private void Saw(int file, long offset, ReadOnlySpan<byte> bytes)
        {
            lock (_gate)
            {
                var end = offset + bytes.Length;
                if (_hash is null || file < _file || (file == _file && end <= _hashed))
                {
                    return;
                }

                HashUpTo(file, offset);
                _hash.AppendData(bytes[(int)(_hashed - offset)..]);
                _hashed = end;
            }
        }

        /// <summary>Reads and hashes what lies between the hashed prefix and byte <paramref name="offset"/> of file <paramref name="file"/>.</summary>
        private void HashUpTo(int file, long offset)
        {
            byte[]? buffer = null;
            try
            {
                while (_file < _files.Count && (_file < file || _hashed < offset))
                {
                    var source = _files[_file];
                    var end = _file < file ? source.Length : offset;
                    buffer ??= ArrayPool<byte>.Shared.Rent(FillBufferBytes);
                    while (_hashed < end)
                    {
                        var n = (int)Math.Min(buffer.Length, end - _hashed);
                        source.ReadUnobserved(_hashed, buffer.AsSpan(0, n));
                        _hash!.AppendData(buffer, 0, n);
                        _hashed += n;
                    }

                    if (_file < file)
                    {
                        (_file, _hashed) = (_file + 1, 0);
                    }
                }
            }
            finally
            {
                if (buffer is not null)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }
        }
    }

    private static string? Cached(string cacheFile)
    {
        try
        {
            var cached = File.ReadAllText(cacheFile).Trim();
            return cached.Length == 64 ? cached : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
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
