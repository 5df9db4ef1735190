namespace Recycling.Tests;

/// <summary>The fixture folders copied beside the test assembly (Recycling.Tests/Fixtures/**).</summary>
internal static class Fixtures
{
    public static string Root { get; } = Path.Combine(AppContext.BaseDirectory, "Fixtures");

    public static string TorchIo { get; } = Path.Combine(Root, "torch-io");

    public static string TorchIoFile(string name) => Path.Combine(TorchIo, name);

    /// <summary>Copies the torch-io model <paramref name="file"/> and its external-data files into <paramref name="folder"/>.</summary>
    public static string CopyTorchIoModel(string file, string folder, IEnumerable<string> externalFiles)
    {
        foreach (var relative in externalFiles.Append(file))
        {
            var target = Path.Combine(folder, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(TorchIoFile(relative), target);
        }

        return Path.Combine(folder, file);
    }
}
