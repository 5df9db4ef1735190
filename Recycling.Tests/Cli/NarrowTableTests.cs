using Recycling.Cli;
using static Recycling.Tests.Cli.ZooSplit;

namespace Recycling.Tests.Cli;

/// <summary>
/// Tables at a narrow terminal: a table wider than the terminal becomes one block per row ("header: value" lines), so
/// no line is longer than the terminal, no header or name is cut ("…"), and every value is still there; a table that
/// fits stays a grid; piped output is never wrapped.
/// </summary>
[TestClass]
public sealed class NarrowTableTests
{
    private static string _folder = "";

    private static string Small => Path.Combine(_folder, "small");

    [ClassInitialize]
    public static void WriteSplit(TestContext context)
    {
        _ = context;
        RequireZoo();
        _folder = Directory.CreateTempSubdirectory("recycle-narrow-").FullName;
        Write(Small, 40);
    }

    [ClassCleanup]
    public static void DeleteFolder()
    {
        if (Directory.Exists(_folder))
        {
            Directory.Delete(_folder, recursive: true);
        }
    }

    /// <summary>eval's six columns (per-domain accuracy the widest) at 40 columns: blocks, each value on its labelled line.</summary>
    [TestMethod]
    public void EvalBecomesBlocksAtFortyColumns()
    {
        var text = Run(40, "eval", Model("cnn_target_diwa00"), Model("cnn_base"), "-d", Small);
        AssertFits(text, 40);
        StringAssert.Contains(text, "model: cnn_target_diwa00.onnx");
        StringAssert.Contains(text, "model: cnn_base.onnx");
        StringAssert.Contains(text, "  macro accuracy");
        Assert.DoesNotContain("│", text);

        // The same numbers as the grid printed unwrapped (piped).
        var piped = Run(null, "eval", Model("cnn_target_diwa00"), Model("cnn_base"), "-d", Small);
        StringAssert.Contains(piped, "│");
        var accuracy = piped.Split('\n')[3].Split('│', StringSplitOptions.TrimEntries)[3];
        Assert.IsTrue(text.Split('\n').Any(l => l.StartsWith("  accuracy ", StringComparison.Ordinal) && l.TrimEnd().EndsWith(" " + accuracy, StringComparison.Ordinal)), text);
    }

    /// <summary>The diversity matrix at 40 columns: every pair is named by both models in full; at 60 it fits as a numbered grid.</summary>
    [TestMethod]
    public void DiversityNamesEveryPairInFull()
    {
        string[] names = ["cnn_target_diwa00", "cnn_target_rat08", "cnn_target_diwa07", "cnn_target_rat15"];
        var text = Run(40, ["diversity", .. names.Select(Model), "-d", Small]);
        AssertFits(text, 40);
        for (int i = 0; i < names.Length; i++)
        {
            // In both matrices: once as a block's heading and once in every block (as the column it names).
            Assert.AreEqual(2 * (1 + names.Length), text.Split($"{i + 1} {names[i]}").Length - 1, $"{names[i]}:\n{text}");
        }

        var grid = Run(60, ["diversity", .. names.Select(Model), "-d", Small]);
        AssertFits(grid, 60);
        foreach (var name in names)
        {
            Assert.AreEqual(2, grid.Split(name).Length - 1, grid);
        }
    }

    /// <summary>A table that fits stays a grid (interpolate's four short columns at 40); probe's data sets are headed by file name.</summary>
    [TestMethod]
    public void TablesThatFitStayGrids()
    {
        var text = Run(40, "interpolate", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "-d", Small, "--points", "2");
        AssertFits(text, 40);
        StringAssert.Contains(text, "│ λ    │ accuracy │");
        var probe = Run(80, "probe", Model("cnn_base"), "-d", Small, "--test", Small);
        AssertFits(probe, 80);
        StringAssert.Contains(probe, "│ small ");
    }

    /// <summary>economics' growth table, whose first column holds long scenario names, at 40 columns.</summary>
    [TestMethod]
    public void EconomicsFitsFortyColumns()
    {
        var table = Run(40, "economics", "table");
        AssertFits(table, 40);
        StringAssert.Contains(table, "Considered growth rate: Hardware");
        StringAssert.Contains(table, "  Limit r/(r−1)       4.3333");
    }

    private static void AssertFits(string text, int width)
    {
        Assert.DoesNotContain("…", text);
        foreach (var line in text.Split('\n'))
        {
            Assert.IsLessThanOrEqualTo(width, line.TrimEnd('\r').Length, $"line longer than {width}: '{line}'\n{text}");
        }
    }

    private static string Run(int? width, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.AreEqual(0, RecycleCli.Run(args, stdout, stderr, width), $"recycle {string.Join(' ', args)}: {stderr}");
        return stdout.ToString();
    }
}
