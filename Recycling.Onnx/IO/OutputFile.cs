using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace Recycling.Onnx.IO;

/// <summary>
/// The one way the toolkit writes a file, for every command and library writer. A regular file (new or existing) is
/// written to a temporary file beside it and renamed over it, so readers see the old file or the new one, never a
/// part; a symbolic link is followed and its target replaced. A character device or FIFO (<c>/dev/null</c>, a named
/// pipe) is written into and never replaced; <c>/dev/stdout</c>, <c>/dev/stderr</c> and <c>/proc/self/fd/1</c>-like
/// paths write to this process's own stream. Folders, sockets and block devices are refused, as is any path that is
/// one of the operation's inputs (same device and inode, however the path reaches it: symbolic links to the file or
/// to a folder above it, <c>/proc/self/cwd</c>, hard links). Temporary names fit in 255 bytes whatever the output
/// name, carry the writing process id, and those of dead processes are removed by the next write beside them.
/// </summary>
internal sealed partial class OutputFile
{
    /// <summary>The longest file name, in bytes, of Linux file systems (NAME_MAX).</summary>
    public const int NameMax = 255;

    /// <summary>Room taken by the temporary decorations: "." + ".PID-TOKEN" (PIDs have at most 7 digits) + ".spill" + ".tmp".</summary>
    private const int TemporaryOverhead = 1 + 1 + 7 + 1 + 12 + 6 + 4;

    private const uint Fifo = 0x1000;
    private const uint CharacterDevice = 0x2000;
    private const uint Folder = 0x4000;
    private const uint BlockDevice = 0x6000;
    private const uint Regular = 0x8000;
    private const uint Socket = 0xC000;

    /// <summary>How long a write waits for a process to open a FIFO output for reading before it gives up.</summary>
    public static readonly TimeSpan ReaderWait = TimeSpan.FromSeconds(15);

    private readonly Destination _destination;
    private readonly InputFiles? _inputs;

    private OutputFile(string label, string path, string target, Destination destination, InputFiles? inputs, bool createFolder)
    {
        (Label, Path, Target, _destination, _inputs, CreatesFolder) = (label, path, target, destination, inputs, createFolder);
    }

    private enum Destination
    {
        Replace,
        WriteInto,
        Fifo,
        StandardOutput,
        StandardError,
    }

    /// <summary>How error messages name this output: the option (when a command gave one) and the path as given.</summary>
    public string Label { get; }

    /// <summary>The full path as given.</summary>
    public string Path { get; }

    /// <summary>The file that is replaced or written into: <see cref="Path"/> with symbolic links followed.</summary>
    public string Target { get; }

    /// <summary>A device, FIFO or standard stream: written into in place; no temporary or companion file goes beside it.</summary>
    public bool WritesInPlace => _destination != Destination.Replace;

    /// <summary>Whether a missing folder is created when the file is written (otherwise it is an error here).</summary>
    public bool CreatesFolder { get; }

