using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Recycling.Onnx;
using Recycling.Training.Recipes;

namespace Recycling.Cli.Commands;

/// <summary>
/// `recycle demo --recipes`: the zoo's demo recipe files run with fine-tuning in .NET into one folder (so that runs
/// two recipes share, such as fusing's base runs and lo-fi's runs, are run once), with one report.
/// </summary>
internal static class DemoRecipes
{
    /// <summary>The recipe files run, in order, from the zoo's recipes/ folder.</summary>
    internal static readonly string[] Files = ["fuse-cnn.yml", "lofi-cnn.yml", "ratatouille-cnn.yml"];

    internal static int Run(string zooPath, string folder, TextWriter output)
    {
        var directory = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(zooPath))!, "recipes");
        var recipes = Files.Select(f => RecipeFile.Load(Path.Combine(directory, f))).ToList();
        var clock = Stopwatch.StartNew();
        var reports = new List<RecipeReport>();
        foreach (var recipe in recipes)
        {
            output.WriteLine($"recipe {MessageText.Path(recipe.Path)}");
            // A recipe that writes its own report folder (ratatouille) runs in a subfolder, linked from the report.
            var name = Path.GetFileNameWithoutExtension(recipe.Path);
            var own = recipe.Kind is RecipeKind.Ratatouille or RecipeKind.ColdFusion;
            var (report, _) = RecipeCommand.Run(recipe, name, own ? Path.Combine(folder, name) : folder, parallel: null, output.WriteLine);
            reports.Add(own ? report with { Name = name, Notes = [.. report.Notes, $"Its full report: [{name}/README.md]({name}/README.md)."] } : report);
            output.WriteLine(report.Table());
        }

        var seconds = clock.Elapsed.TotalSeconds;
        var preamble = new List<string>
        {
            string.Create(CultureInfo.InvariantCulture, $"Recipe files: {string.Join(", ", recipes.Select(r => $"`{Path.GetFileName(r.Path)}`"))} from `{directory}`. Every target run was fine-tuned by Recycling (TorchSharp) from the zoo's exported models on the shipped `probe_train` split, and every model was scored by ONNX Runtime on `val` and `ood_test`; accuracies in %, mean ± sample standard deviation over the seeds. Runs are content-addressed under `runs/`: running the demo again reuses them. Total time {seconds:F1} s on {Environment.ProcessorCount} cores ({string.Join(", ", reports.Select(r => string.Create(CultureInfo.InvariantCulture, $"{r.Name} {r.Seconds:F1} s")))})."),
        };
        preamble.AddRange(Reference(zooPath));
        RecipeReport.WriteFolder(folder, "Recipes on the model zoo", preamble, reports);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"report: {Path.Combine(folder, "README.md")} ({seconds:F1} s)"));
        return 0;
    }

    /// <summary>The zoo's PyTorch reference for the CNN, where it has one, with why it is not the same protocol.</summary>
    private static List<string> Reference(string zooPath)
    {
        using var json = JsonDocument.Parse(File.ReadAllText(zooPath));
        if (!json.RootElement.TryGetProperty("reference", out var reference) || !reference.TryGetProperty("cnn", out var cnn))
        {
            return [];
        }

        var rows = new List<string>();
        void Add(string label, params string[] keys)
        {
            var node = cnn;
            foreach (var key in keys)
            {
                if (!node.TryGetProperty(key, out node))
                {
                    return;
                }
            }

            if (node.TryGetProperty("val", out var val) && node.TryGetProperty("ood_test", out var ood))
            {
                rows.Add(string.Create(CultureInfo.InvariantCulture, $"| {label} | {val.GetDouble():F2} | {ood.GetDouble():F2} |"));
            }
        }

        Add("base + linear probe", "base_lp");
        Add("fused auxiliaries + linear probe", "onnx", "fusing_lp");
        Add("DiWA targets, mean individual", "individual", "mean_diwa");
        Add("DiWA targets, uniform soup", "onnx", "uniform_soup_diwa");
        if (rows.Count == 0)
        {
            return [];
        }

        return
        [
            "The zoo's PyTorch reference for the CNN (`zoo.json` → `reference`), for orientation only: its probes do not fine-tune the body, and its targets were fine-tuned on 5,000 target images the zoo does not ship, for 10 epochs, where the runs here see the 2,000 `probe_train` images for a few epochs. Compare orderings (fused versus base, soups versus individual runs), not absolute values.",
            string.Join("\n", new[] { "| reference (PyTorch) | val | OOD |", "|---|---:|---:|" }.Concat(rows)),
        ];
    }
}
