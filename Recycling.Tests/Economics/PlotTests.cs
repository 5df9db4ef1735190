using Recycling.MLNet.Economics;
using SkiaSharp;

namespace Recycling.Tests.Economics;

[TestClass]
public sealed class PlotTests
{
    public TestContext TestContext { get; set; } = null!;

    private string NewFolder()
    {
        string folder = Path.Combine(Path.GetTempPath(), "recycling-economics-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        TestContext.WriteLine(folder);
        return folder;
    }

    [TestMethod]
    public void HeatmapIsAPngOfTheRequestedSizeWithHighBenefitTopLeft()
    {
        string folder = NewFolder();
        try
        {
            string path = Path.Combine(folder, "figure1.png");
            double[] rs = [.. Enumerable.Range(0, 20).Select(i => 1.05 + (0.1 * i))];
            double[] alphas = [.. Enumerable.Range(0, 21).Select(j => j / 20.0)];
            var grid = RecyclingEconomics.KickstartBenefitGrid(rs, alphas, 1000);

            EconomicsPlots.SaveKickstartHeatmap(path, grid, 640, 480);

            Assert.AreEqual((640, 480), PngFile.ReadSize(path));
            // Viridis is yellow at the top of its range: the largest benefit (small r, α = 1) must be drawn
            // top left. Yellow pixels left of the middle (the colour bar is on the right) all lie in the upper half.
            using var bitmap = SKBitmap.Decode(path);
            Assert.AreEqual(640, bitmap.Width);
            var yellow = new List<(int X, int Y)>();
            for (int y = 0; y < bitmap.Height; y++)
            {
                for (int x = 0; x < bitmap.Width / 2; x++)
                {
                    var c = bitmap.GetPixel(x, y);
                    if (c.Red > 200 && c.Green > 200 && c.Blue < 100)
                    {
                        yellow.Add((x, y));
                    }
                }
            }
            Assert.IsTrue(yellow.Count > 50, $"{yellow.Count} yellow pixels");
            Assert.IsTrue(yellow.All(p => p.Y < bitmap.Height / 2), "high benefit drawn in the lower half: α axis flipped");
            Assert.IsTrue(yellow.All(p => p.X < bitmap.Width / 4), "high benefit drawn right of small r: r axis flipped");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void ByIterationAndAugmentationPlotsArePngsOfTheRequestedSize()
    {
        string folder = NewFolder();
        try
        {
            string kickstart = Path.Combine(folder, "figure2.png");
            string augment = Path.Combine(folder, "figure4.png");

            EconomicsPlots.SaveKickstartByIteration(kickstart,
                [RecyclingEconomics.Kickstart(1.3, 0.5, 20), RecyclingEconomics.Kickstart(1.3, 1, 20)], 800, 300);
            EconomicsPlots.SaveAugmentation(augment,
                [RecyclingEconomics.Augment(4.2, 2.5, 0.9, 10), RecyclingEconomics.Augment(4.2, 2.5, 0.95, 10)]);

            Assert.AreEqual((800, 300), PngFile.ReadSize(kickstart));
            Assert.AreEqual((EconomicsPlots.DefaultWidth, EconomicsPlots.DefaultHeight), PngFile.ReadSize(augment));
            using var bitmap = SKBitmap.Decode(kickstart);
            Assert.IsTrue(Enumerable.Range(0, bitmap.Width).Select(x => bitmap.GetPixel(x, bitmap.Height / 2)).Distinct().Count() > 2,
                "the plot is blank");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void SavingReplacesTheFileAndLeavesNoTemporaryFile()
    {
        string folder = NewFolder();
        try
        {
            string path = Path.Combine(folder, "plot.png");
            File.WriteAllText(path, "not a png");

            EconomicsPlots.SaveAugmentation(path, [RecyclingEconomics.Augment(2, 2, 0.5, 5)], 320, 240);

            Assert.AreEqual((320, 240), PngFile.ReadSize(path));
            CollectionAssert.AreEqual(new[] { path }, Directory.GetFiles(folder));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void BadPlotRequestsAreRejected()
    {
        var series = new[] { RecyclingEconomics.Augment(2, 2, 0.5, 5) };
        string path = Path.Combine(Path.GetTempPath(), "never-written-" + Guid.NewGuid().ToString("N") + ".png");

        Assert.AreEqual("width", Assert.ThrowsExactly<EconomicsParameterException>(
            () => EconomicsPlots.SaveAugmentation(path, series, 0, 240)).Parameter);
        Assert.AreEqual("series", Assert.ThrowsExactly<EconomicsParameterException>(
            () => EconomicsPlots.SaveKickstartByIteration(path, [])).Parameter);
        Assert.IsFalse(File.Exists(path));
    }
}
