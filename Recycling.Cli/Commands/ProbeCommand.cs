using System.CommandLine;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Probing;
using Recycling.Onnx;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle probe`: a linear probe (ML.NET) on a model's frozen features, trained on one data set, evaluated on others.</summary>
internal static class ProbeCommand
{
    internal static Command Create()
    {
        var models = new Argument<string[]>("models") { Description = "ONNX models whose features are probed (each gets its own probe).", Arity = ArgumentArity.OneOrMore };
        var train = DataOption("What the probe trains on.");
        var evaluate = TestOption("Data sets the probe is evaluated on.");
        var oldTrain = Legacy<string>("--train");
        var oldEvaluate = Legacy<string[]>("--eval");
        var features = new Option<string>("--features") { Description = "The graph output or internal value used as features (internal values are promoted to outputs).", DefaultValueFactory = _ => "features" };
        var trainer = new Option<string>("--trainer") { Description = "lbfgs (LbfgsMaximumEntropy) or sdca (SdcaMaximumEntropy).", DefaultValueFactory = _ => "lbfgs" };
        var l2 = new Option<double>("--l2") { Description = "L2 strength per sample (mean cross-entropy + l2/2·‖W‖²).", DefaultValueFactory = _ => 1e-3 };
        var dataOptions = new DataOptionSet(["mean-variance", "meanvariance", "min-max", "minmax", "shared-scale", "sharedscale", "none"], "Probe features: mean-variance (default), min-max, shared-scale (centred, one scale for all: the head probe of finetune) or none.");
        var device = DeviceOption();
        var batch = BatchOption();
        var json = JsonOption();
        var command = new Command("probe", "Train a linear probe on frozen features of ONNX models and report its accuracy.")
        {
            Arguments = { models },
            Options = { train, evaluate, features, trainer, l2, device, batch, json, oldTrain, oldEvaluate },
        };
        dataOptions.AddTo(command);
        command.SetAction(parseResult =>
        {
            var options = new ProbeOptions
            {
                Trainer = parseResult.GetValue(trainer)!.ToLowerInvariant() switch
                {
                    "lbfgs" => ProbeTrainer.Lbfgs,
                    "sdca" => ProbeTrainer.Sdca,
                    var other => throw new RecyclingException($"--trainer {MessageText.OneLine(other)}: use lbfgs or sdca"),
                },
                Normalization = (dataOptions.OtherNormalization(parseResult) ?? "mean-variance").ToLowerInvariant() switch
                {
                    "mean-variance" or "meanvariance" => ProbeNormalization.MeanVariance,
                    "min-max" or "minmax" => ProbeNormalization.MinMax,
                    "none" => ProbeNormalization.None,
                    "shared-scale" or "sharedscale" => ProbeNormalization.SharedScale,
                    var other => throw new RecyclingException($"--normalize {MessageText.OneLine(other)}: use mean-variance, min-max, shared-scale or none"),
                },
                L2 = parseResult.GetValue(l2),
            };
            var paths = Models(parseResult.GetValue(models)!);
            var read = dataOptions.Reader(parseResult, paths[0]);
            var trainData = read(Value(parseResult, train, oldTrain, required: true)!);
            var evalData = (Value(parseResult, evaluate, oldEvaluate) ?? []).Select(read).ToList();
            var scoring = Scoring(parseResult, device, batch);
            var featureName = parseResult.GetValue(features)!;
            bool asJson = parseResult.GetValue(json);
            var results = WithStatus(asJson, "probing", progress => paths.Select((model, i) =>
            {
                progress.Report($"probing {Path.GetFileName(model)} ({i + 1}/{paths.Length})");
                using var scorer = OnnxScorer.Open(model, scoring, [featureName]);
                return ProbeEvaluation.Run(model, d => scorer.Run(d, featureName), trainData, evalData, options);
            }).ToList());
            if (asJson)
            {
                WriteJson(parseResult, results.Select(r => new
                {
                    model = Path.GetFullPath(r.Model),
                    trainer = options.Trainer.ToString(),
                    normalization = options.Normalization.ToString(),
                    train = new { data = trainData.Name, accuracy = r.Train.Accuracy, logLoss = r.Train.LogLoss },
                    test = r.Evaluations.Select(e => new { data = e.Key, accuracy = e.Value.Accuracy, macroAccuracy = e.Value.MacroAccuracy, logLoss = e.Value.LogLoss, perDomain = e.Value.PerDomain, confusionMatrix = e.Value.ConfusionMatrix }),
                }).ToList());
                return 0;
            }

            var console = Terminal(parseResult.InvocationConfiguration.Output);
            var table = new Table().AddColumns(["model", "train accuracy", .. DataLabels([.. evalData.Select(d => d.Name)]).Select(Cell)]);
            foreach (var r in results)
            {
                table.AddRow([Cell(Path.GetFileName(r.Model)), Pct(r.Train.Accuracy), .. evalData.Select(d => Pct(r.Evaluations[d.Name].Accuracy))]);
            }

            Tables.Write(console, table);
            return 0;
        });
        return command;
    }
}
