namespace Recycling.Tests.Zoo;

/// <summary>Locates the repository's models/ folder and the test fixtures from the test binaries.</summary>
internal static class ZooPaths
{
    private static readonly Lazy<string> Root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Recycling.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"Recycling.sln not found above {AppContext.BaseDirectory}");
    });

    public static string RepositoryRoot => Root.Value;

    /// <summary>The repository's models/ folder, or the folder named by RECYCLING_MODELS_DIR (to check a freshly generated zoo).</summary>
    public static string ModelsDirectory =>
        Environment.GetEnvironmentVariable("RECYCLING_MODELS_DIR") is { Length: > 0 } dir ? dir : Path.Combine(RepositoryRoot, "models");

    public static string FixturesDirectory => Path.Combine(RepositoryRoot, "Recycling.Tests", "Zoo", "Fixtures");
}
