using System.CommandLine;
using System.Text.Json;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Spectre.Console;

namespace Recycling.Cli.Commands;

/// <summary>Options and helpers shared by the evaluation commands (probe, eval, soup, rank, interpolate, diversity, certify, demo).</summary>
internal static class CommandSupport
{
    internal static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    internal static Option<bool> JsonOption() => new("--json") { Description = "Print the results as JSON." };

    internal static Option<string> DeviceOption() => new("--device")
    {
        Description = "Where ONNX Runtime runs the models: cpu, or cuda (falls back to the CPU with a notice when no usable GPU).",
        DefaultValueFactory = _ => "cpu",
    };

    internal static Option<int> BatchOption() => new("--batch-size") { Description = "Samples per ONNX Runtime call (default 32, fastest on a CPU; a GPU wants larger batches).", DefaultValueFactory = _ => new ScoringOptions().BatchSize };

    internal static Option<string?> LabelColumnOption() => new("--label-column") { Description = "Text data: the label column (header name or 0-based index; default Label, else the first column)." };

    internal static string DataDescription =>
        "Data: a split prefix (models/data/val reads val_images/_labels/_domains .npy[.gz]), an .npz (images, labels, domains), or a CSV/TSV file (gzip allowed) with a label column.";

    internal static ScoringOptions Scoring(ParseResult parseResult, Option<string> device, Option<int> batch)
    {
        var error = parseResult.InvocationConfiguration.Error;
        return new ScoringOptions
        {
            Device = parseResult.GetValue(device)?.ToLowerInvariant() switch
            {
                "cpu" => ExecutionDevice.Cpu,
                "cuda" or "gpu" => ExecutionDevice.Cuda,
                var other => throw new RecyclingException($"--device {other}: use cpu or cuda"),
            },
            BatchSize = parseResult.GetValue(batch),
            Notice = message => error.WriteLine(message),
        };
    }

    internal static Dataset LoadData(string spec, string? labelColumn) => DatasetLoader.Load(spec, new TextColumns { Label = labelColumn });

    internal static IAnsiConsole Terminal(TextWriter output)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(output),
        });
        if (!ReferenceEquals(output, Console.Out) || Console.IsOutputRedirected)
        {
            console.Profile.Width = 160;
        }

        return console;
    }

    /// <summary>Runs <paramref name="work"/> under a Spectre status line on an interactive terminal (never with --json or redirected output).</summary>
    internal static T WithStatus<T>(bool quiet, string start, Func<IProgress<string>, T> work)
    {
        if (quiet || Console.IsOutputRedirected || Console.IsErrorRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            return work(new Progress<string>(_ => { }));
        }

        T result = default!;
        AnsiConsole.Status().Start(start, context =>
        {
            result = work(new SynchronousProgress(message => context.Status(Markup.Escape(message))));
        });
        return result;
    }

    internal static string Pct(double value) => value.ToString("F2", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Reports on the calling thread (System.Progress posts to the thread pool, too late for a status line).</summary>
    private sealed class SynchronousProgress(Action<string> report) : IProgress<string>
    {
        public void Report(string value) => report(value);
    }
}
