using System.Globalization;
using Recycling.Tests.Cli;
using Recycling.Training.Recipes;

namespace Recycling.Tests.Training;

/// <summary>
/// The one recipe report writer on hand-made results (no training): two recipes in one folder as the demo writes
/// them, the summary against a mean and sample sd computed here, hostile method names quoted in CSV and escaped in
/// Markdown, every JSON fitting the recipe schema, and a recipe's own tables and plots in place of the default.
/// </summary>
[TestClass]
public sealed class RecipeReportTests
{
    private static RecipeReport Seeded(string name) => new()
    {
        Recipe = "fuse",
        Name = name,
        Title = "Hand-made",
        Splits = ["val", "ood_test"],
        Scores =
        [
            new("a, \"quoted\" | piped", 0, new Dictionary<string, double> { ["val"] = 70, ["ood_test"] = 40 }) { Detail = "x" },
            new("a, \"quoted\" | piped", 1, new Dictionary<string, double> { ["val"] = 72, ["ood_test"] = 43 }) { Detail = "y" },
            new("a, \"quoted\" | piped", 2, new Dictionary<string, double> { ["val"] = 77, ["ood_test"] = 41 }) { Detail = "z" },
            new("soup", null, new Dictionary<string, double> { ["val"] = 80 }) { Detail = "of every seed", Model = "soup.onnx" },
        ],
        Settings = new Dictionary<string, string> { ["budget"] = "tiny" },
        Notes = ["a note"],
        Seconds = 1.5,
    };

    [TestMethod]
    public void WritesSeveralRecipesIntoOneFolder()
    {
        using var scratch = new Scratch();
        var own = new RecipeReport
        {
            Recipe = "cold_fusion",
            Name = "second",
            Title = "Own table and plot",
            Splits = ["val"],
            Scores = [new("round 0: probe", 0, new Dictionary<string, double> { ["val"] = 50 })],
            Tables = ["### Own table\n\n| x |\n|---|\n| 1 |\n"],
            Plots = [new("own.png", "own plot", path => File.WriteAllBytes(path, [1, 2, 3]))],
        };
        RecipeReport.WriteFolder(scratch.Path, "Both", ["A preamble."], [Seeded("first"), own]);

        // mean and sample sd of 70, 72, 77 and of 40, 43, 41, computed independently
        var val = new[] { 70.0, 72, 77 };
        var ood = new[] { 40.0, 43, 41 };
        static double Sd(double[] v) => Math.Sqrt(v.Sum(x => (x - v.Average()) * (x - v.Average())) / (v.Length - 1));
        var summary = File.ReadAllLines(Path.Combine(scratch.Path, "summary.csv"));
        Assert.AreEqual("recipe,method,split,results,mean,sd,min,max", summary[0]);
        var row = summary.Single(l => l.StartsWith("first,\"a, \"\"quoted\"\" | piped\",val,", StringComparison.Ordinal)).Split(',');
        Assert.AreEqual(val.Average(), double.Parse(row[^4], CultureInfo.InvariantCulture), 1e-12);
        Assert.AreEqual(Sd(val), double.Parse(row[^3], CultureInfo.InvariantCulture), 1e-12);
        Assert.AreEqual("70", row[^2]);
        Assert.AreEqual("77", row[^1]);
        Assert.HasCount(1 + (2 * 2) + 1, summary, "per recipe, method and data set");

        var readme = File.ReadAllText(Path.Combine(scratch.Path, "README.md"));
        StringAssert.StartsWith(readme, "# Both\n\nA preamble.\n");
        StringAssert.Contains(readme, "## first (fuse, 1.5 s)");
        StringAssert.Contains(readme, "## second (cold_fusion, 0.0 s)");
        StringAssert.Contains(readme, string.Create(CultureInfo.InvariantCulture, $"| a, \"quoted\" \\| piped | 3 | {val.Average():F2} ± {Sd(val):F2} | 70.00–77.00 | {ood.Average():F2} ± {Sd(ood):F2} | 40.00–43.00 |"));
        StringAssert.Contains(readme, "| soup | 1 | 80.00 ± 0.00 | 80.00–80.00 |  |  |", "a result without a data set leaves its cells empty");
        StringAssert.Contains(readme, "### Own table");
        StringAssert.Contains(readme, "![own plot](own.png)");
        Assert.DoesNotContain("second.png", readme, "a recipe's own plots replace the default");

        var results = File.ReadAllLines(Path.Combine(scratch.Path, "results.csv"));
        Assert.AreEqual("recipe,method,seed,detail,val,ood_test,model", results[0]);
        Assert.AreEqual("first,soup,,of every seed,80,,soup.onnx", results[4]);
        Assert.AreEqual("second,round 0: probe,0,,50,,", results[5]);
        Assert.HasCount(1, File.ReadAllLines(Path.Combine(scratch.Path, "runs.csv")), "no fine-tunings: the header only");
        foreach (var file in new[] { "first.png", "own.png" })
        {
            Assert.IsTrue(File.Exists(Path.Combine(scratch.Path, file)), file);
        }

        Assert.IsFalse(File.Exists(Path.Combine(scratch.Path, "second.png")));
        foreach (var name in new[] { "first", "second" })
        {
            JsonSchemaCheck.Validate("recipe", File.ReadAllText(Path.Combine(scratch.Path, name + ".json"))).Dispose();
        }

        Assert.ThrowsExactly<ArgumentException>(() => RecipeReport.WriteFolder(scratch.Path, "Twice", [], [Seeded("same"), Seeded("same")]));
    }
}
