using System.Runtime.InteropServices;

namespace Recycling.Onnx.IO;

/// <summary>
/// The file type and hard-link count from stat(2). Opening a FIFO for reading blocks until a writer appears, so
/// every file the reader maps is checked to be a regular file before it is opened.
/// </summary>
internal static partial class FileStatus
{
    private const uint TypeMask = 0xF000;
    private const uint RegularFile = 0x8000;

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

    /// <summary>st_mode and st_nlink in the x64 and arm64 layouts of struct stat.</summary>
    private static unsafe bool TryStat(string path, out uint mode, out long links)
    {
        (mode, links) = (0, 1);
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

        switch (RuntimeInformation.ProcessArchitecture)
        {
            case Architecture.X64:
                links = (long)*(ulong*)(buffer + 16);
                mode = *(uint*)(buffer + 24);
                return true;
            case Architecture.Arm64:
                mode = *(uint*)(buffer + 16);
                links = *(uint*)(buffer + 20);
                return true;
            default:
                return false;
        }
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

    [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static unsafe partial int Stat(string path, byte* buffer);
}
