using System.CommandLine;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Training;
using Recycling.Training.Recipes;
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
        var dataOptions = new DataOptionSet();
        var device = DeviceOption();
        device.Description += " With --learned, LibTorch also trains the mixing weights there.";
        var batch = BatchOption();
        var json = JsonOption();
        var learned = new Option<bool>("--learned") { Description = "Learned soup: mixing weights softmax(α) trained by gradient on the --data set (TorchSharp), compared with the uniform and greedy soups." };
        var byLayer = new Option<bool>("--by-layer") { Description = "Learned soup: one weight per ingredient and layer (the initializers one node reads)." };
        var epochs = new Option<int>("--epochs") { Description = "Learned soup: passes over the --data set.", DefaultValueFactory = _ => LearnedSoupOptions.DefaultEpochs };
        var lr = new Option<double>("--lr") { Description = "Learned soup: Adam's learning rate on α.", DefaultValueFactory = _ => LearnedSoupOptions.DefaultLearningRate };
        var seed = new Option<int>("--seed") { Description = "Learned soup: seed of the batch order.", DefaultValueFactory = _ => 0 };
        var command = new Command("soup", "Cook a uniform, greedy or learned model soup: candidates are averaged in memory and scored with ONNX Runtime on val.")
        {
            Arguments = { models },
            Options = { val, test, mode, rule, output, outputName, device, batch, json, learned, byLayer, epochs, lr, seed, oldVal },
        };
        dataOptions.AddTo(command);
        command.SetAction(parseResult =>
        {
            var isLearned = parseResult.GetValue(learned) || parseResult.GetValue(mode)!.Equals("learned", StringComparison.OrdinalIgnoreCase);

            // Where α trains, checked before any work (cuda without CUDA is one line, auto without it a notice).
            var trainingDevice = isLearned ? ChosenTrainingDevice(parseResult, device) : TrainingDevice.Cpu;
            var paths = Models(parseResult.GetValue(models)!);
            var valSpec = Value(parseResult, val, oldVal, required: true)!;
            if (parseResult.GetValue(output) is { } outputPath)
            {
                ModelWriter.Prepare(outputPath, Inputs(paths, [valSpec, .. parseResult.GetValue(test) ?? []]), ExternalDataMode.Auto, output.Name);
            }

            var read = dataOptions.Reader(parseResult, paths[0]);
            var valData = read(valSpec);
            var testData = (parseResult.GetValue(test) ?? []).Select(read).ToList();
            bool greedy = isLearned || parseResult.GetValue(mode)!.ToLowerInvariant() switch
            {
                "greedy" => true,
                "uniform" => false,
                var other => throw new RecyclingException($"--mode {MessageText.OneLine(other)}: use uniform, greedy or learned"),
            };
            if (!isLearned && new Option[] { byLayer, epochs, lr, seed }.Any(o => parseResult.GetResult(o) is { Implicit: false }))
            {
                throw new RecyclingException("--by-layer, --epochs, --lr and --seed apply to learned soups: add --learned");
            }

            var greedyRule = parseResult.GetValue(rule)!.ToLowerInvariant() switch
            {
                "strict" or ">" => GreedyRule.Strict,
                "ties" or ">=" => GreedyRule.AllowTies,
                var other => throw new RecyclingException($"--rule {MessageText.OneLine(other)}: use strict or ties"),
            };
            bool asJson = parseResult.GetValue(json);
            var scoring = Scoring(parseResult, device, batch);
            using var set = new ModelSet(paths, output: parseResult.GetValue(outputName)!, scoring: scoring);
            var all = Enumerable.Range(0, set.Count).ToList();
            if (isLearned)
            {
                var options = new LearnedSoupOptions
                {
                    Models = paths,
                    Validation = valData,
                    Output = parseResult.GetValue(output),
                    OutputName = parseResult.GetValue(outputName),
                    ByLayer = parseResult.GetValue(byLayer),
                    Epochs = parseResult.GetValue(epochs),
                    LearningRate = parseResult.GetValue(lr),
                    Seed = parseResult.GetValue(seed),
                    Device = trainingDevice,
                };
                return Learned(parseResult, set, options, greedyRule, valData, testData, scoring, asJson);
            }

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
                    learned = (object?)null,
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

    private static int Learned(ParseResult parseResult, ModelSet set, LearnedSoupOptions options, GreedyRule rule, Dataset valData, List<Dataset> testData, ScoringOptions scoring, bool asJson)
    {
        var stdout = parseResult.InvocationConfiguration.Output;
        var outcome = LearnedSoupMode.Run(set, options, rule, valData, testData, scoring, asJson ? null : stdout.WriteLine);
        var all = Enumerable.Range(0, set.Count).ToList();
        var learned = outcome.Scores.Where(s => s.Soup.StartsWith("learned", StringComparison.Ordinal)).ToList();
        if (asJson)
        {
            WriteJson(parseResult, new
            {
                mode = "learned",
                rule = outcome.Greedy.RuleSymbol,
                order = outcome.Greedy.Order,
                steps = outcome.Greedy.Steps,
                accepted = all.Select(i => set.Names[i]),
                individualVal = all.ToDictionary(i => set.Names[i], i => set.Evaluate(i, valData).Accuracy),
                results = learned.Select(r => new { r.Data, r.Accuracy, r.LogLoss }),
                output = outcome.Result.Output,
                learned = LearnedSoupMode.Json(outcome, set.Names),
            });
            return 0;
        }

        var console = Terminal(stdout);
        var weights = new Table().Title("learned mixing weights softmax(α)" + (outcome.Result.Layers.Count > 1 ? " by layer" : "")).AddColumn("layer");
        foreach (var name in set.Names)
        {
            weights.AddColumn(Cell(name));
        }

        foreach (var layer in outcome.Result.Layers)
        {
            weights.AddRow([Cell(layer.Layer), .. layer.Weights.Select(LearnedSoupMode.Describe)]);
        }

        console.Write(weights);
        var table = new Table().Title("soups of the same ingredients").AddColumn("soup");
        var dataNames = outcome.Scores.Select(s => s.Data).Distinct().ToList();
        foreach (var data in dataNames)
        {
            table.AddColumn(Cell(data) + " accuracy");
        }

        foreach (var soup in outcome.Scores.Select(s => s.Soup).Distinct())
        {
            table.AddRow([Cell(soup), .. dataNames.Select(d => Pct(outcome.Scores.First(s => s.Soup == soup && s.Data == d).Accuracy))]);
        }

        console.Write(table);
        console.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"learned soup: {outcome.Result.MixedTensors} tensors mixed, {outcome.Result.Seconds:F1} s, peak working set {outcome.Result.PeakWorkingSetBytes / (1 << 20)} MiB; α trained on {valData.Name} (its accuracy there is in-sample)"));
        if (outcome.Result.Output is { } written)
        {
            console.WriteLine($"written: {written}");
        }

        return 0;
    }
}
