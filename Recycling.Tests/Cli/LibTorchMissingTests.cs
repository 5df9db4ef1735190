using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Recycling.Cli;
using static Recycling.Tests.Cli.ZooSplit;

namespace Recycling.Tests.Cli;

/// <summary>
/// The linux-arm64 tool package has no LibTorch (no package provides one). Simulated honestly: the built `recycle`
/// folder, linked file by file, without the natives recycle.deps.json lists for the libtorch-cpu-* and TorchSharp
/// packages, and with an empty NuGet folder so TorchSharp cannot fetch them from the cache. finetune then fails with
/// one line and writes nothing; commands that do not fine-tune still run.
/// </summary>
[TestClass]
public sealed class LibTorchMissingTests
{
    [TestMethod]
    public void FinetuneWithoutLibTorchIsOneLine()
    {
        RequireZoo();
        if (!OperatingSystem.IsLinux())
        {
            Assert.Inconclusive("the copy is made with hard links (Linux)");
        }

        var built = AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar);
        var copy = Path.Combine(Path.GetDirectoryName(built)!, "no-libtorch-" + Guid.NewGuid().ToString("N")[..8]);
        var work = Directory.CreateTempSubdirectory("recycle-nolibtorch-").FullName;
        try
        {
            int removed = LinkWithoutLibTorch(built, copy);
            Assert.IsGreaterThan(0, removed, "recycle.deps.json lists no LibTorch natives to remove");
            var output = Path.Combine(work, "tuned.onnx");
            var val = Path.Combine(Models, "data", "val");
            var environment = new Dictionary<string, string> { ["NUGET_PACKAGES"] = Path.Combine(work, "empty-nuget") };
            var (exit, stdout, stderr) = Run(copy, environment, "finetune", Model("cnn_base"), "-d", val, "-o", output, "--steps", "1");
            Assert.AreEqual(1, exit, stderr);
            var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.HasCount(1, lines, stderr);
            Assert.AreEqual($"error: {RecycleCli.LibTorchMessage(RuntimeInformation.RuntimeIdentifier)}", lines[0]);
            Assert.DoesNotContain("LoadNativeBackend", stdout);
            Assert.IsFalse(File.Exists(output));
            Assert.IsFalse(Directory.Exists(Path.Combine(copy, "cpu")), "TorchSharp consolidated natives from a NuGet cache");

            // ONNX Runtime is still there: evaluation works in the same folder.
            (exit, stdout, stderr) = Run(copy, environment, "eval", Model("cnn_base"), "-d", val, "--json");
            Assert.AreEqual(0, exit, stderr);
            using var json = JsonDocument.Parse(stdout);
            Assert.AreEqual(2000, json.RootElement[0].GetProperty("samples").GetInt32());
        }
        finally
        {
            Directory.Delete(work, recursive: true);
            if (Directory.Exists(copy))
            {
                Directory.Delete(copy, recursive: true);
            }
        }
    }

    [TestMethod]
    public void TheMessageSaysWhatToDo()
    {
        StringAssert.Contains(RecycleCli.LibTorchMessage("linux-arm64"), "no LibTorch package is published for it); run them with the linux-x64, win-x64 or osx-arm64 build");
        StringAssert.StartsWith(RecycleCli.LibTorchMessage("linux-x64"), "fine-tuning (finetune, fisher, fuse, ratatouille, cold-fusion, recipe run, zoo build) needs LibTorch, which recycle for linux-x64 does not include or could not load; ");
        Assert.IsTrue(RecycleCli.LibTorchMissing(new TypeInitializationException("TorchSharp.torch", new NotSupportedException("no libtorch"))));
        Assert.IsTrue(RecycleCli.LibTorchMissing(new DllNotFoundException("Unable to load shared library 'LibTorchSharp'")));
        Assert.IsFalse(RecycleCli.LibTorchMissing(new DllNotFoundException("Unable to load shared library 'onnxruntime'")));
        Assert.IsFalse(RecycleCli.LibTorchMissing(new TypeInitializationException("Recycling.Something", null)));
    }

    /// <summary>Hard-links every file of <paramref name="from"/> into <paramref name="to"/> except LibTorch's and TorchSharp's natives; returns how many were left out.</summary>
    private static int LinkWithoutLibTorch(string from, string to)
    {
        using var deps = JsonDocument.Parse(File.ReadAllText(Path.Combine(from, "recycle.deps.json")));
        var excluded = new HashSet<string>(StringComparer.Ordinal);
        foreach (var target in deps.RootElement.GetProperty("targets").EnumerateObject())
        {
            foreach (var library in target.Value.EnumerateObject())
            {
                var package = library.Name.Split('/')[0].ToLowerInvariant();
                if ((package.StartsWith("libtorch", StringComparison.Ordinal) || package == "torchsharp") && library.Value.TryGetProperty("runtimeTargets", out var natives))
                {
                    foreach (var native in natives.EnumerateObject())
                    {
                        excluded.Add(Path.GetFullPath(Path.Combine(from, native.Name)));
                    }
                }
            }
        }

        int left = 0;
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            if (excluded.Contains(Path.GetFullPath(file)))
            {
                left++;
                continue;
            }

            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            if (Link(file, target) != 0)
            {
                File.Copy(file, target);
            }
        }

        return left;
    }

    [DllImport("libc", EntryPoint = "link", SetLastError = true)]
    private static extern int Link([MarshalAs(UnmanagedType.LPUTF8Str)] string existing, [MarshalAs(UnmanagedType.LPUTF8Str)] string created);

    private static (int ExitCode, string Stdout, string Stderr) Run(string folder, Dictionary<string, string> environment, params string[] args)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(folder, "recycle.dll"));
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"recycle {string.Join(' ', args)} ran for more than 3 minutes");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}
