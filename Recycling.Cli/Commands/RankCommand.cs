using System.CommandLine;
using Recycling.MLNet.Probing;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle rank`: rank candidate bases (and their fused body) by linear-probe accuracy on a target task.</summary>
internal static class RankCommand
{
    internal static Command Create()
    {
        var models = new Argument<string[]>("models") { Description = "Candidate bases: the base and fine-tunings of it (exports of one base for --fuse).", Arity = ArgumentArity.OneOrMore };
        var train = new Option<string>("--train") { Description = "Target training data for the probes. " + DataDescription, Required = true };
        var evaluate = new Option<string[]>("--eval") { Description = "Target evaluation data; candidates are ranked on the first.", AllowMultipleArgumentsPerToken = true, Required = true };
        var fuse = new Option<bool>("--fuse") { Description = "Also rank the fused model: the uniform average of the candidates' bodies (heads dropped)." };
        var features = new Option<string>("--features") { Description = "The output or internal value used as features.", DefaultValueFactory = _ => "features" };
        var label = LabelColumnOption();
        var device = DeviceOption();
        var batch = BatchOption();
        var json = JsonOption();
        var command = new Command("rank", "Rank candidate bases by the accuracy of a linear probe on their frozen features (model-recycling ranking).")
        {
            Arguments = { models },
            Options = { train, evaluate, fuse, features, label, device, batch, json },
        };
        command.SetAction(parseResult =>
        {
            var labelColumn = parseResult.GetValue(label);
            var trainData = LoadData(parseResult.GetValue(train)!, labelColumn);
            var evalData = parseResult.GetValue(evaluate)!.Select(e => LoadData(e, labelColumn)).ToList();
            bool asJson = parseResult.GetValue(json);
            var ranked = WithStatus(asJson, "ranking", progress => BaseRanking.Rank(parseResult.GetValue(models)!, parseResult.GetValue(fuse), parseResult.GetValue(features)!,
                trainData, evalData, scoring: Scoring(parseResult, device, batch), progress: progress));
            var stdout = parseResult.InvocationConfiguration.Output;
            if (asJson)
            {
                stdout.WriteLine(System.Text.Json.JsonSerializer.Serialize(ranked.Select((r, i) => new
                {
                    rank = i + 1,
                    model = r.Model,
                    trainAccuracy = r.Train.Accuracy,
                    accuracy = r.Evaluations.ToDictionary(e => e.Key, e => e.Value.Accuracy),
                }), Json));
                return 0;
            }

            var console = Terminal(stdout);
            var table = new Table().AddColumns(["rank", "model", "probe train", .. evalData.Select(d => Markup.Escape(d.Name))]);
            for (int i = 0; i < ranked.Count; i++)
            {
                var r = ranked[i];
                table.AddRow([(i + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), Markup.Escape(r.Model), Pct(r.Train.Accuracy), .. evalData.Select(d => Pct(r.Evaluations[d.Name].Accuracy))]);
            }

            console.Write(table);
            return 0;
        });
        return command;
    }
}
