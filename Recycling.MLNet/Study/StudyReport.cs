using System.Globalization;
using System.Text;
using Recycling.MLNet.Data;
using Recycling.MLNet.Diagnostics;
using Recycling.Onnx.IO;
using Recycling.Onnx;

namespace Recycling.MLNet.Study;

/// <summary>Writes a study as a report folder: README.md (tables, agreement with PyTorch), study.json, CSVs and PNG plots.</summary>
public static class StudyReport
{
    /// <summary>Differences to the PyTorch reference above this many points are called out in the report.</summary>
    public const double Tolerance = 0.2;

    /// <summary>Writes the report of <paramref name="studies"/> on <paramref name="zoo"/> (its path and what its OOD split is head the README).</summary>
    public static void Write(string folder, IReadOnlyList<ArchitectureStudy> studies, ModelZoo zoo, double seconds)
    {
        ArgumentNullException.ThrowIfNull(studies);
        ArgumentNullException.ThrowIfNull(zoo);
        Directory.CreateDirectory(folder);
        var md = new StringBuilder();
        md.AppendLine("# Recycling study on the model zoo");
        md.AppendLine();
        var splits = zoo.OodDescription is { } ood ? $"in-domain val; OOD test: {ood}" : "in-domain val and the OOD test split";
        md.AppendLine(Inv($"Zoo: `{zoo.FilePath}`. Every number below was computed by Recycling through ONNX Runtime on the zoo's splits ({splits}); merges were built in memory from the exported ONNX weights. Total time {seconds:F1} s."));
        md.AppendLine();
        var referenced = studies.Any(s => s.Rows.Any(r => r.ReferenceGap is not null || r.StateDictVal is not null || r.StateDictOod is not null) || s.Ranking.Any(r => r.ReferenceVal is not null || r.ReferenceOod is not null));
        md.AppendLine(referenced
            ? "Columns: accuracy here (val, OOD); the PyTorch reference of zoo.json computed on the same exported weights (\"torch ONNX-w\"), the gap to it, and the reference computed by averaging torch state_dicts (\"torch state_dict\", what the papers do; it differs where the exporter folded BatchNorm into the convolutions). A column no row has a value for is left out."
            : "Columns: accuracy here (val, OOD). This zoo.json records no PyTorch reference (a zoo built in .NET has none), so the tables have no reference columns.");
        md.AppendLine();
        foreach (var s in studies)
        {
            md.AppendLine(Inv($"## {s.Architecture} ({s.Seconds:F1} s)"));
            md.AppendLine();
            AppendTable(md, s.Rows,
            [
                ("method", false, r => r.Method),
                ("detail", false, r => r.Detail),
                ("val", true, r => F(r.Val)),
                ("OOD", true, r => F(r.Ood)),
                ("torch ONNX-w val", true, r => F(r.ReferenceVal)),
                ("torch ONNX-w OOD", true, r => F(r.ReferenceOod)),
                ("max gap", true, r => r.ReferenceGap is { } g ? (g > Tolerance ? $"**{F(g)}**" : F(g)) : ""),
                ("torch state_dict val", true, r => F(r.StateDictVal)),
                ("torch state_dict OOD", true, r => F(r.StateDictOod)),
            ]);
            md.AppendLine();
            var off = s.Rows.Where(r => r.ReferenceGap > Tolerance).ToList();
            if (referenced)
            {
                md.AppendLine(s.Rows.All(r => r.ReferenceGap is null)
                    ? "No PyTorch reference recorded in this zoo.json for this architecture."
                    : off.Count == 0
                    ? Inv($"Agreement with PyTorch: every row with a reference is within {Tolerance} points.")
                    : Inv($"Differences from PyTorch above {Tolerance} points: {string.Join("; ", off.Select(r => $"{r.Method} ({F(r.ReferenceGap)} points)"))}. ") + Explain(off));
                md.AppendLine();
            }

            foreach (var note in s.Notes)
            {
                md.AppendLine($"- {note}");
            }

            md.AppendLine();
            md.AppendLine("Greedy soups (ingredients sorted by val accuracy; each tried once):");
            md.AppendLine();
            foreach (var (name, g) in s.GreedySoups)
            {
                md.AppendLine(Inv($"- {name}: order {string.Join(", ", g.Order.Select((n, i) => $"{n} ({F(g.OrderValAccuracy[i])})"))}; accepted {string.Join(", ", g.Accepted)} (val {F(g.ValAccuracy)})"));
            }

            md.AppendLine();
            md.AppendLine("Candidate bases ranked by linear-probe accuracy (probe trained on probe_train, ML.NET L-BFGS maximum entropy):");
            md.AppendLine();
            AppendTable(md, [.. s.Ranking.Select((r, i) => (Rank: i + 1, Entry: r))],
            [
                ("rank", true, r => r.Rank.ToString(CultureInfo.InvariantCulture)),
                ("model", false, r => r.Entry.Model),
                ("probe val", true, r => F(r.Entry.ProbeVal)),
                ("probe OOD", true, r => F(r.Entry.ProbeOod)),
                ("torch val", true, r => F(r.Entry.ReferenceVal)),
                ("torch OOD", true, r => F(r.Entry.ReferenceOod)),
            ]);

            md.AppendLine();
            foreach (var c in s.Interpolations)
            {
                md.AppendLine(Inv($"Interpolation {c.ModelA} → {c.ModelB} on {c.Data}: loss barrier {c.LossBarrier:F4}, error barrier {c.ErrorBarrier:F2} points."));
                md.AppendLine();
            }

            md.AppendLine(Inv($"Diversity on OOD test: mean ratio-error {DiversityMatrix.MeanOffDiagonal(s.Diversity.RatioError):F3}, mean disagreement {DiversityMatrix.MeanOffDiagonal(s.Diversity.Disagreement):F2}%."));
            md.AppendLine();
            var a = s.Architecture;
            md.AppendLine($"![soup accuracy vs ingredients]({a}_soup_ingredients.png)");
            md.AppendLine($"![interpolation]({a}_interpolation.png)");
            md.AppendLine($"![diversity]({a}_diversity.png)");
            md.AppendLine();

            var references = s.Rows.Where(r => r.Method is RecyclingStudy.BestIndividual or RecyclingStudy.EnsembleAll)
                .SelectMany(r => new[] { new SoupReference(r.Method, "val", r.Val), new SoupReference(r.Method, "OOD test", r.Ood) }).ToList();
            DiagnosticPlots.SaveIngredientCurves(Path.Combine(folder, $"{a}_soup_ingredients.png"), s.IngredientCurves, $"{a}: uniform soups of the top-k by val", references);
            if (s.Interpolations.Count > 0)
            {
                DiagnosticPlots.SaveInterpolation(Path.Combine(folder, $"{a}_interpolation.png"), s.Interpolations, $"{a}: linear interpolation between fine-tunings (val)");
                WriteInterpolationCsv(Path.Combine(folder, $"{a}_interpolation.csv"), s.Interpolations);
            }

            DiagnosticPlots.SaveMatrix(Path.Combine(folder, $"{a}_diversity.png"), s.Diversity.Models, s.Diversity.RatioError, $"{a}: ratio-error (N10+N01)/N00 on OOD test", "ratio-error");
            WriteMatrixCsv(Path.Combine(folder, $"{a}_diversity_ratio_error.csv"), s.Diversity.Models, s.Diversity.RatioError);
            WriteMatrixCsv(Path.Combine(folder, $"{a}_diversity_disagreement.csv"), s.Diversity.Models, s.Diversity.Disagreement);
        }

        OutputFile.WriteAllText(Path.Combine(folder, "README.md"), md.ToString());
        OutputFile.WriteAllText(Path.Combine(folder, "study.json"), ToJson(studies));
    }

