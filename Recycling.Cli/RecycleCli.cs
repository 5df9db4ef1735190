using System.CommandLine;
using System.CommandLine.Parsing;
using Recycling.Onnx;

namespace Recycling.Cli;

/// <summary>The `recycle` command line: one file per command under Commands/, registered here.</summary>
internal static class RecycleCli
{
    /// <summary>Exit code for bad input or a refused operation (the message names the file and the problem).</summary>
    public const int ErrorExitCode = 1;

    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("recycle: inspect, align, merge and evaluate fine-tuned ONNX models.");
        root.Subcommands.Add(Commands.InspectCommand.Create());
        root.Subcommands.Add(Commands.AlignCommand.Create());
        root.Subcommands.Add(Commands.MergeCommand.Create());
        root.Subcommands.Add(Commands.RunCommand.Create());
        root.Subcommands.Add(Commands.EconomicsCommand.Create());
        root.Subcommands.Add(Commands.DemoCommand.Create());
        root.Subcommands.Add(Commands.EvalCommand.Create());
        root.Subcommands.Add(Commands.ProbeCommand.Create());
        root.Subcommands.Add(Commands.SoupCommand.Create());
        root.Subcommands.Add(Commands.RankCommand.Create());
        root.Subcommands.Add(Commands.InterpolateCommand.Create());
        root.Subcommands.Add(Commands.DiversityCommand.Create());
        root.Subcommands.Add(Commands.CertifyCommand.Create());
        root.Subcommands.Add(Commands.FinetuneCommand.Create());
        root.Subcommands.Add(Commands.FisherCommand.Create());
        root.Subcommands.Add(Commands.ZooCommand.Create());
        root.Subcommands.Add(Commands.FuseCommand.Create());
        return root;
    }

    public static int Run(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        var config = new InvocationConfiguration
        {
            Output = stdout ?? Console.Out,
            Error = stderr ?? Console.Error,
            EnableDefaultExceptionHandler = false,
        };
        try
        {
            var parsed = BuildRoot().Parse(args);
            if (args.Length > 0 && UsageError(parsed, args) is { } usage)
            {
                config.Error.WriteLine($"error: {MessageText.OneLine(usage)} (see {CommandPath(parsed.CommandResult)} --help)");
                return ErrorExitCode;
            }

            return parsed.Invoke(config);
        }
        catch (Exception e) when (e is RecyclingException or IOException or UnauthorizedAccessException)
        {
            config.Error.WriteLine($"error: {MessageText.OneLine(e.Message)}");
            return ErrorExitCode;
        }
    }

    /// <summary>
    /// The command line's first problem in one line: an unknown option (System.CommandLine would bind `--x` to a file
    /// argument), a value of the wrong type, a missing required option; null when it parsed.
    /// </summary>
    private static string? UsageError(ParseResult parsed, string[] args)
    {
        var beforeSeparator = args.TakeWhile(a => a != "--").ToHashSet(StringComparer.Ordinal);
        var unknown = parsed.UnmatchedTokens.Concat(parsed.CommandResult.Children.OfType<ArgumentResult>().SelectMany(a => a.Tokens).Select(t => t.Value))
            .FirstOrDefault(t => beforeSeparator.Contains(t) && LooksLikeOption(t) && !File.Exists(t) && !Directory.Exists(t));
        if (unknown is not null)
        {
            return $"unknown option '{MessageText.OneLine(unknown)}'";
        }

        if (parsed.Errors.Count == 0)
        {
            return null;
        }

        var error = parsed.Errors[0];
        if (error.SymbolResult is OptionResult { Option: var option } result && result.Tokens.Count > 0 && error.Message.StartsWith("Cannot parse argument", StringComparison.Ordinal))
        {
            var value = result.Tokens[^1].Value;
            var expected = option.ValueType switch
            {
                var t when t == typeof(double) || t == typeof(double[]) || t == typeof(double?) || t == typeof(float) => "a number",
                var t when t == typeof(int) || t == typeof(long) || t == typeof(ulong) || t == typeof(int?) || t == typeof(int[]) => "a whole number",
                var t => t.Name.ToLowerInvariant(),
            };
            return $"{option.Name} {MessageText.Path(value)}: expected {expected}";
        }

        if (error.SymbolResult is OptionResult { Option: var required } && error.Message.Contains("is required", StringComparison.Ordinal))
        {
            return $"{required.Name} is required";
        }

        return error.Message.TrimEnd('.');
    }

    private static bool LooksLikeOption(string token) =>
        token.Length > 1 && token[0] == '-' && !double.TryParse(token, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out _);

    private static string CommandPath(CommandResult result)
    {
        var names = new List<string>();
        for (SymbolResult? r = result; r is CommandResult c; r = c.Parent)
        {
            names.Add(c.Parent is null ? "recycle" : c.Command.Name);
        }

        names.Reverse();
        return string.Join(' ', names);
    }
}
