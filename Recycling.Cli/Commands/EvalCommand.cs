using System.CommandLine;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle eval`: accuracy, macro accuracy, log-loss, confusion matrix and per-domain accuracy of models on labelled data.</summary>
internal static class EvalCommand
{
    internal static Command Create()
    {
        var models = new Argument<string[]>("models") { Description = "ONNX models to evaluate.", Arity = ArgumentArity.OneOrMore };
        var data = DataOption();
        data.Required = true;
        var output = new Option<string>("--output-name") { Description = "The model output holding class scores (logits).", DefaultValueFactory = _ => "logits" };
        var dataOptions = new DataOptionSet();
        var device = DeviceOption();
        var batch = BatchOption();
        var json = JsonOption();
        var command = new Command("eval", "Evaluate ONNX classifiers on labelled data through ONNX Runtime (batched).")
        {
            Arguments = { models },
            Options = { data, output, device, batch, json },
        };
        dataOptions.AddTo(command);
        command.SetAction(parseResult =>
        {
            var paths = Models(parseResult.GetValue(models)!);
            var dataset = dataOptions.Reader(parseResult, paths[0])(parseResult.GetValue(data)!);
            var scoring = Scoring(parseResult, device, batch);
            var outputName = parseResult.GetValue(output)!;
            bool asJson = parseResult.GetValue(json);
            var results = WithStatus(asJson, "evaluating", progress => paths.Select((model, i) =>
            {
                progress.Report($"evaluating {Path.GetFileName(model)} ({i + 1}/{paths.Length})");
                using var scorer = OnnxScorer.Open(model, scoring, [outputName]);
                return (Model: model, Metrics: ClassificationMetrics.FromLogits(scorer.Run(dataset, outputName), dataset));
            }).ToList());

            if (asJson)
            {
                WriteJson(parseResult, results.Select(r => new
                {
                    model = Path.GetFullPath(r.Model),
                    data = dataset.Name,
                    samples = r.Metrics.Count,
                    accuracy = r.Metrics.Accuracy,
                    macroAccuracy = r.Metrics.MacroAccuracy,
                    logLoss = r.Metrics.LogLoss,
                    confusionMatrix = r.Metrics.ConfusionMatrix,
                    perDomain = r.Metrics.PerDomain,
                }).ToList());
                return 0;
            }

            var console = Terminal(parseResult.InvocationConfiguration.Output);
            var table = new Table().AddColumns("model", "samples", "accuracy", "macro accuracy", "log-loss", "per-domain accuracy");
            foreach (var (model, m) in results)
            {
                table.AddRow(Cell(Path.GetFileName(model)), m.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), Pct(m.Accuracy), Pct(m.MacroAccuracy),
                    m.LogLoss.ToString("F4", System.Globalization.CultureInfo.InvariantCulture),
                    Cell(string.Join(" ", m.PerDomain.Select(d => $"{d.Domain}:{Pct(d.Accuracy)}"))));
            }

            Tables.Write(console, table);
            return 0;
        });
        return command;
    }
}
