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
        var options = new ReportCommandOptions("the matrices (CSV: ratio-error, disagreement in *_disagreement.csv beside it; PNG: the ratio-error heatmap)");
        var command = new Command("diversity", "Pairwise prediction diversity: ratio-error (N10+N01)/N00 and disagreement rate.")
        {
            Arguments = { models },
        };
        options.AddTo(command);
        command.SetAction(parseResult =>
        {
            var paths = Models(parseResult.GetValue(models)!);
            if (paths.Length < 2)
            {
                throw new Onnx.RecyclingException("diversity compares at least 2 models");
            }

            var inputs = options.Inputs(parseResult, paths);
            var report = options.Report(parseResult, inputs, "diversity");
            var disagreementFile = report.CsvBeside("_disagreement");
            if (disagreementFile is not null)
            {
                Onnx.IO.OutputFile.Prepare(disagreementFile, inputs, parseResult.GetValue(options.Output) is null ? options.Csv.Name : options.Output.Name, createFolder: true);
            }
            var dataset = options.Dataset(parseResult, paths[0]);
            var scoring = options.Scoring(parseResult);
            var name = parseResult.GetValue(options.OutputName)!;
            bool asJson = parseResult.GetValue(options.Json);
            var predictions = WithStatus(asJson, "scoring", progress => paths.Select((p, i) =>
            {
                progress.Report($"scoring {Path.GetFileName(p)} ({i + 1}/{paths.Length})");
                using var scorer = OnnxScorer.Open(p, scoring, [name]);
                return ClassificationMetrics.FromLogits(scorer.Run(dataset, name), dataset).Predictions;
            }).ToList());
            var names = paths.Select(Path.GetFileNameWithoutExtension).Select(n => n!).ToList();
            var matrix = DiversityMatrix.Compute(names, predictions, dataset.Labels);
            report.CreateFolder();
            if (report.Png is not null)
            {
                DiagnosticPlots.SaveMatrix(report.Png, names, matrix.RatioError, "ratio-error (N10+N01)/N00", "ratio-error");
            }

            if (report.Csv is not null && disagreementFile is not null)
            {
                StudyReport.WriteMatrixCsv(report.Csv, names, matrix.RatioError);
                StudyReport.WriteMatrixCsv(disagreementFile, names, matrix.Disagreement);
            }

            var document = new
            {
                models = names,
                data = dataset.Name,
                ratioError = matrix.RatioError,
                disagreement = matrix.Disagreement,
            };
            report.WriteJson(document);
            if (asJson)
            {
                WriteJson(parseResult, document);
                return 0;
            }

            // Columns are numbered (the rows name the models); on a terminal too narrow for the grid, one block per model names them.
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

                Tables.Write(console, table, ["model", .. names.Select((n, j) => $"{Number(j)} {Onnx.MessageText.OneLine(n)}")]);
            }

            return 0;
        });
        return command;
    }

    private static string Number(int index) => (index + 1).ToString(CultureInfo.InvariantCulture);
}
