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

    public static string ModelsDirectory => Path.Combine(RepositoryRoot, "models");

    public static string FixturesDirectory => Path.Combine(RepositoryRoot, "Recycling.Tests", "Zoo", "Fixtures");
}
