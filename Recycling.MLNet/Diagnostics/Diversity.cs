using Recycling.Onnx;

namespace Recycling.MLNet.Diagnostics;

/// <summary>
/// Pairwise prediction diversity of models on the same samples (DiWA / ratatouille): the ratio-error
/// r = (N10 + N01) / N00 — samples where exactly one of the two is wrong over samples where both are wrong (Aksela 2003) —
/// and the disagreement rate (share of samples, in percent, where the predicted classes differ).
/// Diagonals are 0; r is infinite when the two models never err together.
/// </summary>
public sealed record DiversityMatrix(IReadOnlyList<string> Models, double[][] RatioError, double[][] Disagreement)
{
    public static DiversityMatrix Compute(IReadOnlyList<string> models, IReadOnlyList<IReadOnlyList<int>> predictions, IReadOnlyList<int> labels)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(predictions);
        ArgumentNullException.ThrowIfNull(labels);
        if (models.Count != predictions.Count || predictions.Any(p => p.Count != labels.Count))
        {
            throw new RecyclingException("diversity needs one prediction per sample for every model");
        }

        int n = models.Count;
        var ratio = Enumerable.Range(0, n).Select(_ => new double[n]).ToArray();
        var disagreement = Enumerable.Range(0, n).Select(_ => new double[n]).ToArray();
        for (int i = 0; i < n; i++)
        {
            for (int j = i + 1; j < n; j++)
            {
                var (r, d) = Pair(predictions[i], predictions[j], labels);
                ratio[i][j] = ratio[j][i] = r;
                disagreement[i][j] = disagreement[j][i] = d;
            }
        }

        return new DiversityMatrix(models, ratio, disagreement);
    }

    /// <summary>Ratio-error and disagreement (percent) of two models' predictions.</summary>
    public static (double RatioError, double Disagreement) Pair(IReadOnlyList<int> a, IReadOnlyList<int> b, IReadOnlyList<int> labels)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        ArgumentNullException.ThrowIfNull(labels);
        long bothWrong = 0, oneWrong = 0, differ = 0;
        for (int k = 0; k < labels.Count; k++)
        {
            bool wrongA = a[k] != labels[k], wrongB = b[k] != labels[k];
            bothWrong += wrongA && wrongB ? 1 : 0;
            oneWrong += wrongA != wrongB ? 1 : 0;
            differ += a[k] != b[k] ? 1 : 0;
        }

        double ratio = bothWrong == 0 ? (oneWrong == 0 ? 0 : double.PositiveInfinity) : (double)oneWrong / bothWrong;
        return (ratio, 100.0 * differ / labels.Count);
    }

    /// <summary>Mean of the off-diagonal entries of <paramref name="matrix"/> (finite ones).</summary>
    public static double MeanOffDiagonal(double[][] matrix)
    {
        ArgumentNullException.ThrowIfNull(matrix);
        var values = matrix.SelectMany((row, i) => row.Where((_, j) => j != i)).Where(double.IsFinite).ToList();
        return values.Count == 0 ? double.NaN : values.Average();
    }
}
