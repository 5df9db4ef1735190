using System.CommandLine;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle soup`: uniform or greedy model soup chosen on val, evaluated in memory, optionally written out.</summary>
internal static class SoupCommand
{
    internal static Command Create()
    {
        var models = new Argument<string[]>("models") { Description = "Fine-tuned exports of one base (the ingredients).", Arity = ArgumentArity.OneOrMore };
        var val = DataOption("Validation data the soup is chosen on.");
        var test = TestOption("More data sets to report (e.g. OOD).");
        var oldVal = Legacy<string>("--val");
        var mode = new Option<string>("--mode") { Description = "uniform or greedy.", DefaultValueFactory = _ => "greedy" };
        var rule = new Option<string>("--rule") { Description = "Greedy acceptance: strict ('>', model soups) or ties ('>=', DiWA / ratatouille).", DefaultValueFactory = _ => "strict" };
        var output = new Option<string?>("--output", "-o") { Description = "Write the chosen soup as an ONNX model." };
        var outputName = new Option<string>("--output-name") { Description = "The model output holding class scores.", DefaultValueFactory = _ => "logits" };
        var label = LabelColumnOption();
        var device = DeviceOption();
        var batch = BatchOption();
        var json = JsonOption();
        var command = new Command("soup", "Cook a uniform or greedy model soup: candidates are averaged in memory and scored with ONNX Runtime on val.")
        {
            Arguments = { models },
            Options = { val, test, mode, rule, output, outputName, label, device, batch, json, oldVal },
        };
        command.SetAction(parseResult =>
        {
            var paths = Models(parseResult.GetValue(models)!);
            var labelColumn = parseResult.GetValue(label);
            var valSpec = Value(parseResult, val, oldVal, required: true)!;
            if (parseResult.GetValue(output) is { } outputPath)
            {
                ModelWriter.Prepare(outputPath, Inputs(paths, [valSpec, .. parseResult.GetValue(test) ?? []]), ExternalDataMode.Auto, output.Name);
            }

            var valData = LoadData(valSpec, labelColumn);
            var testData = (parseResult.GetValue(test) ?? []).Select(t => LoadData(t, labelColumn)).ToList();
            bool greedy = parseResult.GetValue(mode)!.ToLowerInvariant() switch
            {
                "greedy" => true,
                "uniform" => false,
                var other => throw new RecyclingException($"--mode {MessageText.OneLine(other)}: use uniform or greedy"),
            };
            var greedyRule = parseResult.GetValue(rule)!.ToLowerInvariant() switch
            {
                "strict" or ">" => GreedyRule.Strict,
                "ties" or ">=" => GreedyRule.AllowTies,
                var other => throw new RecyclingException($"--rule {MessageText.OneLine(other)}: use strict or ties"),
            };
            bool asJson = parseResult.GetValue(json);
            using var set = new ModelSet(paths, output: parseResult.GetValue(outputName)!, scoring: Scoring(parseResult, device, batch));
            var all = Enumerable.Range(0, set.Count).ToList();
            var (soup, individual, results) = WithStatus(asJson, "soup", progress =>
            {
                var chosen = greedy ? set.GreedySoup(valData, greedyRule, progress: Synchronous<int>(n => progress.Report($"greedy soup: {n}/{set.Count} ingredients tried"))) : null;
                var accuracies = all.Select(i =>
                {
                    progress.Report($"scoring {set.Names[i]} ({i + 1}/{set.Count})");
                    return set.Evaluate(i, valData).Accuracy;
                }).ToList();
                var kept = chosen?.AcceptedIndices ?? all;
                var measured = new[] { valData }.Concat(testData).Select(d =>
                {
                    progress.Report($"evaluating the soup on {Path.GetFileName(d.Name)}");
                    var metrics = set.EvaluateUniform(kept, d);
                    return (data: d.Name, accuracy: metrics.Accuracy, loss: metrics.LogLoss);
                }).ToList();
                if (parseResult.GetValue(output) is { } outPath)
                {
                    progress.Report($"writing {Path.GetFileName(outPath)}");
                    ModelMerger.Merge(new MergeRequest
                    {
                        Inputs = [.. kept.Select(i => paths[i])],
                        Output = outPath,
                        Options = new MergeOptions { Method = MergeMethod.Average },
                    });
                }

                return (chosen, accuracies, measured);
            });
            var members = soup?.AcceptedIndices ?? all;
            var stdout = parseResult.InvocationConfiguration.Output;
            if (asJson)
            {
                WriteJson(parseResult, new
                {
                    mode = greedy ? "greedy" : "uniform",
                    rule = soup?.RuleSymbol,
                    order = soup?.Order,
                    steps = soup?.Steps,
                    accepted = members.Select(i => set.Names[i]),
                    individualVal = all.ToDictionary(i => set.Names[i], i => individual[i]),
                    results = results.Select(r => new { r.data, r.accuracy, logLoss = r.loss }),
                    output = parseResult.GetValue(output) is { } o ? Path.GetFullPath(o) : null,
                });
                return 0;
            }

            var console = Terminal(stdout);
            if (soup is not null)
            {
                var steps = new Table().Title($"greedy soup, rule {soup.RuleSymbol}, ingredients by val accuracy").AddColumns("step", "candidate", "its val", "soup val with it", "accepted");
                for (int i = 0; i < soup.Steps.Count; i++)
                {
                    var s = soup.Steps[i];
                    steps.AddRow((i + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), Cell(s.Candidate), Pct(soup.OrderValAccuracy[i]), Pct(s.ValAccuracy), s.Accepted ? "yes" : "no");
                }

                Tables.Write(console, steps);
            }

            console.WriteLine($"soup of {members.Count} of {set.Count}: {string.Join(", ", members.Select(i => set.Names[i]))}");
            foreach (var r in results)
            {
                console.WriteLine($"  {r.data}: accuracy {Pct(r.accuracy)}, log-loss {r.loss.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)}");
            }

            if (parseResult.GetValue(output) is { } written)
            {
                console.WriteLine($"written: {Path.GetFullPath(written)}");
            }

            return 0;
        });
        return command;
    }
}
