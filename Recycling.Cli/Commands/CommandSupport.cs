using System.CommandLine;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Merging;
using Recycling.Training;
using Spectre.Console;

namespace Recycling.Cli.Commands;

/// <summary>Options and helpers shared by the commands: one name and one meaning per thing (docs/json.md, README).</summary>
internal static class CommandSupport
{
    internal static Option<bool> JsonOption() => new("--json") { Description = "Print the results as JSON (docs/json.md)." };

    /// <summary>Prints <paramref name="value"/> in the one JSON style (<see cref="JsonStyle"/>); a note about NaN or
    /// infinities goes into the document's "notes", or to standard error when the document is an array.</summary>
    internal static void WriteJson(ParseResult parseResult, object value)
    {
        var error = parseResult.InvocationConfiguration.Error;
        parseResult.InvocationConfiguration.Output.WriteLine(JsonStyle.Serialize(value, error.WriteLine));
    }

    internal static Option<string> DeviceOption() => new("--device")
    {
        Description = "cpu; cuda (an NVIDIA GPU, an error when none is usable); or auto (the GPU when usable, else the CPU with a notice).",
        HelpName = "cpu|cuda|auto",
        DefaultValueFactory = _ => "cpu",
    };

    /// <summary>The one set of --device values, for scoring (ONNX Runtime) and merging (ILGPU) alike.</summary>
    internal static (ExecutionDevice Scoring, MergeDevice Merge) Device(ParseResult parseResult, Option<string> device) =>
        parseResult.GetValue(device)?.ToLowerInvariant() switch
        {
            "cpu" => (ExecutionDevice.Cpu, MergeDevice.Cpu),
            "cuda" or "gpu" => (ExecutionDevice.Cuda, MergeDevice.Cuda),
            "auto" => (ExecutionDevice.Auto, MergeDevice.Auto),
            var other => throw new RecyclingException($"--device {MessageText.OneLine(other ?? "")}: use cpu, cuda or auto"),
        };

    /// <summary>`--device` of the commands that train with LibTorch (finetune, fisher, the recipes): the same values and meanings.</summary>
    internal static Option<string> TrainingDeviceOption() => new("--device")
    {
        Description = "Where LibTorch trains: cpu; cuda (an NVIDIA GPU, with a CUDA build of TorchSharp referenced; an error when none is usable); or auto (the GPU when usable, else the CPU with a notice).",
        HelpName = "cpu|cuda|auto",
        DefaultValueFactory = _ => "cpu",
    };

    /// <summary>The training device <paramref name="device"/> names, checked before any work: cuda without CUDA is an error, auto without it the CPU and a notice on standard error.</summary>
    internal static TrainingDevice ChosenTrainingDevice(ParseResult parseResult, Option<string> device)
    {
        var requested = parseResult.GetValue(device)?.ToLowerInvariant() switch
        {
            "cpu" => TrainingDevice.Cpu,
            "cuda" or "gpu" => TrainingDevice.Cuda,
            "auto" => TrainingDevice.Auto,
            var other => throw new RecyclingException($"--device {MessageText.OneLine(other ?? "")}: use cpu, cuda or auto"),
        };
        var error = parseResult.InvocationConfiguration.Error;
        return TrainingDevices.Choose(requested, message => error.WriteLine(message));
    }

    internal static Option<int> BatchOption() => new("--batch-size") { Description = "Samples per ONNX Runtime call (default 32, fastest on a CPU; a GPU wants larger batches).", DefaultValueFactory = _ => new ScoringOptions().BatchSize };

    internal static string DataDescription =>
        "Labelled data: a split prefix (models/data/val reads val_images/_labels/_domains .npy[.gz]), an .npz (images, labels, domains), or a CSV/TSV file (gzip allowed) with a label column; for a text model (token-id inputs), a .csv, .tsv or .jsonl file of texts and labels tokenised with its vocabulary (--vocab).";

