using System.CommandLine;
using System.Diagnostics;
using Recycling.MLNet.Data;
using Recycling.MLNet.Study;
using Recycling.Onnx;
using Recycling.Training.Foundation;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle demo`: the recycling study on the bundled model zoo, one table per architecture, and a report folder.</summary>
internal static class DemoCommand
{
    internal static Command Create()
    {
        var zoo = new Option<string?>("--zoo") { Description = "The zoo description (default: models/zoo.json found from the current directory or the tool's folder upwards)." };
        var output = new Option<string>("--output", "-o") { Description = "Report folder (Markdown, JSON, CSV, PNG).", DefaultValueFactory = _ => "recycle-report" };
        var arch = new Option<string[]>("--arch") { Description = "Architectures to study (default: all in the zoo).", AllowMultipleArgumentsPerToken = true };
        var device = DeviceOption();
        var batch = BatchOption();
        var json = JsonOption();
        var foundation = new Option<string?>("--foundation") { Description = $"Study a foundation zoo instead ({string.Join(", ", FoundationZoos.Names)}): built by fine-tuning the first time (see recycle zoo build), reused after." };
        var scale = ZooCommand.ScaleOption();
        var seeds = ZooCommand.SeedsOption();
        var cache = new Option<string?>("--cache") { Description = "With --foundation: the cache folder holding the foundation model and the zoo's runs." };
        var recipes = new Option<bool>("--recipes") { Description = "Instead of the study: run the zoo's demo recipe files (models/recipes: fusing, lo-fi, ratatouille) with fine-tuning in .NET, 3 seeds each, into the report folder (minutes; finished runs are reused when run again)." };
        var command = new Command("demo", "Run the recycling study on the bundled model zoo (or a foundation zoo): individual models, ensembles, soups, ratatouille, fusing, task arithmetic / TIES / DARE / Fisher.")
        {
            Options = { zoo, output, arch, device, batch, json, foundation, scale, seeds, cache, recipes },
        };
        command.SetAction(parseResult =>
        {
            var folder = OutputFolder(parseResult.GetValue(output)!, output.Name);
            if (parseResult.GetValue(recipes))
            {
                foreach (var option in new Option[] { arch, json, foundation, scale, seeds, cache }.Where(o => parseResult.GetResult(o) is { Implicit: false }))
                {
                    throw new RecyclingException($"{option.Name} does not apply to demo --recipes (the recipe files name their models and write each report's JSON)");
                }

                var recipeZoo = parseResult.GetValue(zoo) ?? ModelZoo.FindDefault() ?? ModelZoo.FindDefault(AppContext.BaseDirectory)
                    ?? throw new RecyclingException("no models/zoo.json found from the current directory upwards; give --zoo PATH");
                return DemoRecipes.Run(recipeZoo, folder, parseResult.InvocationConfiguration.Output);
            }

            var options = new StudyOptions { Scoring = Scoring(parseResult, device, batch) };
            string path;
            IReadOnlyList<string> seedZoos = [];
            bool asJson = parseResult.GetValue(json);
            if (parseResult.GetValue(foundation) is { } name)
            {
                if (parseResult.GetValue(zoo) is not null)
                {
                    throw new RecyclingException("--zoo and --foundation exclude each other: --foundation builds and studies its own zoo");
                }

                var spec = FoundationZoos.Find(name);
                var chosenScale = ZooCommand.Scale(spec, parseResult.GetValue(scale)!, parseResult.GetValue(seeds));
                var built = WithStatus(asJson, $"building the {spec.Name} zoo", progress =>
                    FoundationZooBuilder.Build(spec, chosenScale, parseResult.GetValue(cache), progress: progress.Report));
                path = built.ZooJson;
                seedZoos = built.SeedZooJsons;
                options = options with { InterpolationPoints = 6 };
            }
            else
            {
                if (parseResult.GetResult(seeds) is { Implicit: false })
                {
                    throw new RecyclingException("--seeds applies to --foundation zoos only (the bundled zoo's models are trained once)");
                }

                path = parseResult.GetValue(zoo) ?? ModelZoo.FindDefault() ?? ModelZoo.FindDefault(AppContext.BaseDirectory)
                    ?? throw new RecyclingException("no models/zoo.json found from the current directory upwards; give --zoo PATH");
            }

            var model = ModelZoo.Open(path);
            var architectures = parseResult.GetValue(arch) is { Length: > 0 } chosen ? chosen : model.Architectures;
            var unknown = architectures.Except(model.Architectures).ToList();
            if (unknown.Count > 0)
            {
                throw new RecyclingException($"--arch {MessageText.OneLine(string.Join(", ", unknown))}: not in {MessageText.Path(model.FilePath)} (it has {string.Join(", ", model.Architectures)})");
            }

            var stdout = parseResult.InvocationConfiguration.Output;
            var clock = Stopwatch.StartNew();
            var studies = WithStatus(asJson, "recycling study", progress =>
                architectures.Select(a => RecyclingStudy.Run(model, a, options, progress)).ToList());
            StudyReport.Write(folder, studies, model, clock.Elapsed.TotalSeconds);
            var replicas = SeedReplicas(seedZoos, architectures, options, folder, studies, asJson);
            if (asJson)
            {
                var document = replicas.Count > 1 ? StudySpread.ToJson(replicas, seedZoos) : StudyReport.ToJson(studies);
                stdout.WriteLine(JsonStyle.Restyle(document, parseResult.InvocationConfiguration.Error.WriteLine));
                return 0;
            }

            var console = Terminal(stdout);
            foreach (var s in studies)
            {
                // Foundation zoos have no PyTorch reference study: their table has no reference columns.
                var referenced = s.Rows.Any(r => r.ReferenceGap is not null);
                var table = referenced
                    ? new Table().Title($"{s.Architecture}: accuracy (%) through ONNX Runtime, PyTorch reference beside it")
                        .AddColumns("method", "detail", "val", "OOD", "torch val", "torch OOD", "gap")
                    : new Table().Title($"{s.Architecture}: accuracy (%) through ONNX Runtime").AddColumns("method", "detail", "val", "OOD");
                foreach (var r in s.Rows)
                {
                    string[] cells = [Cell(r.Method), Cell(r.Detail), Pct(r.Val), Pct(r.Ood)];
                    table.AddRow(referenced
                        ? [.. cells, r.ReferenceVal is { } v ? Pct(v) : "", r.ReferenceOod is { } o ? Pct(o) : "", r.ReferenceGap is { } g ? Pct(g) : ""]
                        : cells);
                }

                Tables.Write(console, table);
                foreach (var note in s.Notes)
                {
                    console.WriteLine($"note: {note}");
                }

                console.WriteLine();
            }

            IEnumerable<(string Architecture, IReadOnlyList<SpreadRow> Rows)> spreads = replicas.Count > 1 ? architectures.Select((a, i) => (a, StudySpread.Over([.. replicas.Select(r => r[i])]))) : [];
            foreach (var (architecture, rows) in spreads)
            {
                var table = new Table().Title($"{architecture}: accuracy (%) over {seedZoos.Count} seeds of the target runs, mean ± standard deviation")
                    .AddColumns("method", "seeds", "val", "OOD");
                foreach (var r in rows)
                {
                    table.AddRow(Cell(r.Method), r.Seeds.ToString(System.Globalization.CultureInfo.InvariantCulture), $"{Pct(r.ValMean)} ± {Pct(r.ValSd)}", $"{Pct(r.OodMean)} ± {Pct(r.OodSd)}");
                }

                Tables.Write(console, table);
                console.WriteLine();
            }

            console.WriteLine($"report: {Path.Combine(folder, "README.md")} ({clock.Elapsed.TotalSeconds:F1} s)");
            return 0;
        });
        return command;
    }

    /// <summary>
    /// The study on every seed replica of a foundation zoo, the first (<paramref name="first"/>) already run: each
    /// further one's report in FOLDER/seedR/, and per architecture the rows' spread over all of them
    /// (FOLDER/ARCH_seeds.md). One replica: only the first.
    /// </summary>
    private static List<IReadOnlyList<ArchitectureStudy>> SeedReplicas(IReadOnlyList<string> seedZoos, IReadOnlyList<string> architectures,
        StudyOptions options, string folder, List<ArchitectureStudy> first, bool asJson)
    {
        var replicas = new List<IReadOnlyList<ArchitectureStudy>> { first };
        for (var r = 1; r < seedZoos.Count; r++)
        {
            var zoo = ModelZoo.Open(seedZoos[r]);
            var clock = Stopwatch.StartNew();
            var studies = WithStatus(asJson, $"recycling study, seed {r}", progress => architectures.Select(a => RecyclingStudy.Run(zoo, a, options, progress)).ToList());
            StudyReport.Write(Path.Combine(folder, $"seed{r}"), studies, zoo, clock.Elapsed.TotalSeconds);
            replicas.Add(studies);
        }

        if (replicas.Count > 1)
        {
            for (var i = 0; i < architectures.Count; i++)
            {
                StudySpread.Write(Path.Combine(folder, $"{architectures[i]}_seeds.md"), [.. replicas.Select(x => x[i])], seedZoos);
            }
        }

        return replicas;
    }
}
