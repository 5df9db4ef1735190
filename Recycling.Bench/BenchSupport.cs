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

    /// <summary>
    /// Checks a command's arguments against <paramref name="command"/>'s options before anything runs, since a bench run
    /// can take an hour and a mistyped option would otherwise be ignored: with --help or -h, the usage on standard output
    /// and exit code 0; an unknown option, an option without its value, or a stray or missing argument, one line on
    /// standard error naming it and the valid options, and exit code 1; otherwise null (run the command).
    /// </summary>
    public static int? CheckArguments(string[] args, BenchCommand command)
    {
        if (args.Skip(1).Any(a => a is "--help" or "-h"))
        {
            Console.WriteLine("usage: Recycling.Bench " + command.Usage);
            return 0;
        }

        var problem = args.Length < 1 + command.Positional.Length
            ? $"{args[0]} takes {string.Join(" ", command.Positional)} first"
            : null;
        for (var i = 1 + command.Positional.Length; problem is null && i < args.Length; i++)
        {
            var arg = args[i];
            if (command.Valued.Contains(arg))
            {
                problem = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? null : $"{arg} needs a value";
                i++;
            }
            else if (!command.Flags.Contains(arg))
            {
                problem = arg.StartsWith('-') ? $"unknown option '{arg}'" : $"unexpected argument '{arg}'";
            }
        }

        if (problem is null)
        {
            return null;
        }

        Console.Error.WriteLine($"error: {problem} (valid options of {args[0]}: {string.Join(", ", command.Valued.Concat(command.Flags).Append("--help"))})");
        return 1;
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>
    /// Paired per-round ratios summarised: median, min, max, and their geometric mean with a 95 % confidence interval
    /// (Student's t on the log ratios, rounds taken as independent): "overhead at most 10 %" is shown when the interval's
    /// low end is at least 1/1.1.
    /// </summary>
    public static System.Text.Json.Nodes.JsonObject PairedRatios(IReadOnlyList<double> ratios)
    {
        var summary = new System.Text.Json.Nodes.JsonObject { ["median"] = Median(ratios), ["min"] = ratios.Min(), ["max"] = ratios.Max() };
        var logs = ratios.Select(r => Math.Log(r)).ToArray();
        var mean = logs.Average();
        summary["geomean"] = Math.Exp(mean);
        if (logs.Length > 1)
        {
            var sd = Math.Sqrt(logs.Sum(l => (l - mean) * (l - mean)) / (logs.Length - 1));
            var half = StudentT975(logs.Length - 1) * sd / Math.Sqrt(logs.Length);
            (summary["ci95_low"], summary["ci95_high"]) = (Math.Exp(mean - half), Math.Exp(mean + half));
        }

        return summary;
    }

    /// <summary>Student's t 97.5 % quantile: exact below 5 degrees of freedom, else the Cornish–Fisher expansion (within 0.004).</summary>
    internal static double StudentT975(int df)
    {
        double[] small = [12.706, 4.303, 3.182, 2.776];
        if (df <= small.Length)
        {
            return small[df - 1];
        }

        const double z = 1.959963984540054;
        var (z3, z5, z7) = (Math.Pow(z, 3), Math.Pow(z, 5), Math.Pow(z, 7));
        return z + ((z3 + z) / (4.0 * df)) + (((5 * z5) + (16 * z3) + (3 * z)) / (96.0 * df * df))
            + (((3 * z7) + (19 * z5) + (17 * z3) - (15 * z)) / (384.0 * df * df * df));
    }

    /// <summary>The kB fields of /proc/self/status (VmRSS, VmHWM, ...), in bytes; empty where there is no such file.</summary>
    public static Dictionary<string, long> ProcessStatus() => ProcFields("/proc/self/status", " kB", 1024);

    /// <summary>
    /// This process's I/O counters (/proc/self/io): rchar, the bytes its read and pread calls returned, from the page
    /// cache or the disk (mapped pages that fault in are not counted); read_bytes, the bytes it had fetched from storage
    /// (a cached read adds nothing). Empty where there is no such file.
    /// </summary>
    public static Dictionary<string, long> ProcessIo() => ProcFields("/proc/self/io", "", 1);

    /// <summary>The "name: number[unit]" lines of a /proc file whose value ends in <paramref name="unit"/>, times <paramref name="scale"/>.</summary>
    private static Dictionary<string, long> ProcFields(string path, string unit, long scale)
    {
        var fields = new Dictionary<string, long>(StringComparer.Ordinal);
        if (!File.Exists(path))
        {
            return fields;
        }

        foreach (var line in File.ReadLines(path))
        {
            var parts = line.Split(':', 2);
            if (parts.Length == 2 && parts[1].Trim() is var value && value.EndsWith(unit, StringComparison.Ordinal)
                && long.TryParse(value[..^unit.Length], NumberStyles.None, CultureInfo.InvariantCulture, out var number))
            {
                fields[parts[0]] = number * scale;
            }
        }

        return fields;
    }
}

/// <summary>
/// What one bench command takes: <paramref name="Usage"/> (its name first, as --help prints it), the options that take a
/// value and the flags.
/// </summary>
internal sealed record BenchCommand(string Usage, string[] Valued, string[] Flags)
{
    /// <summary>The arguments that come first, without a name (the workers' own).</summary>
    public string[] Positional { get; init; } = [];
}
