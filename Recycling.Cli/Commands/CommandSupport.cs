using System.CommandLine;
using System.Text.Json;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Onnx.IO;
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

    /// <summary>The files a command reads, which none of its outputs may replace: models (with their external-data
    /// files), data specs (every file they name) and other files.</summary>
    internal static InputFiles Inputs(IEnumerable<string?> models, IEnumerable<string?>? data = null, IEnumerable<string?>? files = null) =>
        InputFiles.Of(models.OfType<string>(), (data ?? []).OfType<string>().SelectMany(DatasetLoader.Files).Concat((files ?? []).OfType<string>()));

    /// <summary>The file <paramref name="option"/> names, checked before the command's long work (null when not given).</summary>
    internal static OutputFile? Output(ParseResult parseResult, Option<string?> option, InputFiles inputs) =>
        parseResult.GetValue(option) is { } path ? OutputFile.Prepare(path, inputs, option.Name) : null;

    /// <summary>Checks the folder <paramref name="option"/> names for a command that writes several files into it (it may not exist yet).</summary>
    internal static string OutputFolder(string path, string option)
    {
        var full = Path.GetFullPath(path);
        if (File.Exists(full) || (!Directory.Exists(full) && Path.Exists(full)))
        {
            throw new RecyclingException($"{option} {path}: is a file, not a folder");
        }

        return full;
    }

    internal static string Pct(double value) => value.ToString("F2", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Reports on the calling thread (System.Progress posts to the thread pool, too late for a status line).</summary>
    private sealed class SynchronousProgress(Action<string> report) : IProgress<string>
    {
        public void Report(string value) => report(value);
    }
}
