using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;

namespace Recycling.MLNet.Evaluation;

/// <summary>Accuracy of one domain (e.g. one rotation) of the evaluated data.</summary>
public sealed record DomainAccuracy(int Domain, int Count, double Accuracy);

/// <summary>
/// Multiclass metrics, in percent where they are rates: accuracy (micro), macro accuracy (mean per-class recall over
/// the classes present, as ML.NET defines it), log-loss (mean −ln p(label), natural log), the confusion matrix
/// (rows = true class, columns = predicted class) and per-domain accuracy when domain ids are known.
/// </summary>
public sealed record ClassificationMetrics(
    int Count,
    double Accuracy,
    double MacroAccuracy,
    double LogLoss,
    int[][] ConfusionMatrix,
    IReadOnlyList<DomainAccuracy> PerDomain)
{
    /// <summary>Probabilities are floored here before the log, as ML.NET's evaluator does with its epsilon.</summary>
    public const double ProbabilityFloor = 1e-15;

    /// <summary>Metrics of raw scores: softmax is taken in double precision (log-softmax for the loss).</summary>
    public static ClassificationMetrics FromLogits(FloatMatrix logits, Dataset data) =>
        FromLogits(logits, data.Labels, data.Domains);

    public static ClassificationMetrics FromLogits(FloatMatrix logits, IReadOnlyList<int> labels, IReadOnlyList<int>? domains = null)
    {
        ArgumentNullException.ThrowIfNull(logits);
        Check(logits, labels, domains);
        var losses = new double[logits.Rows];
        for (int r = 0; r < logits.Rows; r++)
        {
            var row = logits.Row(r);
            losses[r] = FloatMatrix.LogSumExp(row) - row[labels[r]];
        }

        return Build(logits.ArgMax(), losses, logits.Columns, labels, domains);
    }

    /// <summary>Metrics of class probabilities (e.g. an ensemble's averaged probabilities).</summary>
    public static ClassificationMetrics FromProbabilities(FloatMatrix probabilities, IReadOnlyList<int> labels, IReadOnlyList<int>? domains = null)
    {
        ArgumentNullException.ThrowIfNull(probabilities);
        Check(probabilities, labels, domains);
        var losses = new double[probabilities.Rows];
        for (int r = 0; r < probabilities.Rows; r++)
        {
            losses[r] = -Math.Log(Math.Max(probabilities.Row(r)[labels[r]], ProbabilityFloor));
        }

        return Build(probabilities.ArgMax(), losses, probabilities.Columns, labels, domains);
    }

    private static void Check(FloatMatrix scores, IReadOnlyList<int> labels, IReadOnlyList<int>? domains)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (scores.Rows != labels.Count)
        {
            throw new RecyclingException($"{scores.Rows} score rows for {labels.Count} labels");
        }

        if (domains is not null && domains.Count != labels.Count)
        {
            throw new RecyclingException($"{domains.Count} domain ids for {labels.Count} labels");
        }

        int bad = labels.FirstOrDefault(l => l < 0 || l >= scores.Columns, -1);
        if (labels.Any(l => l < 0 || l >= scores.Columns))
        {
            throw new RecyclingException($"label {bad} is outside the model's {scores.Columns} classes");
        }

        if (labels.Count == 0)
        {
            throw new RecyclingException("no samples to evaluate");
        }
    }

    private static ClassificationMetrics Build(int[] predicted, double[] losses, int classes, IReadOnlyList<int> labels, IReadOnlyList<int>? domains)
    {
        var confusion = Enumerable.Range(0, classes).Select(_ => new int[classes]).ToArray();
        int correct = 0;
        for (int i = 0; i < predicted.Length; i++)
        {
            confusion[labels[i]][predicted[i]]++;
            correct += predicted[i] == labels[i] ? 1 : 0;
        }

        var recalls = confusion.Select((row, c) => (total: row.Sum(), hit: row[c])).Where(x => x.total > 0).Select(x => (double)x.hit / x.total).ToList();
        var perDomain = new List<DomainAccuracy>();
        if (domains is not null)
        {
            foreach (var group in Enumerable.Range(0, labels.Count).GroupBy(i => domains[i]).OrderBy(g => g.Key))
            {
                int n = group.Count();
                perDomain.Add(new DomainAccuracy(group.Key, n, 100.0 * group.Count(i => predicted[i] == labels[i]) / n));
            }
        }

        return new ClassificationMetrics(labels.Count, 100.0 * correct / labels.Count, 100.0 * recalls.Average(), losses.Average(), confusion, perDomain)
        {
            Predictions = predicted,
        };
    }

    /// <summary>The predicted class of each sample (for diversity measures).</summary>
    public IReadOnlyList<int> Predictions { get; init; } = [];
}
