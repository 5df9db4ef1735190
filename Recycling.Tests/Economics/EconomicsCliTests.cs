using System.Globalization;
using System.Text.Json;
using Recycling.Cli;
using Recycling.MLNet.Economics;

namespace Recycling.Tests.Economics;

[TestClass]
public sealed class EconomicsCliTests
{
    private static (int Exit, string Out, string Error) Run(params string[] args)
    {
        using var output = new StringWriter(CultureInfo.InvariantCulture);
        using var error = new StringWriter(CultureInfo.InvariantCulture);
        int exit = RecycleCli.Run(args, output, error);
        return (exit, output.ToString(), error.ToString());
    }

    private static string NewFolder()
    {
        string folder = Path.Combine(Path.GetTempPath(), "recycling-economics-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        return folder;
    }

    [TestMethod]
    public void TablePrintsTable1()
    {
        var (exit, output, error) = Run("economics", "table");

        Assert.AreEqual(0, exit, error);
        string[] lines = output.Split('\n');
        foreach (var (rate, advantage) in new[] { ("4.2x/yr", "1.3x"), ("1.3x/yr", "4.1x"), ("10.5x/yr", "1.1x"), ("3.3x/yr", "1.4x") })
        {
            string row = lines.Single(line => line.Contains($" {rate} ", StringComparison.Ordinal));
            var cells = row.Split('│', StringSplitOptions.TrimEntries);
            Assert.AreEqual(advantage, cells[3], row);
        }
    }

    [TestMethod]
    public void TableJsonHasTheNumbers()
    {
        var (exit, output, _) = Run("economics", "table", "--json", "--years", "10");

        Assert.AreEqual(0, exit);
        using var json = JsonDocument.Parse(output);
        var rows = json.RootElement.EnumerateArray().ToList();
        Assert.HasCount(4, rows);
        Assert.AreEqual(4.2, rows[0].GetProperty("growthRate").GetDouble());
        Assert.AreEqual(RecyclingEconomics.GrowthOnlyAdvantage(4.2), rows[0].GetProperty("advantage").GetDouble());
        Assert.AreEqual(4.2 / 3.2, rows[0].GetProperty("limit").GetDouble(), 1e-15);
    }

    [TestMethod]
    public void KickstartJsonIsTheLibrarySeries()
    {
        var (exit, output, error) = Run("economics", "kickstart", "--r", "2.3", "--progress", "2.5", "--alpha", "0.5", "1", "--years", "6", "--json");

        Assert.AreEqual(0, exit, error);
        using var json = JsonDocument.Parse(output);
        var series = json.RootElement.EnumerateArray().ToList();
        Assert.HasCount(2, series);
        for (int s = 0; s < 2; s++)
        {
            var expected = RecyclingEconomics.Kickstart(5.75, s == 0 ? 0.5 : 1, 6);
            Assert.AreEqual(5.75, series[s].GetProperty("growthRate").GetDouble(), 1e-15);
            Assert.AreEqual(expected.Limit, series[s].GetProperty("limit").GetDouble());
            var steps = series[s].GetProperty("steps").EnumerateArray().ToList();
            Assert.HasCount(6, steps);
            for (int n = 0; n < 6; n++)
            {
                Assert.AreEqual(expected.Steps[n].Benefit, steps[n].GetProperty("benefit").GetDouble());
                Assert.IsTrue(steps[n].GetProperty("benefit").GetDouble() < 1.5);
            }
        }
    }

    [TestMethod]
    public void KickstartDivergingLimitIsNullInJson()
    {
        var (exit, output, _) = Run("economics", "kickstart", "--r", "1", "--alpha", "1", "--years", "3", "--json");

        Assert.AreEqual(0, exit);
        using var json = JsonDocument.Parse(output);
        Assert.AreEqual(JsonValueKind.Null, json.RootElement[0].GetProperty("limit").ValueKind);
    }

    [TestMethod]
    public void KickstartTablePrintsTheSeriesAndLimit()
    {
        var (exit, output, _) = Run("economics", "kickstart", "--r", "4.2", "--alpha", "0.5", "--years", "5");

        Assert.AreEqual(0, exit);
        StringAssert.Contains(output, "limit r/(r−α) = 1.1351");
        StringAssert.Contains(output, "│ 5 │ 311.17 │ 353.211 │ 1.1351  │");
    }

    [TestMethod]
    public void KickstartWritesCsvAndPlot()
    {
        string folder = NewFolder();
        try
        {
            string csv = Path.Combine(folder, "kickstart.csv");
            string png = Path.Combine(folder, "kickstart.png");

            var (exit, _, error) = Run("economics", "kickstart", "--r", "1.3", "--alpha", "0.25", "0.75", "--years", "12",
                "--csv", csv, "--plot", png, "--width", "500", "--height", "400");

            Assert.AreEqual(0, exit, error);
            string[] lines = File.ReadAllLines(csv);
            Assert.AreEqual("r,alpha,iteration,compute,adjusted_compute,benefit,limit", lines[0]);
            Assert.HasCount(1 + 24, lines);
            string[] last = lines[^1].Split(',');
            Assert.AreEqual("0.75", last[1]);
            Assert.AreEqual("12", last[2]);
            Assert.AreEqual(RecyclingEconomics.Kickstart(1.3, 0.75, 12).Steps[^1].Benefit, double.Parse(last[5], CultureInfo.InvariantCulture));
            Assert.AreEqual((500, 400), PngFile.ReadSize(png));
            Assert.HasCount(2, Directory.GetFiles(folder));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void AugmentRunsEveryBetaAndG()
    {
        string folder = NewFolder();
        try
        {
            string csv = Path.Combine(folder, "augment.csv");
            string png = Path.Combine(folder, "augment.png");

            var (exit, output, error) = Run("economics", "augment", "--r", "4.2", "--g", "1.5", "2.5", "--beta", "0.9", "0.95",
                "--years", "4", "--csv", csv, "--plot", png, "--json");

            Assert.AreEqual(0, exit, error);
            using var json = JsonDocument.Parse(output);
            var series = json.RootElement.EnumerateArray().ToList();
            Assert.HasCount(4, series);
            Assert.AreEqual(2.5, series[3].GetProperty("progressGrowth").GetDouble());
            Assert.AreEqual(0.95, series[3].GetProperty("beta").GetDouble());
            Assert.AreEqual(0.9947413886189397, series[2].GetProperty("steps")[3].GetProperty("benefit").GetDouble(), 1e-15);
            Assert.HasCount(1 + 16, File.ReadAllLines(csv));
            Assert.AreEqual((EconomicsPlots.DefaultWidth, EconomicsPlots.DefaultHeight), PngFile.ReadSize(png));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void HeatmapWritesTheGrid()
    {
        string folder = NewFolder();
        try
        {
            string png = Path.Combine(folder, "heatmap.png");

            var (exit, output, error) = Run("economics", "heatmap", "--r-min", "1.3", "--r-max", "10.5", "--r-count", "5",
                "--alpha-count", "3", "--years", "500", "--plot", png, "--width", "300", "--height", "200", "--json");

            Assert.AreEqual(0, exit, error);
            using var json = JsonDocument.Parse(output);
            var rows = json.RootElement.GetProperty("benefit").EnumerateArray().ToList();
            Assert.HasCount(5, rows);
            Assert.AreEqual(3, rows[0].GetArrayLength());
            Assert.AreEqual(1.3 / 0.3, rows[0][2].GetDouble(), 1e-12); // r = 1.3, α = 1: the limit
            Assert.AreEqual(1.0, rows[4][0].GetDouble());
            Assert.AreEqual((300, 200), PngFile.ReadSize(png));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void BreakEvenCommands()
    {
        var kickstart = Run("economics", "breakeven", "kickstart", "--r", "4.2", "--benefit", "1.2");
        var unreachable = Run("economics", "breakeven", "kickstart", "--r", "2.3", "--progress", "2.5", "--benefit", "1.5");
        var augment = Run("economics", "breakeven", "augment", "--r", "4.2", "--g", "2.5", "--beta", "0.95", "--json");

        Assert.AreEqual(0, kickstart.Exit);
        StringAssert.Contains(kickstart.Out, "α ≥ 0.700000");
        Assert.AreEqual(0, unreachable.Exit);
        StringAssert.Contains(unreachable.Out, "cannot reach A/C = 1.5 in the limit, even with α = 1 (at most 1.2105)");
        Assert.AreEqual(0, augment.Exit);
        using var json = JsonDocument.Parse(augment.Out);
        Assert.AreEqual(10, json.RootElement.GetProperty("lastBeneficialIteration").GetInt32());
        Assert.AreEqual(1 - (1 / 10.5), json.RootElement.GetProperty("minimumBeta").GetDouble(), 1e-15);
    }

    [TestMethod]
    [DataRow("alpha = 1.5: a reuse efficiency must lie in [0, 1]", "economics", "kickstart", "--r", "4.2", "--alpha", "1.5")]
    [DataRow("r = 0: a yearly growth factor must be greater than 0", "economics", "kickstart", "--r", "0", "--alpha", "0.5")]
    [DataRow("years = -1: the number of years must lie in", "economics", "table", "--years", "-1")]
    [DataRow("years = 0: the number of yearly iterations must lie in", "economics", "augment", "--r", "4.2", "--g", "2.5", "--beta", "0.9", "--years", "0")]
    [DataRow("beta = 2: a reuse efficiency must lie in [0, 1]", "economics", "breakeven", "augment", "--r", "4.2", "--g", "2.5", "--beta", "2")]
    [DataRow("benefit = 0.5:", "economics", "breakeven", "kickstart", "--r", "4.2", "--benefit", "0.5")]
    [DataRow("r max = 1: must be at least the minimum 2", "economics", "heatmap", "--r-min", "2", "--r-max", "1")]
    public void InvalidParametersExitNonZeroWithOneLine(string message, params string[] args)
    {
        var (exit, output, error) = Run(args);

        Assert.AreEqual(RecycleCli.ErrorExitCode, exit);
        StringAssert.StartsWith(error, "error: " + message);
        Assert.AreEqual(1, error.TrimEnd().Split('\n').Length, error);
        Assert.AreEqual("", output);
    }

    [TestMethod]
    public void MissingRequiredOptionIsAParseError()
    {
        var (exit, _, error) = Run("economics", "kickstart", "--alpha", "0.5");

        Assert.AreNotEqual(0, exit);
        StringAssert.Contains(error, "--r");
    }

    [TestMethod]
    public void CsvIntoAMissingFolderFailsCleanly()
    {
        string csv = Path.Combine(Path.GetTempPath(), "no-such-folder-" + Guid.NewGuid().ToString("N"), "out.csv");

        var (exit, _, error) = Run("economics", "table", "--csv", csv);

        Assert.AreEqual(RecycleCli.ErrorExitCode, exit);
        StringAssert.StartsWith(error, "error: ");
    }
}
