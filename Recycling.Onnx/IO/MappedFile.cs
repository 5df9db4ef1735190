using System.IO.MemoryMappedFiles;

namespace Recycling.Onnx.IO;

/// <summary>A read-only memory mapping of a whole file: tensor bytes are read in place, never copied into managed arrays.</summary>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _pointer;

    private MappedFile(string path, long length, MemoryMappedFile? map, MemoryMappedViewAccessor? view)
    {
        Path = path;
        Length = length;
        _map = map;
        _view = view;
        if (view is not null)
        {
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref _pointer);
            _pointer += view.PointerOffset;
        }
    }

    public string Path { get; }

    public long Length { get; }

    public byte* Pointer => _pointer;

    /// <summary>Maps <paramref name="path"/> for reading; IO failures become <see cref="OnnxFormatException"/> naming the file.</summary>
    public static MappedFile Open(string path)
    {
        FileStream? stream = null;
        try
        {
            if (File.Exists(path) && !FileStatus.Get(path).IsRegular)
            {
                throw new OnnxFormatException(path, "not a regular file (a FIFO, socket or device cannot be read as a model)");
            }

            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1, FileOptions.None);
            var length = stream.Length;
            if (length == 0)
            {
                stream.Dispose();
                return new MappedFile(path, 0, null, null);
            }

            var map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            return new MappedFile(path, length, map, view);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stream?.Dispose();
            throw new OnnxFormatException(path, e is FileNotFoundException or DirectoryNotFoundException ? "file not found" : $"cannot be read ({e.Message})", e);
        }
    }

    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, +{length}) is outside {Path} ({Length} bytes)");
        }

        return length == 0 ? default : new ReadOnlySpan<byte>(_pointer + offset, length);
    }

    public void Dispose()
    {
        if (_view is not null && _pointer is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _pointer = null;
        }

        _view?.Dispose();
        _map?.Dispose();
    }
}