    public static string ToJson(IReadOnlyList<ArchitectureStudy> studies) => JsonStyle.Serialize(JsonModel(studies));

    /// <summary>What <see cref="ToJson"/> serialises: one entry per architecture (docs/json/demo.schema.json).</summary>
    internal static object JsonModel(IReadOnlyList<ArchitectureStudy> studies) =>
        studies.Select(s => new
        {
            architecture = s.Architecture,
            seconds = s.Seconds,
            rows = s.Rows.Select(r => new { method = r.Method, detail = r.Detail, val = r.Val, ood = r.Ood, referenceVal = r.ReferenceVal, referenceOod = r.ReferenceOod, stateDictVal = r.StateDictVal, stateDictOod = r.StateDictOod, gap = r.ReferenceGap }),
            greedy = s.GreedySoups.Select(x => new { name = x.Name, rule = x.Soup.RuleSymbol, order = x.Soup.Order, orderVal = x.Soup.OrderValAccuracy, steps = x.Soup.Steps, accepted = x.Soup.Accepted, val = x.Soup.ValAccuracy }),
            ranking = s.Ranking,
            ingredientCurves = s.IngredientCurves,
            interpolations = s.Interpolations.Select(c => new { a = c.ModelA, b = c.ModelB, data = c.Data, points = c.Points, lossBarrier = c.LossBarrier, errorBarrier = c.ErrorBarrier }),
            diversity = new { models = s.Diversity.Models, ratioError = s.Diversity.RatioError, disagreement = s.Diversity.Disagreement },
            notes = s.Notes,
        }).ToList();

