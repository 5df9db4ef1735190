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
        root.Subcommands.Add(Commands.RecipeCommand.Create());
        root.Subcommands.Add(Commands.ColdFusionCommand.Create());
        root.Subcommands.Add(Commands.RatatouilleCommand.Create());
        return root;
    }

    /// <param name="width">Lay tables out for a terminal this wide (tests); null: the terminal's width, or unwrapped when piped.</param>
    public static int Run(string[] args, TextWriter? stdout = null, TextWriter? stderr = null, int? width = null)
    {
        var previousWidth = Commands.CommandSupport.TableWidth.Value;
        Commands.CommandSupport.TableWidth.Value = width;
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

            if (NeedsLibTorch(parsed.CommandResult) && parsed.Action is not System.CommandLine.Help.HelpAction && !LibTorchLoads())
            {
                config.Error.WriteLine($"error: {LibTorchMessage(System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier)}");
                return ErrorExitCode;
            }

            return parsed.Invoke(config);
        }
        catch (Exception e) when (e is RecyclingException or IOException or UnauthorizedAccessException)
        {
            config.Error.WriteLine($"error: {MessageText.OneLine(e.Message)}");
            return ErrorExitCode;
        }
        catch (Exception e) when (LibTorchMissing(e))
        {
            config.Error.WriteLine($"error: {LibTorchMessage(System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier)}");
            return ErrorExitCode;
        }
        catch (System.Runtime.InteropServices.ExternalException e)
        {
            // LibTorch failing where no fine-tuning or run caught it to name its model: its first line, not its C++ stack.
            config.Error.WriteLine($"error: LibTorch failed: {Recycling.Training.LibTorchError.FirstLine(e)}");
            return ErrorExitCode;
        }
        finally
        {
            Commands.CommandSupport.TableWidth.Value = previousWidth;
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

    /// <summary>
    /// Whether <paramref name="e"/> is TorchSharp failing to load LibTorch (its type initializer throws, wrapping a
    /// NotSupportedException or DllNotFoundException): the linux-arm64 build has no LibTorch, as no package provides one.
    /// </summary>
    internal static bool LibTorchMissing(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            if (x is TypeInitializationException { TypeName: { } type } && type.StartsWith("TorchSharp", StringComparison.Ordinal))
            {
                return true;
            }

            if (x is DllNotFoundException && x.Message.Contains("torch", StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Loads LibTorch before a fine-tuning command runs. When it is missing TorchSharp prints its whole probing trace to
    /// standard output before it throws, so the load runs here with that stream silenced, and the failure becomes one line.
    /// </summary>
    private static bool LibTorchLoads()
    {
        var output = Console.Out;
        Console.SetOut(TextWriter.Null);
        try
        {
            System.Runtime.CompilerServices.RuntimeHelpers.RunClassConstructor(typeof(TorchSharp.torch).TypeHandle);
            return true;
        }
        catch (Exception e) when (LibTorchMissing(e))
        {
            return false;
        }
        finally
        {
            Console.SetOut(output);
        }
    }

    /// <summary>The commands that fine-tune (and so need LibTorch); checked before they run so a missing LibTorch is one line.</summary>
    private static bool NeedsLibTorch(System.CommandLine.Parsing.CommandResult command) =>
        command.Command.Name is "finetune" or "fisher" or "fuse" or "ratatouille" or "cold-fusion"
        || (command.Parent is System.CommandLine.Parsing.CommandResult parent
            && (parent.Command.Name, command.Command.Name) is ("recipe", "run") or ("zoo", "build"));

    internal static string LibTorchMessage(string runtime) =>
        $"fine-tuning (finetune, fisher, fuse, ratatouille, cold-fusion, recipe run, zoo build) needs LibTorch, which recycle for {runtime} does not include or could not load"
        + (runtime.StartsWith("linux-arm64", StringComparison.Ordinal)
            ? " (no LibTorch package is published for it); run them with the linux-x64, win-x64 or osx-arm64 build; every other command works here"
            : "; reinstall recycle, or publish it for linux-x64, win-x64 or osx-arm64");

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
