using System.Globalization;
using Recycling.Onnx.IO;
using ScottPlot;

namespace Recycling.MLNet.Diagnostics;

/// <summary>One line of a "soup accuracy versus number of ingredients" plot: <paramref name="Label"/>'s soups evaluated on <see cref="Split"/>.</summary>
public sealed record IngredientCurve(string Label, IReadOnlyList<double> Accuracy)
{
    /// <summary>The data the accuracies were measured on; each split gets its own panel.</summary>
    public string Split { get; init; } = "val";
}

/// <summary>A reference accuracy drawn across a soup plot's <paramref name="Split"/> panel (best individual, ensemble).</summary>
public sealed record SoupReference(string Label, string Split, double Value);

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
        plot.ShowLegend(Edge.Bottom);
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
        // Cells are centred on integer coordinates: the axes end at the outer cell edges, so no empty margin is drawn.
        plot.Axes.SetLimits(-0.5, n - 0.5, -0.5, n - 0.5);
        plot.Title(title);
        Save(plot, path, Width, Width);
    }

    /// <summary>
    /// Soup accuracy as ingredients are added (x = number of ingredients), one panel per split (curves whose
    /// <see cref="IngredientCurve.Split"/> is the same), each on its own y axis, with the split's reference values
    /// (e.g. the best individual model and the ensemble) as labelled horizontal lines.
    /// </summary>
    public static void SaveIngredientCurves(string path, IReadOnlyList<IngredientCurve> curves, string title, IReadOnlyList<SoupReference>? references = null)
    {
        ArgumentNullException.ThrowIfNull(curves);
        var palette = new ScottPlot.Palettes.Category10();
        var labels = curves.Select(c => c.Label).Distinct().ToList();
        var panels = new List<Plot>();
        foreach (var split in curves.Select(c => c.Split).Distinct())
        {
            var plot = new Plot();
            panels.Add(plot);
            foreach (var c in curves.Where(c => c.Split == split))
            {
                var line = plot.Add.Scatter(Enumerable.Range(1, c.Accuracy.Count).Select(k => (double)k).ToArray(), [.. c.Accuracy], palette.GetColor(labels.IndexOf(c.Label)));
                line.LegendText = c.Label;
            }

            var patterns = new[] { LinePattern.Dashed, LinePattern.Dotted, LinePattern.DenselyDashed };
            var shown = (references ?? []).Where(r => r.Split == split && double.IsFinite(r.Value)).ToList();
            for (int i = 0; i < shown.Count; i++)
            {
                var h = plot.Add.HorizontalLine(shown[i].Value, 1.5f, Colors.Black.WithAlpha(0.7), patterns[i % patterns.Length]);
                h.LegendText = $"{shown[i].Label} ({Number(shown[i].Value)})";
            }

            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
            plot.Title($"{title} — {split}");
            plot.XLabel("number of ingredients (sorted by val accuracy)");
            plot.YLabel($"{split} accuracy (%)");
            plot.ShowLegend(Edge.Bottom);
        }

        if (panels.Count == 0)
        {
            panels.Add(new Plot());
        }

        var multiplot = new Multiplot();
        multiplot.Reset(panels[0]); // a new Multiplot starts with an empty subplot
        foreach (var panel in panels.Skip(1))
        {
            multiplot.AddPlot(panel);
        }

        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        OutputFile.WriteAllBytes(path, multiplot.Render(panels.Count * Width, Height).GetImageBytes(ImageFormat.Png));
    }

    /// <summary>
    /// A tuning curve: val and held-out accuracy (left axis) and val log-loss (right axis, dashed) against the first
    /// tuned parameter, one line per combination of the others, with the chosen and the default values marked.
    /// </summary>
    internal static void SaveTuning(string path, TuningResult result, string title)
    {
        ArgumentNullException.ThrowIfNull(result);
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var right = plot.Axes.Right;
        var groups = result.Points.GroupBy(p => string.Join(", ", p.Values.Skip(1).Select((v, i) => $"{result.Parameters[i + 1]} {Number(v)}"))).ToList();
        int color = 0;
        foreach (var group in groups)
        {
            var points = group.OrderBy(p => p.Values[0]).ToList();
            var xs = points.Select(p => p.Values[0]).ToArray();
            var suffix = group.Key.Length == 0 ? "" : $" ({group.Key})";
            var val = plot.Add.Scatter(xs, points.Select(p => p.Val.Accuracy).ToArray(), palette.GetColor(color));
            val.LegendText = $"val accuracy{suffix}";
            var loss = plot.Add.Scatter(xs, points.Select(p => p.Val.LogLoss).ToArray(), palette.GetColor(color));
            loss.LinePattern = LinePattern.Dashed;
            loss.Axes.YAxis = right;
            loss.LegendText = $"val log-loss{suffix}";
            color++;
            for (int t = 0; t < points[0].Test.Count; t++)
            {
                var test = plot.Add.Scatter(xs, points.Select(p => p.Test[t].Accuracy).ToArray(), palette.GetColor(color++));
                test.LegendText = $"{Path.GetFileName(points[0].Test[t].Data)} accuracy{suffix}";
            }
        }

        var chosen = plot.Add.VerticalLine(result.Best.Values[0], 1.5f, Colors.Black.WithAlpha(0.7), LinePattern.Solid);
        chosen.LegendText = $"chosen {result.Parameters[0]} {Number(result.Best.Values[0])}";
        if (result.Default.Values[0] != result.Best.Values[0])
        {
            var fallback = plot.Add.VerticalLine(result.Default.Values[0], 1.5f, Colors.Black.WithAlpha(0.5), LinePattern.Dotted);
            fallback.LegendText = $"default {Number(result.Default.Values[0])}";
        }

        plot.Title(title);
        plot.XLabel(result.Parameters[0]);
        plot.YLabel("accuracy (%)");
        right.Label.Text = "val log-loss (dashed)";
        plot.ShowLegend(Edge.Bottom);
        Save(plot, path, Width, Height + (20 * Math.Min(groups.Count * (2 + result.Best.Test.Count), 30)));
    }

    private static void Save(Plot plot, string path, int width = Width, int height = Height)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        OutputFile.WriteAllBytes(path, plot.GetImageBytes(width, height, ImageFormat.Png));
    }

    private static string Number(double value) => value.ToString("F2", CultureInfo.InvariantCulture);
}
