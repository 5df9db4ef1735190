using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Recycling.Onnx.IO;

/// <summary>
/// The file type, hard-link count, size and modification time from stat(2)/fstat(2), and the opening of input files
/// with the flags the checks rely on. Opening a FIFO for reading blocks until a writer appears, so inputs are opened
/// non-blocking and their type is checked on the opened handle, which no later rename or link swap can change.
/// </summary>
internal static partial class FileStatus
{
    private const uint TypeMask = 0xF000;
    private const uint RegularFile = 0x8000;
    private const int ErrorNoEntry = 2;
    private const int ErrorAccess = 13;
    private const int ErrorLoop = 40;

    /// <summary>What fstat says of an opened file; <see cref="ModifiedTicks"/> is st_mtim in nanoseconds.</summary>
    internal readonly record struct Snapshot(bool IsRegular, long Links, long Size, long ModifiedTicks);

    /// <summary>Whether <paramref name="path"/> (symbolic links followed) is a regular file, and its st_nlink.
    /// Where stat cannot be read (not Linux, unknown layout), falls back to file attributes and one link.</summary>
    public static (bool IsRegular, long Links) Get(string path)
    {
        if (OperatingSystem.IsLinux() && TryStat(path, out var mode, out var links))
        {
            return ((mode & TypeMask) == RegularFile, links);
        }

        var attributes = File.GetAttributes(path);
        return ((attributes & (FileAttributes.Device | FileAttributes.Directory)) == 0, 1);
    }

    /// <summary>
    /// Opens <paramref name="path"/> read-only and non-blocking (a FIFO does not hang the open); with
    /// <paramref name="noFollow"/>, a symbolic link as the last component is refused (O_NOFOLLOW).
    /// </summary>
    public static SafeFileHandle OpenForReading(string path, bool noFollow)
    {
        if (!OperatingSystem.IsLinux() || ArchitectureFlags() is not { } flags)
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        }

        var fd = OpenNative(path, flags.ReadNonBlocking | (noFollow ? flags.NoFollow : 0), 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw errno switch
            {
                ErrorNoEntry => new FileNotFoundException($"'{path}' does not exist", path),
                ErrorAccess => new UnauthorizedAccessException($"permission denied ({path})"),
                ErrorLoop when noFollow => new IOException("it is a symbolic link, which is refused for external data"),
                _ => new IOException(Marshal.GetPInvokeErrorMessage(errno)),
            };
        }

        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>fstat of an opened handle; <paramref name="path"/> only names it in errors.</summary>
    public static unsafe Snapshot Of(SafeFileHandle handle, string path)
    {
        if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64)
        {
            var buffer = stackalloc byte[256];
            int result;
            try
            {
                result = FStat((int)handle.DangerousGetHandle(), buffer);
            }
            catch (EntryPointNotFoundException)
            {
                result = -2; // glibc before 2.33 exports fstat only as __fxstat
            }

            if (result == 0)
            {
                var (mode, links) = Decode(buffer);
                // st_size at 48 and st_mtim at 88 in both layouts.
                var size = *(long*)(buffer + 48);
                var modified = (*(long*)(buffer + 88) * 1_000_000_000L) + *(long*)(buffer + 96);
                return new Snapshot((mode & TypeMask) == RegularFile, links, size, modified);
            }

            if (result == -1)
            {
                throw new IOException($"fstat failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
            }
        }

        var isRegular = (File.GetAttributes(handle) & (FileAttributes.Device | FileAttributes.Directory)) == 0;
        return new Snapshot(isRegular, 1, RandomAccess.GetLength(handle), File.GetLastWriteTimeUtc(handle).Ticks);
    }

    /// <summary>
    /// Checks that the opened external-data file is the one the checked path names: its kernel path (/proc/self/fd) must
    /// be the model folder's real path plus the location, so no folder on the way was swapped for a symbolic link after
    /// the check. Skipped where /proc is not available.
    /// </summary>
    public static void CheckReachedBy(SafeFileHandle handle, string fullPath, string modelPath, string location)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var opened = new FileInfo($"/proc/self/fd/{handle.DangerousGetHandle()}").LinkTarget;
        var folder = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        var realFolder = RealPath(folder);
        if (opened is null || realFolder is null)
        {
            return;
        }

        var expected = Path.Combine(realFolder, Path.GetRelativePath(folder, fullPath));
        if (!string.Equals(opened, expected, StringComparison.Ordinal))
        {
            throw new OnnxFormatException(modelPath, $"external data location '{location}' was opened as '{opened}', not '{expected}': a symbolic link was put on the way after it was checked");
        }
    }

    private static unsafe string? RealPath(string path)
    {
        var buffer = stackalloc byte[4096];
        try
        {
            return RealPathNative(path, buffer) == 0 ? null : Marshal.PtrToStringUTF8((nint)buffer);
        }
        catch (EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary>O_RDONLY | O_NONBLOCK | O_CLOEXEC and O_NOFOLLOW, whose value differs between x64 and arm64.</summary>
    private static (int ReadNonBlocking, int NoFollow)? ArchitectureFlags() => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => (0x800 | 0x80000, 0x20000),
        Architecture.Arm64 => (0x800 | 0x80000, 0x8000),
        _ => null,
    };

    /// <summary>st_mode and st_nlink in the x64 and arm64 layouts of struct stat.</summary>
    private static unsafe bool TryStat(string path, out uint mode, out long links)
    {
        (mode, links) = (0, 1);
        if (RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.Arm64))
        {
            return false;
        }

        var buffer = stackalloc byte[256];
        try
        {
            if (Stat(path, buffer) != 0)
            {
                return false;
            }
        }
        catch (EntryPointNotFoundException)
        {
            return false; // glibc before 2.33 exports stat only as __xstat
        }

        (mode, links) = Decode(buffer);
        return true;
    }

    /// <summary>The file type bits of st_mode (S_IFMT), st_dev and st_ino of <paramref name="path"/> (symbolic links
    /// followed); null where the file does not exist or stat cannot be read (not Linux, unknown layout).</summary>
    public static unsafe (uint Type, ulong Device, ulong Inode)? Identify(string path)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        var buffer = stackalloc byte[256];
        try
        {
            if (Stat(path, buffer) != 0)
            {
                return null;
            }
        }
        catch (EntryPointNotFoundException)
        {
            return null;
        }

        // st_dev and st_ino lead both layouts; st_mode follows st_nlink on x64 and precedes it on arm64.
        var (device, inode) = (*(ulong*)buffer, *(ulong*)(buffer + 8));
        return RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => (*(uint*)(buffer + 24) & TypeMask, device, inode),
            Architecture.Arm64 => (*(uint*)(buffer + 16) & TypeMask, device, inode),
            _ => null,
        };
    }

    private static unsafe (uint Mode, long Links) Decode(byte* buffer) => RuntimeInformation.ProcessArchitecture == Architecture.X64
        ? (*(uint*)(buffer + 24), (long)*(ulong*)(buffer + 16))
        : (*(uint*)(buffer + 16), *(uint*)(buffer + 20));

    [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static unsafe partial int Stat(string path, byte* buffer);

    [LibraryImport("libc", EntryPoint = "fstat", SetLastError = true)]
    private static unsafe partial int FStat(int fd, byte* buffer);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenNative(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial nint RealPathNative(string path, byte* resolved);
}
