using System.Diagnostics;

namespace Recycling.Tests.Reliability;

/// <summary>Runs the built `recycle` CLI (recycle.dll beside the tests) as a child process.</summary>
internal static class RecycleProcess
{
    private static string Dll => Path.Combine(AppContext.BaseDirectory, "recycle.dll");

    public static Process Start(IEnumerable<string> arguments, IReadOnlyDictionary<string, string>? environment = null, string? workingDirectory = null)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? "",
        };
        start.ArgumentList.Add(Dll);
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        return Process.Start(start) ?? throw new InvalidOperationException("could not start recycle");
    }

    public static (int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed) Run(IEnumerable<string> arguments, IReadOnlyDictionary<string, string>? environment = null,
        string? workingDirectory = null, int minutes = 3)
    {
        var watch = Stopwatch.StartNew();
        using var process = Start(arguments, environment, workingDirectory);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(minutes)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"recycle {string.Join(' ', arguments)} ran for more than {minutes} minutes");
        }

        return (process.ExitCode, stdout.Result, stderr.Result, watch.Elapsed);
    }
}
