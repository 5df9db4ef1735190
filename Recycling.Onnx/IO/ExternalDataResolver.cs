namespace Recycling.Onnx.IO;

/// <summary>
/// Resolves external-data locations with the safety rules of the ONNX checker: a relative, non-empty
/// location that stays inside the model's folder after normalisation, no `..`, no symbolic link anywhere
/// on the way, a regular file with a single hard link, and never ONNX Runtime's in-memory marker.
/// </summary>
internal static class ExternalDataResolver
{
    public const string OrtMemoryAddressMarker = "_ORT_MEM_ADDR_";

    /// <summary>Returns the full path of a safe location; otherwise the problem, worded for a user.</summary>
    public static string Resolve(string modelPath, string location)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        if (string.IsNullOrWhiteSpace(location))
        {
            throw Problem(modelPath, "external data has an empty location");
        }

        if (location.Contains(OrtMemoryAddressMarker, StringComparison.Ordinal))
        {
            throw Problem(modelPath, $"external data location '{location}' uses ONNX Runtime's in-memory marker {OrtMemoryAddressMarker}, which is refused in files");
        }

        if (location.Contains('\0', StringComparison.Ordinal) || Path.IsPathRooted(location) || location.StartsWith('\\') || (location.Length > 1 && location[1] == ':'))
        {
            throw Problem(modelPath, $"external data location '{location}' is absolute; it must be relative to the model's folder");
        }

        var parts = location.Split(['/', '\\'], StringSplitOptions.RemoveEmptyEntries);
        if (parts.Any(p => p == ".."))
        {
            throw Problem(modelPath, $"external data location '{location}' contains '..'");
        }

        var full = Path.GetFullPath(Path.Combine(folder, string.Join(Path.DirectorySeparatorChar, parts)));
        var relative = Path.GetRelativePath(folder, full);
        if (relative.StartsWith("..", StringComparison.Ordinal) || Path.IsPathRooted(relative))
        {
            throw Problem(modelPath, $"external data location '{location}' leaves the model's folder");
        }

        var walk = folder;
        foreach (var part in parts)
        {
            walk = Path.Combine(walk, part);
            var info = new FileInfo(walk);
            if (info.LinkTarget is not null)
            {
                throw Problem(modelPath, $"external data location '{location}' goes through a symbolic link ({walk})");
            }
        }

        if (Directory.Exists(full))
        {
            throw Problem(modelPath, $"external data location '{location}' is a folder, not a file");
        }

        if (!File.Exists(full))
        {
            throw Problem(modelPath, $"external data file '{location}' is missing (looked for {full})");
        }

        var (isRegular, links) = FileStatus.Get(full);
        if (!isRegular)
        {
            throw Problem(modelPath, $"external data location '{location}' is not a regular file");
        }

        if (links > 1)
        {
            throw Problem(modelPath, $"external data file '{location}' has {links} hard links; a file with more than one is refused");
        }

        return full;
    }

    private static OnnxFormatException Problem(string modelPath, string problem) => new(modelPath, problem);
}
