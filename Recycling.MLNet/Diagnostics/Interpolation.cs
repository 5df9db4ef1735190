using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Soups;
using Recycling.Onnx;

namespace Recycling.MLNet.Diagnostics;

/// <summary>One point θ(λ) = (1−λ)θa + λθb of an interpolation path.</summary>
public sealed record InterpolationPoint(double Lambda, double Accuracy, double Loss)
{
    public double Error => 100 - Accuracy;
}

/// <summary>
/// A linear-mode-connectivity curve between two models on one data set, with its barriers:
/// max over λ of L(θ(λ)) − ½(L(θa) + L(θb)), on the loss and on the error rate (percentage points).
/// </summary>
public sealed record InterpolationCurve(string ModelA, string ModelB, string Data, IReadOnlyList<InterpolationPoint> Points)
{
    public double LossBarrier => Points.Max(p => p.Loss) - (0.5 * (Points[0].Loss + Points[^1].Loss));

    public double ErrorBarrier => Points.Max(p => p.Error) - (0.5 * (Points[0].Error + Points[^1].Error));

    /// <summary>Evenly spaced λ in [0, 1], both ends included.</summary>
    public static IReadOnlyList<double> Grid(int points)
    {
        if (points < 2)
        {
            throw new RecyclingException($"an interpolation curve needs at least 2 points, not {points}");
        }

        return [.. Enumerable.Range(0, points).Select(i => (double)i / (points - 1))];
    }

    /// <summary>Evaluates θ(λ) between models <paramref name="a"/> and <paramref name="b"/> of <paramref name="set"/> at each λ.</summary>
    public static InterpolationCurve Compute(ModelSet set, int a, int b, Dataset data, int points = 11, IProgress<int>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(data);
        var result = new List<InterpolationPoint>();
        foreach (var lambda in Grid(points))
        {
            ClassificationMetrics metrics;
            if (lambda == 0 || lambda == 1)
            {
                metrics = set.Evaluate(lambda == 0 ? a : b, data);
            }
            else
            {
                var weights = new double[set.Count];
                weights[a] = 1 - lambda;
                weights[b] += lambda;
                metrics = ClassificationMetrics.FromLogits(set.AverageScores(weights, data), data);
            }

            result.Add(new InterpolationPoint(lambda, metrics.Accuracy, metrics.LogLoss));
            progress?.Report(result.Count);
        }

        return new InterpolationCurve(set.Names[a], set.Names[b], data.Name, result);
    }
}
