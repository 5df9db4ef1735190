using System.Globalization;
using System.Text;
using Recycling.Onnx;
using Recycling.Onnx.IO;

namespace Recycling.MLNet.Study;

/// <summary>A study row over seed replicas: mean and sample standard deviation (0 with one replica) of val and OOD accuracy.</summary>
internal sealed record SpreadRow(string Method, int Seeds, double ValMean, double ValSd, double OodMean, double OodSd)
{
    /// <summary>Val and OOD accuracies of this row, one per replica that has it.</summary>
    public required IReadOnlyList<(double Val, double Ood)> Values { get; init; }
}

/// <summary>
/// The same study run on zoos that differ only in their target runs' seeds (a foundation zoo built with several
/// seeds): each row's mean and spread. Rows are matched by method name and occurrence, in study order; a
/// row some replicas lack (a Fisher merge skipped for a degenerate Fisher file) is summarised over those that have it.
/// </summary>
internal static class StudySpread
{
    public static IReadOnlyList<SpreadRow> Over(IReadOnlyList<ArchitectureStudy> replicas)
    {
        ArgumentNullException.ThrowIfNull(replicas);
        if (replicas.Count == 0)
        {
            throw new ArgumentException("no study to summarise", nameof(replicas));
        }

        var keyed = replicas.Select(Keys).ToList();
        return [.. Union(keyed).Select(key =>
        {
            var rows = keyed.Select(k => k.FirstOrDefault(r => r.Key == key).Row).OfType<StudyRow>().ToList();
            var values = rows.Select(r => (r.Val, r.Ood)).ToList();
            var (valMean, valSd) = MeanSd(values.Select(v => v.Val).ToList());
            var (oodMean, oodSd) = MeanSd(values.Select(v => v.Ood).ToList());
            return new SpreadRow(rows[0].Method, values.Count, valMean, valSd, oodMean, oodSd) { Values = values };
        })];
    }

    /// <summary>Every replica's row keys in study order: the first replica's, and a row only later replicas have (the first skipped its Fisher merge) after the row it follows there.</summary>
    private static List<string> Union(List<List<(string Key, StudyRow Row)>> keyed)
    {
        var order = new List<string>();
        foreach (var rows in keyed)
        {
            var at = 0;
            foreach (var (key, _) in rows)
            {
                var i = order.IndexOf(key);
                if (i < 0)
                {
                    order.Insert(at++, key);
                }
                else
                {
                    at = i + 1;
                }
            }
        }

        return order;
    }

    /// <summary>Markdown: one table of mean ± sample standard deviation per row, the replicas' values beside.</summary>
    public static void Write(string path, IReadOnlyList<ArchitectureStudy> replicas, IReadOnlyList<string> zooFiles)
    {
        ArgumentNullException.ThrowIfNull(zooFiles);
        var rows = Over(replicas);
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"# {replicas[0].Architecture}: the study over {replicas.Count} seeds of the target runs");
        md.AppendLine();
        md.AppendLine("Each seed replica fine-tunes the same starts (base, ratatouille starts) with other learning-rate and weight-decay draws and another data order; the study ran on each. Mean ± sample standard deviation over the replicas, accuracy in %.");
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Zoos: {string.Join(", ", zooFiles.Select(f => $"`{f}`"))}.");
        md.AppendLine();
        md.AppendLine("| method | seeds | val | OOD | val per seed | OOD per seed |");
        md.AppendLine("|---|---:|---:|---:|---|---|");
        foreach (var r in rows)
        {
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Method} | {r.Seeds} | {r.ValMean:F2} ± {r.ValSd:F2} | {r.OodMean:F2} ± {r.OodSd:F2} | {string.Join(", ", r.Values.Select(v => v.Val.ToString("F2", CultureInfo.InvariantCulture)))} | {string.Join(", ", r.Values.Select(v => v.Ood.ToString("F2", CultureInfo.InvariantCulture)))} |");
        }

        OutputFile.WriteAllText(path, md.ToString());
    }

    /// <summary>
    /// The JSON of a study over seed replicas (docs/json/demo-seeds.schema.json): the zoo of each replica, each
    /// replica's study as <see cref="StudyReport.ToJson"/> writes it, and per architecture every row's spread.
    /// </summary>
    public static string ToJson(IReadOnlyList<IReadOnlyList<ArchitectureStudy>> replicas, IReadOnlyList<string> zooFiles)
    {
        ArgumentNullException.ThrowIfNull(replicas);
        ArgumentNullException.ThrowIfNull(zooFiles);
        return JsonStyle.Serialize(new
        {
            zoos = zooFiles,
            replicas = replicas.Select(StudyReport.JsonModel).ToList(),
            seeds = Enumerable.Range(0, replicas[0].Count).Select(i =>
            {
                var studies = replicas.Select(r => r[i]).ToList();
                return new
                {
                    architecture = studies[0].Architecture,
                    rows = Over(studies).Select(r => new
                    {
                        method = r.Method,
                        seeds = r.Seeds,
                        valMean = r.ValMean,
                        valSd = r.ValSd,
                        oodMean = r.OodMean,
                        oodSd = r.OodSd,
                        val = r.Values.Select(v => v.Val).ToList(),
                        ood = r.Values.Select(v => v.Ood).ToList(),
                    }).ToList(),
                };
            }).ToList(),
            notes = new List<string>(),
        });
    }

    /// <summary>Sample mean and standard deviation (n − 1; 0 for one value), accumulated in double.</summary>
    internal static (double Mean, double Sd) MeanSd(IReadOnlyList<double> values)
    {
        var mean = values.Average();
        return (mean, values.Count < 2 ? 0 : Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1)));
    }

    private static List<(string Key, StudyRow Row)> Keys(ArchitectureStudy study) =>
        [.. study.Rows.Select((r, i) => ($"{r.Method}#{study.Rows.Take(i).Count(p => p.Method == r.Method)}", r))];
}