    /// <summary>
    /// Checks <paramref name="path"/> as an output and decides how it is written; throws <see cref="RecyclingException"/>
    /// naming <paramref name="option"/> and the path when it cannot be written (an input, a folder, a socket, a missing
    /// folder). Commands call this before their long work, then write through the returned object.
    /// </summary>
    public static OutputFile Prepare(string path, InputFiles? inputs = null, string? option = null, bool createFolder = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        var label = option is null ? path : $"{option} {path}";
        if (path.Length == 0 || path.Contains('\0', StringComparison.Ordinal))
        {
            throw new RecyclingException($"{label}: not a valid file name");
        }

        string full;
        try
        {
            full = System.IO.Path.GetFullPath(path);
        }
        catch (Exception e) when (e is ArgumentException or IOException or NotSupportedException)
        {
            throw new RecyclingException($"{label}: not a valid file name ({e.Message})", e);
        }

        if (path.EndsWith('/') || path.EndsWith(System.IO.Path.DirectorySeparatorChar) || Directory.Exists(full))
        {
            throw new RecyclingException($"{label}: is a folder; give a file name");
        }

        if (inputs?.Find(full) is { } input)
        {
            throw Refused(label, full, input);
        }

        if (StandardStream(full) is { } stream)
        {
            return new OutputFile(label, full, full, stream, inputs, createFolder);
        }

        var type = TypeOf(full);
        switch (type)
        {
            case CharacterDevice:
                return new OutputFile(label, full, full, Destination.WriteInto, inputs, createFolder);
            case Fifo:
                return new OutputFile(label, full, full, Destination.Fifo, inputs, createFolder);
            case Socket:
                throw new RecyclingException($"{label}: is a socket, which cannot be written as a file");
            case BlockDevice:
                throw new RecyclingException($"{label}: is a block device; refusing to write a file over a disk");
            case Regular or null:
                break;
            default:
                throw new RecyclingException($"{label}: is not a regular file");
        }

        var target = FollowLinks(full, label);
        var folder = System.IO.Path.GetDirectoryName(target) ?? throw new RecyclingException($"{label}: is a folder; give a file name");
        if (!createFolder && !Directory.Exists(folder))
        {
            throw new RecyclingException(File.Exists(folder) ? $"{label}: {folder} is a file, not a folder" : $"{label}: the folder {folder} does not exist");
        }

        return new OutputFile(label, full, target, Destination.Replace, inputs, createFolder);
    }

    public static void WriteAllBytes(string path, byte[] bytes) => Prepare(path).WriteAllBytes(bytes);

    public static void WriteAllText(string path, string text) => Prepare(path).WriteAllText(text);

    public void WriteAllText(string text) => WriteAllBytes(new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(text));

    public void WriteAllBytes(byte[] bytes) => Write(stream => stream.Write(bytes));