    internal static void WriteInterpolationCsv(string path, IReadOnlyList<InterpolationCurve> curves)
    {
        var csv = new StringBuilder("model_a,model_b,lambda,accuracy,loss\n");
        foreach (var c in curves)
        {
            foreach (var p in c.Points)
            {
                csv.AppendLine(Inv($"{c.ModelA},{c.ModelB},{p.Lambda:R},{p.Accuracy:R},{p.Loss:R}"));
            }
        }

        OutputFile.WriteAllText(path, csv.ToString());
    }

    internal static void WriteMatrixCsv(string path, IReadOnlyList<string> models, double[][] values)
    {
        var csv = new StringBuilder("model," + string.Join(",", models) + "\n");
        for (int i = 0; i < models.Count; i++)
        {
            csv.AppendLine(models[i] + "," + string.Join(",", values[i].Select(v => v.ToString("R", CultureInfo.InvariantCulture))));
        }

        OutputFile.WriteAllText(path, csv.ToString());
    }

    /// <summary>A markdown table of <paramref name="rows"/>, leaving out every column no row has a value for.</summary>
    private static void AppendTable<T>(StringBuilder md, IReadOnlyList<T> rows, IReadOnlyList<(string Header, bool Numeric, Func<T, string> Cell)> columns)
    {
        var kept = columns.Where(c => rows.Any(r => c.Cell(r).Length > 0)).ToList();
        if (kept.Count == 0)
        {
            return;
        }

        md.AppendLine("| " + string.Join(" | ", kept.Select(c => c.Header)) + " |");
        md.AppendLine("|" + string.Concat(kept.Select(c => c.Numeric ? "---:|" : "---|")));
        foreach (var r in rows)
        {
            md.AppendLine("| " + string.Join(" | ", kept.Select(c => c.Cell(r))) + " |");
        }
    }

    private static string Explain(List<StudyRow> off)
    {
        var reasons = new List<string>();
        if (off.Any(r => r.Method.Contains("greedy", StringComparison.Ordinal)))
        {
            reasons.Add("greedy soups accept or reject candidates on val differences of one or two images, so float rounding between ONNX Runtime and PyTorch can change the accepted set");
        }

        if (off.Any(r => r.Method.Contains("LP", StringComparison.Ordinal)))
        {
            reasons.Add("linear probes are trained by ML.NET's L-BFGS (float32, its own stopping rule) against PyTorch's float64 L-BFGS, so the optima differ slightly");
        }

        if (off.Any(r => !r.Method.Contains("greedy", StringComparison.Ordinal) && !r.Method.Contains("LP", StringComparison.Ordinal)))
        {
            reasons.Add("other rows share the exact computation; a gap there means a real discrepancy");
        }

        return "Why: " + string.Join("; ", reasons) + ".";
    }

    private static string F(double? value) => value is { } v ? v.ToString("F2", CultureInfo.InvariantCulture) : "";

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
