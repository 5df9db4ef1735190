using Recycling.MLNet.Inference;
using Recycling.MLNet.Probing;
using Recycling.Onnx;

namespace Recycling.Training;

/// <summary>
/// The linear probe that initialises a new head (<see cref="HeadInit.Probe"/>, LP-FT): multinomial logistic
/// regression (ML.NET L-BFGS, L2 on the weights) on the features centred per feature and divided by one scale shared
/// by all of them (the root-mean-square of their standard deviations), folded back into a head on the raw features.
/// Not per-feature standardisation: that divides each feature by its own standard deviation and so multiplies its
/// weight by 1/std, without bound for a feature that hardly varies. all-MiniLM-L6-v2 has two dead dimensions (final
/// LayerNorm gain and bias about 1e-32, so the pooled value varies by 1e-32): a standardised probe gave them weights
/// of 7e30, and fine-tuning, whose first AdamW step moves that gain by the learning rate, sent the logits to 1e26.
/// With one scale, the L2 penalty bounds every weight of the head itself, and a feature that does not vary gets none.
/// </summary>
internal static class HeadProbe
{
    /// <summary>Names this fit in the identity of cached runs whose heads it initialises.</summary>
    public const string Method = "centred-shared-scale";

    public static (float[] Weight, float[] Bias) Fit(FloatMatrix features, IReadOnlyList<int> labels, int classes, int seed, double l2, string source)
    {
        ArgumentNullException.ThrowIfNull(features);
        var (rows, columns) = (features.Rows, features.Columns);
        var values = features.Data;
        var mean = new double[columns];
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < columns; j++)
            {
                mean[j] += values[(r * columns) + j];
            }
        }

        for (var j = 0; j < columns; j++)
        {
            mean[j] /= rows;
        }

        double squares = 0;
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < columns; j++)
            {
                var d = values[(r * columns) + j] - mean[j];
                squares += d * d;
            }
        }

        if (!double.IsFinite(squares))
        {
            throw new RecyclingException($"{source}: the features a probe head is fitted on are not all finite");
        }

        var scale = Math.Sqrt(squares / ((double)rows * columns));
        if (!(scale > 0))
        {
            scale = 1; // every feature is constant: the probe can only learn the class frequencies, in the bias
        }

        var scaled = new float[values.Length];
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < columns; j++)
            {
                scaled[(r * columns) + j] = (float)((values[(r * columns) + j] - mean[j]) / scale);
            }
        }

        var probe = LinearProbe.Train(new FloatMatrix(rows, columns, scaled), labels, classes, new ProbeOptions { Seed = seed, L2 = l2, Normalization = ProbeNormalization.None });
        var (weight, bias) = probe.ToLinear();
        for (var k = 0; k < classes; k++)
        {
            double shift = bias[k];
            for (var j = 0; j < columns; j++)
            {
                var w = weight[(k * columns) + j] / scale;
                weight[(k * columns) + j] = (float)w;
                shift -= w * mean[j];
            }

            bias[k] = (float)shift;
        }

        return (weight, bias);
    }
}