    /// <summary>Writes the whole file with <paramref name="write"/>: into a temporary file renamed over <see cref="Target"/>
    /// at the end (nothing changes when it throws), or straight into a device, FIFO or standard stream.</summary>
    public void Write(Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        try
        {
            if (WritesInPlace)
            {
                using var stream = OpenInPlace();
                write(stream);
                stream.Flush();
                return;
            }

            var temporary = BeginReplace();
            try
            {
                using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
                {
                    write(stream);
                    stream.Flush(flushToDisk: true);
                }

                Commit(temporary);
            }
            finally
            {
                TryDelete(temporary);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Failed(e);
        }
    }

    /// <summary>The error for a write that failed with <paramref name="e"/>.</summary>
    public RecyclingException Failed(Exception e) =>
        new($"{Label}: writing failed ({e.Message}){(WritesInPlace ? "" : "; nothing was written")}", e);

    /// <summary>Opens the device, FIFO or standard stream of an in-place output for writing. Opening a FIFO waits
    /// for a reader; after <see cref="ReaderWait"/> without one it is an error rather than a hang.</summary>
    public Stream OpenInPlace()
    {
        switch (_destination)
        {
            case Destination.StandardOutput:
                return Console.OpenStandardOutput();
            case Destination.StandardError:
                return Console.OpenStandardError();
            case Destination.WriteInto:
                return new FileStream(Target, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1 << 16);
            case Destination.Fifo:
                // The open blocks in the kernel until a reader comes; a thread that never returns is left behind when none does.
                var open = Task.Factory.StartNew(() => new FileStream(Target, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1 << 16),
                    CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
                if (!((IAsyncResult)open).AsyncWaitHandle.WaitOne(ReaderWait))
                {
                    throw new RecyclingException($"{Label}: is a FIFO that no process opened for reading within {ReaderWait.TotalSeconds:F0} s; nothing was written");
                }

                return open.GetAwaiter().GetResult();
            default:
                throw new InvalidOperationException($"{Label} is replaced, not written in place");
        }
    }

    /// <summary>Creates the folder when asked to, removes stale temporaries beside the target and returns a fresh temporary name.</summary>
    public string BeginReplace()
    {
        var folder = System.IO.Path.GetDirectoryName(Target)!;
        if (CreatesFolder)
        {
            Directory.CreateDirectory(folder);
        }

        RemoveStaleTemporaries(folder, System.IO.Path.GetFileName(Target));
        return Temporary();
    }

    /// <summary>A temporary file name for this output: beside the target (in the system's temporary folder for an
    /// in-place output), carrying this process's id, at most 255 bytes long. <paramref name="suffix"/> tells
    /// companions of one write apart (".data", ".spill").</summary>
    public string Temporary(string suffix = "")
    {
        var folder = WritesInPlace ? System.IO.Path.GetTempPath() : System.IO.Path.GetDirectoryName(Target)!;
        var token = Guid.NewGuid().ToString("N")[..12];
        return System.IO.Path.Combine(folder, $".{Truncate(System.IO.Path.GetFileName(Target), NameMax - TemporaryOverhead)}.{Environment.ProcessId}-{token}{suffix}.tmp");
    }

    /// <summary>Renames <paramref name="temporary"/> over the target, keeping the permissions of the file it replaces,
    /// after checking once more that the target is still neither an input nor a special file.</summary>
    public void Commit(string temporary)
    {
        if (_inputs?.Find(Target) is { } input)
        {
            throw Refused(Label, Target, input);
        }

        var type = TypeOf(Target);
        if (type is not null and not Regular)
        {
            throw new RecyclingException($"{Label}: became a special file while it was being written; not replaced");
        }

        if (!OperatingSystem.IsWindows() && type is not null)
        {
            try
            {
                File.SetUnixFileMode(temporary, File.GetUnixFileMode(Target));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The default permissions are a fine fallback.
            }
        }

        File.Move(temporary, Target, overwrite: true);
    }

    /// <summary>Throws when <paramref name="path"/> (a companion of this output, such as its data file) is an input.</summary>
    public void RefuseInput(string path)
    {
        if (_inputs?.Find(path) is { } input)
        {
            throw Refused(path, System.IO.Path.GetFullPath(path), input);
        }
    }

    /// <summary>
    /// Holds an exclusive lock on <paramref name="folder"/> across processes until disposed, so that writers of files
    /// that belong together (a model and its data file) finish one at a time. Linux: flock(2) on the folder (released by
    /// the kernel when the holder dies); elsewhere, or where the folder cannot be opened: a named mutex.
    /// </summary>
    public static IDisposable LockFolder(string folder)
    {
        var full = System.IO.Path.GetFullPath(folder);
        if (OperatingSystem.IsLinux() && FolderLock.TryAcquire(full) is { } locked)
        {
            return locked;
        }

        return MutexLock.Acquire(full);
    }

    /// <summary>
    /// Removes temporary files of earlier writes to <paramref name="name"/> in <paramref name="folder"/> whose process
    /// is gone (killed or crashed before its clean-up ran). Files of a write still running, here or in another process,
    /// carry a live process id and are left alone; so is a leftover whose id has been reused by a running process.
    /// </summary>
    public static void RemoveStaleTemporaries(string folder, string name)
    {
        var prefix = "." + Truncate(name, NameMax - TemporaryOverhead) + ".";
        try
        {
            foreach (var file in Directory.EnumerateFiles(folder, ".*"))
            {
                var fileName = System.IO.Path.GetFileName(file);
                if (!fileName.StartsWith(prefix, StringComparison.Ordinal))
                {
                    continue;
                }

                var match = TemporaryPattern().Match(fileName);
                if (match.Success && int.TryParse(match.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && !IsRunning(pid))
                {
                    TryDelete(file);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Best effort: a folder that cannot be listed fails the write itself with a clear error.
        }
    }

    /// <summary>The longest prefix of <paramref name="name"/> of at most <paramref name="bytes"/> UTF-8 bytes, cut between characters.</summary>
    public static string Truncate(string name, int bytes)
    {
        if (Encoding.UTF8.GetByteCount(name) <= bytes)
        {
            return name;
        }

        var result = new StringBuilder();
        var used = 0;
        foreach (var rune in name.EnumerateRunes())
        {
            if (used + rune.Utf8SequenceLength > bytes)
            {
                break;
            }

            used += rune.Utf8SequenceLength;
            result.Append(rune.ToString());
        }

        return result.ToString();
    }

    public static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static RecyclingException Refused(string label, string full, string input) =>
        new($"{label}: refusing to write over an input of this operation{(input == full ? "" : $" ({input})")}");

    /// <summary>The file type bits of <paramref name="path"/> (links followed); null when it does not exist. Without
    /// stat(2) (not Linux), what file attributes tell: a folder, a device or a regular file.</summary>
    private static uint? TypeOf(string path)
    {
        if (FileStatus.Identify(path) is { } status)
        {
            return status.Type;
        }

        if (OperatingSystem.IsLinux() || !File.Exists(path))
        {
            return Directory.Exists(path) ? Folder : null;
        }

        return (File.GetAttributes(path) & FileAttributes.Device) != 0 ? CharacterDevice : Regular;
    }

    /// <summary>The final target of <paramref name="path"/> when it is a symbolic link (dangling links included), else the path.</summary>
    private static string FollowLinks(string path, string label)
    {
        try
        {
            var info = new FileInfo(path);
            return info.LinkTarget is null ? path : info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? path;
        }
        catch (IOException e)
        {
            throw new RecyclingException($"{label}: cannot follow its symbolic link ({e.Message})", e);
        }
    }

    /// <summary>Whether <paramref name="path"/>, or a symbolic link it goes through, names this process's standard
    /// output or error (/dev/stdout, /dev/fd/1, /proc/self/fd/1, /proc/PID/fd/2, ...). Reopening those paths would
    /// start at offset 0 of a redirected file (or replace it), so they are written through the process's own streams.</summary>
    private static Destination? StandardStream(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            return null;
        }

        var current = path;
        for (var hop = 0; hop < 40; hop++)
        {
            var match = StandardStreamPattern().Match(current);
            if (match.Success && (match.Groups["pid"].Value is "" or "self" or "thread-self" || match.Groups["pid"].Value == Environment.ProcessId.ToString(CultureInfo.InvariantCulture)))
            {
                return match.Groups["name"].Value switch
                {
                    "stdout" or "1" => Destination.StandardOutput,
                    "stderr" or "2" => Destination.StandardError,
                    _ => null,
                };
            }

            string? next;
            try
            {
                next = new FileInfo(current).LinkTarget;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return null;
            }

            if (next is null || !next.StartsWith('/'))
            {
                return null;
            }

            current = next;
        }

        return null;
    }

    private static bool IsRunning(int pid)
    {
        if (pid == Environment.ProcessId)
        {
            return true;
        }

        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>Temporaries of every writer, earlier layouts included: .NAME[.data].PID-TOKEN[.data|.spill].tmp[.spill].</summary>
    [GeneratedRegex(@"\.(\d+)-[0-9a-f]{12}(\.[a-z]+)?\.tmp(\.spill)?$")]
    private static partial Regex TemporaryPattern();

    [GeneratedRegex(@"^(/dev/(?<name>stdout|stderr)|/dev/fd/(?<name>\d+)|/proc/(?<pid>self|thread-self|\d+)(/task/\d+)?/fd/(?<name>\d+))$")]
    private static partial Regex StandardStreamPattern();

    /// <summary>flock(2) on an open folder.</summary>
    private sealed partial class FolderLock : IDisposable
    {
        private const int ReadOnlyCloseOnExec = 0x80000; // O_RDONLY | O_CLOEXEC (same value on x64 and arm64)
        private const int Exclusive = 2; // LOCK_EX
        private const int Interrupted = 4; // EINTR

        private int _descriptor;

        private FolderLock(int descriptor) => _descriptor = descriptor;

        public static FolderLock? TryAcquire(string folder)
        {
            try
            {
                var descriptor = Open(folder, ReadOnlyCloseOnExec);
                if (descriptor < 0)
                {
                    return null;
                }

                while (Flock(descriptor, Exclusive) != 0)
                {
                    if (Marshal.GetLastPInvokeError() != Interrupted)
                    {
                        _ = Close(descriptor);
                        return null;
                    }
                }

                return new FolderLock(descriptor);
            }
            catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
            {
                return null;
            }
        }

        public void Dispose()
        {
            var descriptor = Interlocked.Exchange(ref _descriptor, -1);
            if (descriptor >= 0)
            {
                _ = Close(descriptor); // closing the last descriptor releases the lock
            }
        }

        [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial int Open(string path, int flags);

        [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
        private static partial int Flock(int descriptor, int operation);

        [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
        private static partial int Close(int descriptor);
    }

    /// <summary>A machine-wide named mutex per folder, where flock is not available.</summary>
    private sealed class MutexLock : IDisposable
    {
        private readonly Mutex _mutex;

        private MutexLock(Mutex mutex) => _mutex = mutex;

        public static MutexLock Acquire(string folder)
        {
            var key = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? folder.ToUpperInvariant() : folder;
            var name = @"Global\recycling-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..32];
            var mutex = new Mutex(initiallyOwned: false, name);
            try
            {
                mutex.WaitOne();
            }
            catch (AbandonedMutexException)
            {
                // The holder died; the mutex is ours now.
            }

            return new MutexLock(mutex);
        }

        public void Dispose()
        {
            _mutex.ReleaseMutex();
            _mutex.Dispose();
        }
    }
}

/// <summary>
/// The files one operation reads, so that none of its outputs lands on one of them. Files are compared by device and
/// inode where stat(2) gives them (whatever path reaches the file: symbolic links, /proc/self/cwd, hard links), else
/// by full path with symbolic links followed. Paths that do not exist are ignored.
/// </summary>
internal sealed class InputFiles
{
    private readonly List<(string Path, Identity Id)> _files = [];

    /// <summary>No inputs: for commands that read no file.</summary>
    public static InputFiles None { get; } = new([]);

    public InputFiles(IEnumerable<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        foreach (var path in paths)
        {
            if (Identify(path) is { } id)
            {
                _files.Add((System.IO.Path.GetFullPath(path), id));
            }
        }
    }

    /// <summary>The models (each with its external-data files, where it opens as a model) and other files.</summary>
    public static InputFiles Of(IEnumerable<string> models, IEnumerable<string>? others = null)
    {
        ArgumentNullException.ThrowIfNull(models);
        var files = new List<string>();
        foreach (var model in models)
        {
            files.Add(model);
            try
            {
                using var opened = OnnxModel.Open(model);
                files.AddRange(opened.Files);
            }
            catch (RecyclingException)
            {
                // Not a readable model: the command reports that itself; its path is still an input.
            }
        }

        return new InputFiles(files.Concat(others ?? []));
    }

    /// <summary>The input that <paramref name="path"/> is (its path as declared), or null.</summary>
    public string? Find(string path)
    {
        if (_files.Count == 0 || Identify(path) is not { } id)
        {
            return null;
        }

        foreach (var (inputPath, inputId) in _files)
        {
            if (inputId.Matches(id))
            {
                return inputPath;
            }
        }

        return null;
    }

    private static Identity? Identify(string path)
    {
        try
        {
            var full = System.IO.Path.GetFullPath(path);
            if (FileStatus.Identify(full) is { } status)
            {
                return new Identity(status.Device, status.Inode, null);
            }

            if (OperatingSystem.IsLinux() || !File.Exists(full))
            {
                return null;
            }

            var info = new FileInfo(full);
            return new Identity(0, 0, info.LinkTarget is null ? full : info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full);
        }
        catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return null;
        }
    }

    private readonly record struct Identity(ulong Device, ulong Inode, string? Canonical)
    {
        public bool Matches(Identity other) => Canonical is null || other.Canonical is null
            ? Device == other.Device && Inode == other.Inode
            : string.Equals(Canonical, other.Canonical, OperatingSystem.IsLinux() ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase);
    }
}
