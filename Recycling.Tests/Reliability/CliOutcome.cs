namespace Recycling.Tests.Reliability;

/// <summary>What a user sees of a `recycle` run: the exit code and exactly one error line, naming the file.</summary>
internal static class CliOutcome
{
    /// <summary>Runs recycle and asserts exit 1 with one "error: ..." line that names <paramref name="file"/> and says <paramref name="problem"/>.</summary>
    public static string Fails(string[] arguments, string file, string problem)
    {
        var (code, stdout, stderr, _) = RecycleProcess.Run(arguments);
        Assert.AreEqual(1, code, $"recycle {string.Join(' ', arguments)}\nstdout: {stdout}\nstderr: {stderr}");
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.AreEqual(1, lines.Length, $"one error line expected:\n{stderr}");
        StringAssert.StartsWith(lines[0], "error: ");
        StringAssert.Contains(lines[0], file);
        StringAssert.Contains(lines[0], problem);
        return lines[0];
    }

    /// <summary>Runs recycle and asserts exit 0; returns standard output.</summary>
    public static string Succeeds(params string[] arguments)
    {
        var (code, stdout, stderr, _) = RecycleProcess.Run(arguments);
        Assert.AreEqual(0, code, $"recycle {string.Join(' ', arguments)}\nstdout: {stdout}\nstderr: {stderr}");
        return stdout;
    }
}
