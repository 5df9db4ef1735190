using System.Globalization;
using Recycling.Onnx.IO;
using ScottPlot;

namespace Recycling.MLNet.Diagnostics;

/// <summary>One line of a "soup accuracy versus number of ingredients" plot.</summary>
public sealed record IngredientCurve(string Label, IReadOnlyList<double> Accuracy);

/// <summary>Recycling diagnostics as PNG files (ScottPlot), each written atomically.</summary>
public static class DiagnosticPlots
{
    private const int Width = 900;
    private const int Height = 600;

    /// <summary>Accuracy (left axis) and loss (right axis) along λ, one pair of lines per curve.</summary>
    public static void SaveInterpolation(string path, IReadOnlyList<InterpolationCurve> curves, string title)
    {
        ArgumentNullException.ThrowIfNull(curves);
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var right = plot.Axes.Right;
        for (int i = 0; i < curves.Count; i++)
        {
            var c = curves[i];
            var xs = c.Points.Select(p => p.Lambda).ToArray();
            var accuracy = plot.Add.Scatter(xs, c.Points.Select(p => p.Accuracy).ToArray(), palette.GetColor(i));
            accuracy.LegendText = $"{c.ModelA} → {c.ModelB} accuracy (error barrier {Number(c.ErrorBarrier)} pts)";
            var loss = plot.Add.Scatter(xs, c.Points.Select(p => p.Loss).ToArray(), palette.GetColor(i));
            loss.LinePattern = LinePattern.Dashed;
            loss.Axes.YAxis = right;
            loss.LegendText = $"loss (barrier {Number(c.LossBarrier)})";
        }

        plot.Title(title);
        plot.XLabel("λ  (θ = (1−λ)·θa + λ·θb)");
        plot.YLabel("accuracy (%)");
        right.Label.Text = "log-loss (dashed)";
        plot.ShowLegend(Alignment.LowerCenter);
        Save(plot, path);
    }

    /// <summary>A heatmap of a pairwise matrix (e.g. ratio-error) with the models on both axes.</summary>
    public static void SaveMatrix(string path, IReadOnlyList<string> models, double[][] values, string title, string colorLabel)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(values);
        int n = models.Count;
        var grid = new double[n, n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
            {
                grid[i, j] = i == j || !double.IsFinite(values[i][j]) ? double.NaN : values[i][j];
            }
        }

        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(grid);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        // The extent's corners are the centres of the corner cells: cell (i, j) is centred on integer coordinates.
        heatmap.Extent = new CoordinateRect(0, Math.Max(n - 1, 1), 0, Math.Max(n - 1, 1));
        plot.Add.ColorBar(heatmap).Label = colorLabel;
        var ticks = Enumerable.Range(0, n).Select(i => new Tick(i, models[i])).ToArray();
        // Row 0 of the heatmap is drawn at the top.
        var yTicks = Enumerable.Range(0, n).Select(i => new Tick(n - 1 - i, models[i])).ToArray();
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(yTicks);
        plot.Axes.Bottom.TickLabelStyle.Rotation = 90;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 12 + (7 * models.Max(m => m.Length));
        plot.Title(title);
        Save(plot, path, Width, Width);
    }

    /// <summary>Soup accuracy as ingredients are added (x = number of ingredients), one line per curve.</summary>
    public static void SaveIngredientCurves(string path, IReadOnlyList<IngredientCurve> curves, string title, IReadOnlyList<(string Label, double Value)>? references = null)
    {
        ArgumentNullException.ThrowIfNull(curves);
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        for (int i = 0; i < curves.Count; i++)
        {
            var c = curves[i];
            var line = plot.Add.Scatter(Enumerable.Range(1, c.Accuracy.Count).Select(k => (double)k).ToArray(), [.. c.Accuracy], palette.GetColor(i));
            line.LegendText = c.Label;
        }

        int k2 = curves.Count;
        foreach (var (label, value) in references ?? [])
        {
            var h = plot.Add.HorizontalLine(value, 1, palette.GetColor(k2++), LinePattern.Dotted);
            h.LegendText = label;
        }

        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.Title(title);
        plot.XLabel("number of ingredients (sorted by val accuracy)");
        plot.YLabel("accuracy (%)");
        plot.ShowLegend(Alignment.MiddleRight);
        Save(plot, path);
    }

    private static void Save(Plot plot, string path, int width = Width, int height = Height)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        OutputFile.WriteAllBytes(path, plot.GetImageBytes(width, height, ImageFormat.Png));
    }

    private static string Number(double value) => value.ToString("F2", CultureInfo.InvariantCulture);
}
