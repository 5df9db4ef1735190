using System.CommandLine;
using Recycling.Onnx.Alignment;

namespace Recycling.Cli.Commands;

/// <summary>`recycle align`: the alignment plan of fine-tuned exports, before any merge.</summary>
internal static class AlignCommand
{
    internal static Command Create()
    {
        var models = new Argument<string[]>("models") { Description = "Fine-tuned exports of one base (.onnx).", Arity = ArgumentArity.OneOrMore };
        var baseModel = MergeCommand.BaseOption();
        var heads = MergeCommand.HeadsOption();
        var json = CommandSupport.JsonOption();
        var command = new Command("align", "Show which tensors correspond across exports: matched, renamed, aliased, tied, transformed, head and constant tensors, with the reason for each.")
        {
            Arguments = { models },
            Options = { baseModel, heads, json },
        };
        command.SetAction(parseResult =>
        {
            var inputs = CommandSupport.Models(parseResult.GetValue(models)!);
            var basePath = parseResult.GetValue(baseModel) is { } b ? CommandSupport.Model(b) : null;
            using var aligned = AlignedModels.Open(inputs, basePath, MergeCommand.Heads(parseResult, heads), allowCuts: true);
            var plan = aligned.Plan;
            parseResult.InvocationConfiguration.Output.Write(parseResult.GetValue(json) ? plan.ToJson() + Environment.NewLine : plan.ToText());
            return 0;
        });
        return command;
    }
}
