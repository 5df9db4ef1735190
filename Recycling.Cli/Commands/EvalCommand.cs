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
        var data = new Option<string>("--data", "-d") { Description = DataDescription, Required = true };
        var output = new Option<string>("--output-name") { Description = "The model output holding class scores (logits).", DefaultValueFactory = _ => "logits" };
        var label = LabelColumnOption();
        var device = DeviceOption();
        var batch = BatchOption();
        var json = JsonOption();
        var command = new Command("eval", "Evaluate ONNX classifiers on labelled data through ONNX Runtime (batched).")
        {
            Arguments = { models },
            Options = { data, output, label, device, batch, json },
        };
        command.SetAction(parseResult =>
        {
            var dataset = LoadData(parseResult.GetValue(data)!, parseResult.GetValue(label));
            var scoring = Scoring(parseResult, device, batch);
            var outputName = parseResult.GetValue(output)!;
            var results = new List<(string Model, ClassificationMetrics Metrics)>();
            foreach (var model in parseResult.GetValue(models)!)
            {
                using var scorer = OnnxScorer.Open(model, scoring, [outputName]);
                results.Add((model, ClassificationMetrics.FromLogits(scorer.Run(dataset, outputName), dataset)));
            }

            var stdout = parseResult.InvocationConfiguration.Output;
            if (parseResult.GetValue(json))
            {
                stdout.WriteLine(System.Text.Json.JsonSerializer.Serialize(results.Select(r => new
                {
                    model = Path.GetFullPath(r.Model),
                    data = dataset.Name,
                    samples = r.Metrics.Count,
                    accuracy = r.Metrics.Accuracy,
                    macroAccuracy = r.Metrics.MacroAccuracy,
                    logLoss = r.Metrics.LogLoss,
                    confusionMatrix = r.Metrics.ConfusionMatrix,
                    perDomain = r.Metrics.PerDomain,
                }), Json));
                return 0;
            }

            var console = Terminal(stdout);
            var table = new Table().AddColumns("model", "samples", "accuracy", "macro accuracy", "log-loss", "per-domain accuracy");
            foreach (var (model, m) in results)
            {
                table.AddRow(Markup.Escape(Path.GetFileName(model)), m.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), Pct(m.Accuracy), Pct(m.MacroAccuracy),
                    m.LogLoss.ToString("F4", System.Globalization.CultureInfo.InvariantCulture),
                    Markup.Escape(string.Join(" ", m.PerDomain.Select(d => $"{d.Domain}:{Pct(d.Accuracy)}"))));
            }

            console.Write(table);
            return 0;
        });
        return command;
    }
}
