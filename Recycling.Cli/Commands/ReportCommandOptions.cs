using System.CommandLine;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx.IO;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>
/// The options of the commands that score models on labelled data and write a report (interpolate, diversity): -d/--data
/// (required) with the data options, -o/--output with the hidden --csv/--plot, --output-name, --device, --batch-size and
/// --json, added in one order so that the commands' help lists them alike.
/// </summary>
internal sealed class ReportCommandOptions
{
    /// <param name="outputWhat">What -o writes, for its help ("the curve").</param>
    public ReportCommandOptions(string outputWhat)
    {
        Data.Required = true;
        Output = ReportOutput.Option(outputWhat);
    }

    public Option<string> Data { get; } = DataOption();

    public Option<string?> Output { get; }

    public Option<string?> Plot { get; } = Legacy<string?>("--plot");

    public Option<string?> Csv { get; } = Legacy<string?>("--csv");

    public Option<string> OutputName { get; } = new("--output-name") { Description = "The model output holding class scores.", DefaultValueFactory = _ => "logits" };

    public DataOptionSet DataOptions { get; } = new();

    public Option<string> Device { get; } = DeviceOption();

    public Option<int> Batch { get; } = BatchOption();

    public Option<bool> Json { get; } = JsonOption();

    /// <summary>Adds the options to <paramref name="command"/>: --data, the command's <paramref name="own"/> options, then the others.</summary>
    public void AddTo(Command command, params Option[] own)
    {
        foreach (var option in (Option[])[Data, .. own, Output, OutputName, Device, Batch, Json, Plot, Csv])
        {
            command.Options.Add(option);
        }

        DataOptions.AddTo(command);
    }

    /// <summary>The models and the data, for the output checks.</summary>
    public InputFiles Inputs(ParseResult parseResult, string[] models) => CommandSupport.Inputs(models, [parseResult.GetValue(Data)]);

    /// <summary>The report's files, checked now (<see cref="ReportOutput.Prepare"/>).</summary>
    public ReportOutput Report(ParseResult parseResult, InputFiles inputs, string stem) => ReportOutput.Prepare(parseResult, Output, Csv, Plot, inputs, stem);

    /// <summary>The labelled data, read as <paramref name="model"/> takes it.</summary>
    public Dataset Dataset(ParseResult parseResult, string model) => DataOptions.Reader(parseResult, model)(parseResult.GetValue(Data)!);

    public ScoringOptions Scoring(ParseResult parseResult) => CommandSupport.Scoring(parseResult, Device, Batch);
}
