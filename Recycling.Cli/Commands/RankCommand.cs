using System.CommandLine;
using Recycling.MLNet.Probing;
using Recycling.Onnx;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle rank`: rank candidate bases (and their fused body) by linear-probe accuracy on a target task.</summary>
internal static class RankCommand
{
    internal static Command Create()
    {
        var models = new Argument<string[]>("models") { Description = "Candidate bases: the base and fine-tunings of it (exports of one base for --fuse).", Arity = ArgumentArity.OneOrMore };
        var train = DataOption("Target training data for the probes.");
        var evaluate = TestOption("Target evaluation data (at least one); candidates are ranked on the first.");
        var oldTrain = Legacy<string>("--train");
        var oldEvaluate = Legacy<string[]>("--eval");
        var fuse = new Option<bool>("--fuse") { Description = "Also rank the fused model: the uniform average of the candidates' bodies (heads dropped)." };
        var features = new Option<string>("--features") { Description = "The output or internal value used as features.", DefaultValueFactory = _ => "features" };
        var dataOptions = new DataOptionSet();
        var device = DeviceOption();
        var batch = BatchOption();
        var json = JsonOption();
        var command = new Command("rank", "Rank candidate bases by the accuracy of a linear probe on their frozen features (model-recycling ranking).")
        {
            Arguments = { models },
            Options = { train, evaluate, fuse, features, device, batch, json, oldTrain, oldEvaluate },
        };
        dataOptions.AddTo(command);
        command.SetAction(parseResult =>
        {
            var paths = Models(parseResult.GetValue(models)!);
            var read = dataOptions.Reader(parseResult, paths[0]);
            var trainData = read(Value(parseResult, train, oldTrain, required: true)!);
            var evalSpecs = Value(parseResult, evaluate, oldEvaluate) is { Length: > 0 } given ? given : throw new RecyclingException("--test is required: the data the candidates are ranked on");
            var evalData = evalSpecs.Select(read).ToList();
            bool asJson = parseResult.GetValue(json);
            var ranked = WithStatus(asJson, "ranking", progress => BaseRanking.Rank(paths, parseResult.GetValue(fuse), parseResult.GetValue(features)!,
                trainData, evalData, scoring: Scoring(parseResult, device, batch), progress: progress));
            if (asJson)
            {
                WriteJson(parseResult, ranked.Select((r, i) => new
                {
                    rank = i + 1,
                    model = r.Model,
                    trainAccuracy = r.Train.Accuracy,
                    accuracy = r.Evaluations.ToDictionary(e => e.Key, e => e.Value.Accuracy),
                }).ToList());
                return 0;
            }

            var console = Terminal(parseResult.InvocationConfiguration.Output);
            var table = new Table().AddColumns(["rank", "model", "probe train", .. DataLabels([.. evalData.Select(d => d.Name)]).Select(Cell)]);
            for (int i = 0; i < ranked.Count; i++)
            {
                var r = ranked[i];
                table.AddRow([(i + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), Cell(r.Model), Pct(r.Train.Accuracy), .. evalData.Select(d => Pct(r.Evaluations[d.Name].Accuracy))]);
            }

            Tables.Write(console, table);
            return 0;
        });
        return command;
    }
}
