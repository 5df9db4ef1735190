using System.CommandLine;
using System.Globalization;
using Recycling.MLNet.Diagnostics;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Study;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle diversity`: pairwise ratio-error and disagreement of models' predictions.</summary>
internal static class DiversityCommand
{
    internal static Command Create()
    {
        var models = new Argument<string[]>("models") { Description = "ONNX classifiers (at least 2).", Arity = ArgumentArity.OneOrMore };
        var data = DataOption();
        data.Required = true;
        var plot = new Option<string?>("--plot") { Description = "Write the ratio-error matrix as a PNG heatmap." };
        var csv = new Option<string?>("--csv") { Description = "Write the ratio-error matrix as CSV (disagreement beside it, *_disagreement.csv)." };
        var outputName = new Option<string>("--output-name") { Description = "The model output holding class scores.", DefaultValueFactory = _ => "logits" };
        var label = LabelColumnOption();
        var device = DeviceOption();
        var batch = BatchOption();
        var json = JsonOption();
        var command = new Command("diversity", "Pairwise prediction diversity: ratio-error (N10+N01)/N00 and disagreement rate.")
        {
            Arguments = { models },
            Options = { data, plot, csv, outputName, label, device, batch, json },
        };
        command.SetAction(parseResult =>
        {
            var paths = Models(parseResult.GetValue(models)!);
            if (paths.Length < 2)
            {
                throw new Onnx.RecyclingException("diversity compares at least 2 models");
            }

            var inputs = Inputs(paths, [parseResult.GetValue(data)]);
            var plotFile = Output(parseResult, plot, inputs);
            var csvFile = Output(parseResult, csv, inputs);
            var disagreementFile = csvFile is null ? null : Onnx.IO.OutputFile.Prepare(Path.ChangeExtension(csvFile.Path, null) + "_disagreement.csv", inputs, csv.Name);
            var dataset = LoadData(parseResult.GetValue(data)!, parseResult.GetValue(label));
            var scoring = Scoring(parseResult, device, batch);
            var name = parseResult.GetValue(outputName)!;
            bool asJson = parseResult.GetValue(json);
            var predictions = WithStatus(asJson, "scoring", progress => paths.Select((p, i) =>
            {
                progress.Report($"scoring {Path.GetFileName(p)} ({i + 1}/{paths.Length})");
                using var scorer = OnnxScorer.Open(p, scoring, [name]);
                return ClassificationMetrics.FromLogits(scorer.Run(dataset, name), dataset).Predictions;
            }).ToList());
            var names = paths.Select(Path.GetFileNameWithoutExtension).Select(n => n!).ToList();
            var matrix = DiversityMatrix.Compute(names, predictions, dataset.Labels);
            if (plotFile is not null)
            {
                DiagnosticPlots.SaveMatrix(plotFile.Path, names, matrix.RatioError, "ratio-error (N10+N01)/N00", "ratio-error");
            }

            if (csvFile is not null && disagreementFile is not null)
            {
                StudyReport.WriteMatrixCsv(csvFile.Path, names, matrix.RatioError);
                StudyReport.WriteMatrixCsv(disagreementFile.Path, names, matrix.Disagreement);
            }

            if (asJson)
            {
                WriteJson(parseResult, new
                {
                    models = names,
                    data = dataset.Name,
                    ratioError = matrix.RatioError,
                    disagreement = matrix.Disagreement,
                });
                return 0;
            }

            // Columns are numbered (the rows name the models), so the matrix stays readable at any width.
            var console = Terminal(parseResult.InvocationConfiguration.Output);
            foreach (var (title, values) in new[] { ("ratio-error", matrix.RatioError), ("disagreement (%)", matrix.Disagreement) })
            {
                var table = new Table().Title(title).AddColumn(new TableColumn("model").NoWrap());
                for (int j = 0; j < names.Count; j++)
                {
                    table.AddColumn(new TableColumn(Number(j)).RightAligned().NoWrap());
                }

                for (int i = 0; i < names.Count; i++)
                {
                    table.AddRow([$"{Number(i)} {Cell(names[i])}", .. values[i].Select((v, j) => i == j ? "-" : double.IsFinite(v) ? v.ToString("F3", CultureInfo.InvariantCulture) : double.IsNaN(v) ? "n/a" : "∞")]);
                }

                console.Write(table);
            }

            return 0;
        });
        return command;
    }

    private static string Number(int index) => (index + 1).ToString(CultureInfo.InvariantCulture);
}
