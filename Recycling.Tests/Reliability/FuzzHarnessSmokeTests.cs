using System.Diagnostics;

namespace Recycling.Tests.Reliability;

/// <summary>
/// CI's short run of the fuzzing harness (fuzz/Recycling.Fuzz) without AFL: for each target the built harness replays
/// its seeds (fuzz/seeds/TARGET; for onnx also the torch-io fixtures) and every regression input found by fuzzing
/// (fuzz/regressions/TARGET), and must report no crash.
/// </summary>
[TestClass]
public sealed class FuzzHarnessSmokeTests
{
    private static readonly string Repository = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", ".."));

    [TestMethod]
    [DataRow("onnx")]
    [DataRow("npy")]
    [DataRow("npz")]
    [DataRow("csv")]
    [DataRow("json")]
    public void HarnessReplaysSeedsFixturesAndRegressionsWithoutCrash(string target)
    {
        var seeds = Path.Combine(Repository, "fuzz", "seeds", target);
        var regressions = Path.Combine(Repository, "fuzz", "regressions", target);
        var fixtures = target == "onnx" ? Directory.GetFiles(Path.Combine(Repository, "Recycling.Tests", "Fixtures", "torch-io"), "*.onnx") : [];
        var paths = new[] { seeds }.Concat(fixtures).Concat(Directory.Exists(regressions) ? [regressions] : []).ToArray();
        var expected = Directory.GetFiles(seeds, "*", SearchOption.AllDirectories).Length + fixtures.Length
            + (Directory.Exists(regressions) ? Directory.GetFiles(regressions, "*", SearchOption.AllDirectories).Length : 0);
        Assert.IsGreaterThanOrEqualTo(3, Directory.GetFiles(seeds).Length);

        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Recycling.Fuzz.dll"));
        start.ArgumentList.Add("--target");
        start.ArgumentList.Add(target);
        start.ArgumentList.Add("--replay");
        paths.ToList().ForEach(start.ArgumentList.Add);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEnd();
        Assert.IsTrue(process.WaitForExit(TimeSpan.FromMinutes(2)), "the harness hung");
        Assert.AreEqual(0, process.ExitCode, stderr);
        StringAssert.StartsWith(stdout.Result, $"{expected} inputs: ");
        StringAssert.Contains(stdout.Result, "0 crashes");
    }
}
