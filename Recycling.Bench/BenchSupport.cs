using System.Globalization;

namespace Recycling.Bench;

/// <summary>What the bench's own commands (merge-rss, train-speed, gpu, ...) share: argument lookup, medians, and this
/// process's memory figures.</summary>
internal static class BenchSupport
{
    /// <summary>The value after <paramref name="name"/> in <paramref name="args"/>, or null.</summary>
    public static string? Option(string[] args, string name)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>The kB fields of /proc/self/status (VmRSS, VmHWM, ...), in bytes; empty where there is no such file.</summary>
    public static Dictionary<string, long> ProcessStatus()
    {
        var fields = new Dictionary<string, long>(StringComparer.Ordinal);
        if (!File.Exists("/proc/self/status"))
        {
            return fields;
        }

        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            var parts = line.Split(':', 2);
            if (parts.Length == 2 && parts[1].Trim() is var value && value.EndsWith(" kB", StringComparison.Ordinal)
                && long.TryParse(value[..^3], NumberStyles.None, CultureInfo.InvariantCulture, out var kb))
            {
                fields[parts[0]] = kb * 1024;
            }
        }

        return fields;
    }
}
