using System.Globalization;
using Recycling.Onnx.IO;
using ScottPlot;

namespace Recycling.MLNet.Economics;

/// <summary>The seed's figures as PNG files (ScottPlot), each written atomically.</summary>
public static class EconomicsPlots
{
    public const int DefaultWidth = 900;
    public const int DefaultHeight = 600;
    private const int MaxPixels = 10_000;

    /// <summary>Figure 1: the kickstarting benefit after many iterations as a heatmap over r (x) and α (y).</summary>
    public static void SaveKickstartHeatmap(string path, KickstartGrid grid, int width = DefaultWidth, int height = DefaultHeight)
    {
        ArgumentNullException.ThrowIfNull(grid);
        int rows = grid.GrowthRates.Count, columns = grid.Alphas.Count;
        // ScottPlot draws row 0 at the top: rows are α from high to low, columns r from low to high. The colours follow
        // log10(benefit): the benefit spans 1 to r/(r−1) and most of the grid sits near 1, which a linear scale hides.
        var intensities = new double[columns, rows];
        for (int i = 0; i < rows; i++)
        {
            for (int j = 0; j < columns; j++)
            {
                intensities[columns - 1 - j, i] = Math.Log10(Math.Max(grid.Benefit[i, j], 1e-300));
            }
        }
        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(intensities);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        heatmap.Extent = new CoordinateRect(grid.GrowthRates[0], grid.GrowthRates[^1], grid.Alphas[0], grid.Alphas[^1]);
        var colorBar = plot.Add.ColorBar(heatmap);
        colorBar.Label = "benefit A/C (log scale)";
        var finite = intensities.Cast<double>().Where(double.IsFinite).ToList();
        if (finite.Count > 0)
        {
            colorBar.Axis.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
                [.. BenefitTicks(Math.Pow(10, finite.Min()), Math.Pow(10, finite.Max())).Select(b => new Tick(Math.Log10(b), Number(b)))]);
        }

        // Cells are centred on the grid values: the axes end at the outer cell edges.
        double dr = rows > 1 ? (grid.GrowthRates[^1] - grid.GrowthRates[0]) / (rows - 1) / 2 : 0.5;
        double da = columns > 1 ? (grid.Alphas[^1] - grid.Alphas[0]) / (columns - 1) / 2 : 0.5;
        plot.Axes.SetLimits(grid.GrowthRates[0] - dr, grid.GrowthRates[^1] + dr, grid.Alphas[0] - da, grid.Alphas[^1] + da);
        plot.Title($"Kickstarting: benefit A/C after {grid.Iterations} iterations");
        plot.XLabel("compute growth r (x per year)");
        plot.YLabel("reuse efficiency α");
        Save(plot, path, width, height);
    }

    /// <summary>Figure 2: the kickstarting benefit by iteration, one line per series, its limit dashed.</summary>
    public static void SaveKickstartByIteration(string path, IReadOnlyList<KickstartSeries> series, int width = DefaultWidth, int height = DefaultHeight)
    {
        RequireSeries(series);
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        for (int i = 0; i < series.Count; i++)
        {
            var s = series[i];
            var color = palette.GetColor(i);
            var line = plot.Add.Scatter(
                s.Steps.Select(step => (double)step.Iteration).ToArray(), s.Steps.Select(step => step.Benefit).ToArray(), color);
            line.LegendText = $"r = {Number(s.GrowthRate)}, α = {Number(s.Alpha)}";
            if (double.IsFinite(s.Limit))
            {
                var limit = plot.Add.HorizontalLine(s.Limit, 1, color, LinePattern.Dashed);
                limit.LegendText = $"limit r/(r−α) = {s.Limit.ToString("F3", CultureInfo.InvariantCulture)}";
            }
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.Title("Kickstarting: benefit A/C by iteration");
        plot.XLabel("iteration (year)");
        plot.YLabel("benefit A/C");
        plot.ShowLegend(Edge.Right);
        Save(plot, path, width, height);
    }

    /// <summary>Figure 4: augmentation simulations, one line per (β, g), against training from scratch (A/(P·C) = 1).</summary>
    public static void SaveAugmentation(string path, IReadOnlyList<AugmentationSeries> series, int width = DefaultWidth, int height = DefaultHeight)
    {
        RequireSeries(series);
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        for (int i = 0; i < series.Count; i++)
        {
            var s = series[i];
            var line = plot.Add.Scatter(
                s.Steps.Select(step => (double)step.Iteration).ToArray(), s.Steps.Select(step => step.Benefit).ToArray(), palette.GetColor(i));
            line.LegendText = $"r = {Number(s.GrowthRate)}, g = {Number(s.ProgressGrowth)}, β = {Number(s.Beta)}";
        }
        var scratch = plot.Add.HorizontalLine(1, 1, Colors.Black, LinePattern.Dashed);
        scratch.LegendText = "training from scratch";
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.Title("Augmentation: benefit A/(P·C) by iteration");
        plot.XLabel("iteration (year)");
        plot.YLabel("benefit A/(P·C)");
        plot.ShowLegend(Edge.Right);
        Save(plot, path, width, height);
    }

    /// <summary>Round benefits between <paramref name="min"/> and <paramref name="max"/> (both ends included) for a log colour bar.</summary>
    private static IEnumerable<double> BenefitTicks(double min, double max)
    {
        double[] steps = [1, 1.1, 1.2, 1.3, 1.5, 2, 3, 5, 10, 20, 50, 100];
        double gap = Math.Log10(max / min) / 30; // keep labels apart: at least 1/30 of the bar
        var inside = steps.Where(v => Math.Log10(v / min) > gap && Math.Log10(max / v) > gap);
        return [min, .. inside, max];
    }

    private static void RequireSeries<T>(IReadOnlyList<T> series)
    {
        ArgumentNullException.ThrowIfNull(series);
        if (series.Count == 0)
        {
            throw new EconomicsParameterException("series", 0, "a plot needs at least one series");
        }
    }

    private static void Save(Plot plot, string path, int width, int height)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (width is < 16 or > MaxPixels)
        {
            throw new EconomicsParameterException("width", width, $"a plot width must lie in [16, {MaxPixels}] pixels");
        }
        if (height is < 16 or > MaxPixels)
        {
            throw new EconomicsParameterException("height", height, $"a plot height must lie in [16, {MaxPixels}] pixels");
        }
        OutputFile.WriteAllBytes(path, plot.GetImageBytes(width, height, ImageFormat.Png));
    }

    private static string Number(double value) => value.ToString("G4", CultureInfo.InvariantCulture);
}
