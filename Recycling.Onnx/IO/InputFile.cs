namespace Recycling.Onnx.IO;

/// <summary>
/// The one check every input path goes through before it is opened: models, external data, .npy/.npz/CSV data, JSON.
/// Opening a FIFO for reading blocks until a writer appears, and a device such as /dev/zero never ends, so only
/// regular files are read (symbolic links followed).
/// </summary>
internal static class InputFile
{
    /// <summary>Why <paramref name="path"/> cannot be read as an input file, or null when it is a regular file or does
    /// not exist (the caller reports a missing file in its own words).</summary>
    public static string? KindProblem(string path)
    {
        if (Directory.Exists(path))
        {
            return "cannot be read: it is a folder, not a file";
        }

        return File.Exists(path) && !FileStatus.Get(path).IsRegular
            ? "not a regular file (a FIFO, socket or device cannot be read as input)"
            : null;
    }

    /// <summary>Throws a <see cref="RecyclingException"/> naming <paramref name="path"/> when it exists and is not a regular file.</summary>
    public static void RequireRegular(string path)
    {
        if (KindProblem(path) is { } problem)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: {problem}");
        }
    }
}
