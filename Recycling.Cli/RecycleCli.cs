using System.CommandLine;
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
            return BuildRoot().Parse(args).Invoke(config);
        }
        catch (Exception e) when (e is RecyclingException or IOException or UnauthorizedAccessException)
        {
            config.Error.WriteLine($"error: {e.Message}");
            return ErrorExitCode;
        }
    }
}
