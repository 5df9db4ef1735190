using System.CommandLine;
using System.Globalization;
using Recycling.MLNet.Diagnostics;
using Recycling.MLNet.Soups;
using Recycling.MLNet.Study;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle interpolate`: accuracy and loss along θ(λ) = (1−λ)θa + λθb, with the barrier.</summary>
internal static class InterpolateCommand
{
    internal static Command Create()
    {
        var a = new Argument<string>("model-a") { Description = "First model (λ = 0)." };
        var b = new Argument<string>("model-b") { Description = "Second model (λ = 1), an export of the same base." };
        var points = new Option<int>("--points") { Description = "Evenly spaced λ values in [0, 1].", DefaultValueFactory = _ => 11 };
        var options = new ReportCommandOptions("the curve");
        var command = new Command("interpolate", "Linear mode connectivity: evaluate the linear path between two fine-tunings and report the loss and error barriers.")
        {
            Arguments = { a, b },
        };
        options.AddTo(command, points);
        command.SetAction(parseResult =>
        {
            string[] pair = Models([parseResult.GetValue(a)!, parseResult.GetValue(b)!]);
            var inputs = options.Inputs(parseResult, pair);
            var report = options.Report(parseResult, inputs, "interpolation");
            var dataset = options.Dataset(parseResult, pair[0]);
            bool asJson = parseResult.GetValue(options.Json);
            using var set = new ModelSet(pair, output: parseResult.GetValue(options.OutputName)!, scoring: options.Scoring(parseResult));
            int n = parseResult.GetValue(points);
            var curve = WithStatus(asJson, "interpolating", progress =>
                InterpolationCurve.Compute(set, 0, 1, dataset, n, Synchronous<int>(k => progress.Report($"λ point {k}/{n}"))));
            report.CreateFolder();
            if (report.Png is not null)
            {
                DiagnosticPlots.SaveInterpolation(report.Png, [curve], $"interpolation on {Path.GetFileName(dataset.Name)}");
            }

            if (report.Csv is not null)
            {
                StudyReport.WriteInterpolationCsv(report.Csv, [curve]);
            }

            var document = new { a = curve.ModelA, b = curve.ModelB, data = curve.Data, points = curve.Points, lossBarrier = curve.LossBarrier, errorBarrier = curve.ErrorBarrier };
            report.WriteJson(document);
            var stdout = parseResult.InvocationConfiguration.Output;
            if (asJson)
            {
                WriteJson(parseResult, document);
                return 0;
            }

            var console = Terminal(stdout);
            var table = new Table().AddColumns("λ", "accuracy", "error", "log-loss");
            foreach (var p in curve.Points)
            {
                table.AddRow(p.Lambda.ToString("F2", CultureInfo.InvariantCulture), Pct(p.Accuracy), Pct(p.Error), p.Loss.ToString("F4", CultureInfo.InvariantCulture));
            }

            Tables.Write(console, table);
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"loss barrier {curve.LossBarrier:F4}; error barrier {curve.ErrorBarrier:F2} points"));
            return 0;
        });
        return command;
    }
}
