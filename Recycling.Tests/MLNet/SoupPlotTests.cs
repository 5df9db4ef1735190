using Recycling.MLNet.Diagnostics;
using Recycling.Tests.Economics;

namespace Recycling.Tests.MLNet;

[TestClass]
public sealed class SoupPlotTests
{
    /// <summary>Val and OOD curves get a panel each (two 900-pixel panels side by side), reference lines included.</summary>
    [TestMethod]
    public void EachSplitGetsItsOwnPanel()
    {
        var path = Path.Combine(Path.GetTempPath(), $"soup-plot-{Guid.NewGuid():N}.png");
        try
        {
            IngredientCurve[] curves =
            [
                new("DiWA", [78.3, 78.7, 79.1]) { Split = "val" },
                new("DiWA", [44.6, 45.6, 46.4]) { Split = "OOD test" },
            ];
            DiagnosticPlots.SaveIngredientCurves(path, curves, "cnn", [new SoupReference("best individual", "val", 78.3), new SoupReference("best individual", "OOD test", 44.6)]);
            Assert.AreEqual((1800, 600), PngFile.ReadSize(path));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
