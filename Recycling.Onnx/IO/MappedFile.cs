using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Recycling.Onnx.IO;

/// <summary>
/// One opened input file: a handle checked with fstat (the handle, not the path), and a read-only memory mapping over
/// the same handle. The mapping serves the structure scan and the public span API; bulk reads (merge, hashing, the
/// writer's copies, alignment) go through <see cref="Read"/> (pread on the handle), because a mapped page past the
/// end of a file that another process truncated raises SIGBUS, which kills a .NET process, whereas pread just returns
/// fewer bytes. Renaming, replacing or deleting the path after the open does not change what the handle reads.
/// </summary>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly SafeFileHandle? _handle;
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly FileStatus.Snapshot _opened;
    private byte* _pointer;
    private long _bytesRead;
    private ReadObserver? _observer;

    private MappedFile(string path, SafeFileHandle? handle, FileStatus.Snapshot opened, MemoryMappedFile? map, MemoryMappedViewAccessor? view)
    {
        Path = path;
        Length = opened.Size;
        _handle = handle;
        _opened = opened;
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

    /// <summary>Device, inode, size and modification time of the opened file, as fstat saw them on open.</summary>
    internal FileStatus.Snapshot Opened => _opened;

    /// <summary>Opens and maps <paramref name="path"/> (a model file: symbolic links to it are followed); IO failures
    /// become <see cref="OnnxFormatException"/> naming the file.</summary>
    public static MappedFile Open(string path) => Open(path, null);

    /// <summary>
    /// Opens an external-data file the way <see cref="ExternalDataResolver"/> checked it: without following a symbolic
    /// link (O_NOFOLLOW), and then checks the opened handle: a regular file with one hard link, reached by the checked
    /// path (its kernel path, /proc/self/fd, is the model folder's real path plus the location), so a file or folder
    /// swapped for a link between the check and the open is refused, not read.
    /// </summary>
    public static MappedFile OpenExternal(string modelPath, string fullPath, string location)
    {
        BetweenCheckAndOpen.Value?.Invoke(fullPath);
        return Open(fullPath, (modelPath, location));
    }

    /// <summary>Test seam: runs after an external-data path was checked and before it is opened (the race an attacker aims at).</summary>
    internal static readonly AsyncLocal<Action<string>?> BetweenCheckAndOpen = new();

    private static MappedFile Open(string path, (string ModelPath, string Location)? external)
    {
        SafeFileHandle? handle = null;
        try
        {
            handle = FileStatus.OpenForReading(path, noFollow: external is not null);
            var status = FileStatus.Of(handle, path);
            if (!status.IsRegular)
            {
                throw external is null
                    ? new OnnxFormatException(path, "not a regular file (a FIFO, socket or device cannot be read as a model)")
                    : new OnnxFormatException(external.Value.ModelPath, $"external data location '{external.Value.Location}' is not a regular file");
            }

            if (external is { } e)
            {
                if (status.Links > 1)
                {
                    throw new OnnxFormatException(e.ModelPath, $"external data file '{e.Location}' has {status.Links} hard links; a file with more than one is refused");
                }

                FileStatus.CheckReachedBy(handle, path, e.ModelPath, e.Location);
            }

            if (status.Size == 0)
            {
                return new MappedFile(path, handle, status, null, null);
            }

            var map = MemoryMappedFile.CreateFromFile(handle, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
            var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            return new MappedFile(path, handle, status, map, view);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            handle?.Dispose();
            throw new OnnxFormatException(path, e is FileNotFoundException or DirectoryNotFoundException ? "file not found" : $"cannot be read ({e.Message})", e);
        }
        catch
        {
            handle?.Dispose();
            throw;
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

    /// <summary>Bytes read through the handle (<see cref="Read"/>) since the file was opened; mapped pages are not counted.</summary>
    public long BytesRead => Interlocked.Read(ref _bytesRead);

    /// <summary>
    /// Sees each range <see cref="Read"/> returns, as read: one at most per file (the first to attach it, see
    /// <see cref="TryObserve"/>).
    /// </summary>
    internal delegate void ReadObserver(long offset, ReadOnlySpan<byte> bytes);

    /// <summary>Attaches <paramref name="observer"/> unless another is attached; true when it now sees this file's reads.</summary>
    internal bool TryObserve(ReadObserver observer) => Interlocked.CompareExchange(ref _observer, observer, null) is null;

    /// <summary>Detaches <paramref name="observer"/> when it is the one attached.</summary>
    internal void StopObserving(ReadObserver observer) => Interlocked.CompareExchange(ref _observer, null, observer);

    /// <summary>
    /// Reads [offset, offset + destination.Length) through the handle (pread). A file that another process shortened
    /// since it was opened ends in an <see cref="OnnxFormatException"/> naming it, never in SIGBUS.
    /// </summary>
    public void Read(long offset, Span<byte> destination)
    {
        ReadUnobserved(offset, destination);
        Volatile.Read(ref _observer)?.Invoke(offset, destination);
    }

    /// <summary>As <see cref="Read"/>, unseen by the observer: for the observer's own reads.</summary>
    internal void ReadUnobserved(long offset, Span<byte> destination)
    {
        if (offset < 0 || offset > Length - destination.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, +{destination.Length}) is outside {Path} ({Length} bytes)");
        }

        var done = 0;
        try
        {
            while (done < destination.Length)
            {
                var n = RandomAccess.Read(_handle!, destination[done..], offset + done);
                if (n == 0)
                {
                    throw new OnnxFormatException(Path, $"changed while being read: it now ends at byte {offset + done} or before, it had {Length} bytes when opened (truncated by another process?)");
                }

                done += n;
            }
        }
        catch (IOException e)
        {
            throw new OnnxFormatException(Path, $"cannot be read ({e.Message})", e);
        }
        finally
        {
            Interlocked.Add(ref _bytesRead, done);
        }
    }

    /// <summary>
    /// Throws when the opened file's size or modification time differ from when it was opened: its content was
    /// changed in place (a rename or deletion of the path leaves the opened file as it was, and passes).
    /// </summary>
    public void CheckUnchanged()
    {
        if (_handle is null)
        {
            return;
        }

        var now = FileStatus.Of(_handle, Path);
        if (now.Size != _opened.Size || now.ModifiedTicks != _opened.ModifiedTicks)
        {
            throw new OnnxFormatException(Path, $"changed during the operation (size {_opened.Size} -> {now.Size} bytes, modification time changed: {now.ModifiedTicks != _opened.ModifiedTicks}); nothing was written");
        }
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
        _handle?.Dispose();
    }
}