    /// <summary>`-d/--data`: the labelled data a command works on (what probes train on, what soups are chosen on).</summary>
    internal static Option<string> DataOption(string? description = null) =>
        new("--data", "-d") { Description = description is null ? DataDescription : description + " " + DataDescription };

    /// <summary>`--test`: more labelled data sets, reported beside the first (held out: never trained or chosen on).</summary>
    internal static Option<string[]> TestOption(string description) => new("--test") { Description = description + " Repeatable; same formats as --data.", AllowMultipleArgumentsPerToken = true };

    /// <summary>A hidden alias kept for an option's older name (e.g. --train for --data).</summary>
    internal static Option<T> Legacy<T>(string name) => new(name) { Hidden = true, AllowMultipleArgumentsPerToken = typeof(T).IsArray };

    /// <summary>The value of <paramref name="option"/>, or of its older hidden name; an error naming the option when required and absent.</summary>
    internal static T? Value<T>(ParseResult parseResult, Option<T> option, Option<T> legacy, bool required = false)
    {
        var value = parseResult.GetResult(option) is { Implicit: false } ? parseResult.GetValue(option) : default;
        if (value is null && parseResult.GetResult(legacy) is { Implicit: false })
        {
            value = parseResult.GetValue(legacy);
        }

        return value is null && required ? throw new RecyclingException($"{option.Name} is required") : value;
    }

    internal static ScoringOptions Scoring(ParseResult parseResult, Option<string> device, Option<int> batch)
    {
        var error = parseResult.InvocationConfiguration.Error;
        return new ScoringOptions
        {
            Device = Device(parseResult, device).Scoring,
            BatchSize = parseResult.GetValue(batch),
            Notice = message => error.WriteLine(message),
        };
    }

    /// <summary>Model paths as given, after refusing folders by name (the readers would say "access denied").</summary>
    internal static string[] Models(string[] paths)
    {
        foreach (var path in paths)
        {
            if (Directory.Exists(path))
            {
                throw new RecyclingException($"{MessageText.Path(path)}: is a folder, not a model file");
            }
        }

        return paths;
    }

    internal static string Model(string path) => Models([path])[0];

    /// <summary>
    /// A console for tables: at a terminal as wide as it is; piped or captured, as wide as the content (never wrapped at
    /// an arbitrary width, so the text a script reads is the table's rows).
    /// </summary>
    internal static IAnsiConsole Terminal(TextWriter output)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(output),
        });
        if (TableWidth.Value is { } width)
        {
            console.Profile.Width = width;
        }
        else if (!ReferenceEquals(output, Console.Out) || Console.IsOutputRedirected)
        {
            console.Profile.Width = UnwrappedWidth;
        }

        return console;
    }

    /// <summary>A terminal width to lay tables out for instead of the detected one (tests of narrow terminals); flows with the call.</summary>
    internal static readonly AsyncLocal<int?> TableWidth = new();

    /// <summary>The width of a console that is not a terminal: wider than any table the commands print.</summary>
    internal const int UnwrappedWidth = 4096;

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
            result = work(Synchronous<string>(message => context.Status(Markup.Escape(message))));
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

    /// <summary>Data sets as table headers show them: their file names when those tell them apart, otherwise as given.</summary>
    internal static IReadOnlyList<string> DataLabels(IReadOnlyList<string> names)
    {
        var shortNames = names.Select(n => Path.GetFileName(n.TrimEnd('/', Path.DirectorySeparatorChar))).ToList();
        return shortNames.Distinct(StringComparer.Ordinal).Count() == names.Count && shortNames.All(n => n.Length > 0) ? shortNames : names;
    }

    /// <summary>The file name of a model as tables show it (markup-escaped, control characters escaped).</summary>
    internal static string Cell(string text) => Markup.Escape(MessageText.OneLine(text));

    /// <summary>A progress that reports on the calling thread (System.Progress posts to the thread pool, too late for a status line).</summary>
    internal static IProgress<T> Synchronous<T>(Action<T> report) => new SynchronousProgress<T>(report);

    private sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
