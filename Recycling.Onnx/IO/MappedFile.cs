using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

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
            if (InputFile.KindProblem(path) is { } problem)
            {
                throw new OnnxFormatException(path, problem);
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

    /// <summary>Releases the resident pages of [offset, offset + length) of this mapping: see <see cref="ReleaseResidentPages(byte*, long)"/>.</summary>
    public void ReleaseResidentPages(long offset, long length)
    {
        if (_pointer is not null && length > 0 && offset >= 0 && offset <= Length - length)
        {
            ReleaseResidentPages(_pointer + offset, length);
        }
    }

    /// <summary>
    /// Unmaps the whole pages inside [address, address + length) from this process (madvise MADV_DONTNEED on Linux).
    /// Only for read-only file mappings: their pages stay in the page cache and the next read faults them back in,
    /// whereas without it every byte ever read through a mapping counts in the process's RSS until the file is
    /// closed. Never call it on anonymous memory (managed or native buffers), whose pages it would zero.
    /// </summary>
    public static void ReleaseResidentPages(byte* address, long length)
    {
        if (!OperatingSystem.IsLinux() || length <= 0)
        {
            return;
        }

        long page = Environment.SystemPageSize;
        var start = ((long)address + page - 1) / page * page;
        var end = ((long)address + length) / page * page;
        if (end > start)
        {
            _ = Madvise((nint)start, (nuint)(end - start), MadviseDontNeed); // advice: a failure leaves pages resident, never wrong
        }
    }

    private const int MadviseDontNeed = 4;

    [DllImport("libc", EntryPoint = "madvise")]
    private static extern int Madvise(nint address, nuint length, int advice);

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
