using System.CommandLine;
using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Cli.Commands;

/// <summary>`recycle merge --config FILE.yml`: a mergekit merge config in place of the models and the method flags.</summary>
internal static class MergeConfigOption
{
    public static Option<string?> Create() => new("--config")
    {
        Description = "A mergekit merge config (YAML: merge_method, base_model, models with parameters, parameters, dtype); it replaces the models, --method, --base and the parameter flags. Model paths are .onnx files relative to it.",
        HelpName = "FILE.yml",
    };

    /// <summary>
    /// The config named by <paramref name="config"/>, or null without one (then models must be given); refuses the
    /// model arguments and the flags the config replaces, and prints its notes.
    /// </summary>
    public static MergeConfig? Load(ParseResult parseResult, Option<string?> config, Argument<string[]> models, params Option[] replaced)
    {
        var path = parseResult.GetValue(config);
        bool hasModels = parseResult.GetValue(models) is { Length: > 0 };
        if (path is null)
        {
            return hasModels ? null : throw new RecyclingException("give the models to merge, or --config FILE.yml (a mergekit merge config)");
        }

        if (hasModels)
        {
            throw new RecyclingException($"--config {MessageText.Path(path)} names the models to merge: drop the model arguments");
        }

        foreach (var option in replaced.Where(o => parseResult.GetResult(o) is { Implicit: false }))
        {
            throw new RecyclingException($"--config {MessageText.Path(path)} sets the method, base and parameters: drop {option.Name} (set it in the config)");
        }

        var loaded = MergeConfig.Load(path);
        foreach (var note in loaded.Notes)
        {
            parseResult.InvocationConfiguration.Error.WriteLine($"note: {note}");
        }

        return loaded;
    }
}
