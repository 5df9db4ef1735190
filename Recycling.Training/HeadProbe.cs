using Recycling.MLNet.Inference;
using Recycling.MLNet.Probing;
using Recycling.Onnx;

namespace Recycling.Training;

/// <summary>
/// The linear probe that initialises a new head (<see cref="HeadInit.Probe"/>, LP-FT): multinomial logistic
/// regression (ML.NET L-BFGS, L2 on the weights) on the features centred and divided by one shared scale
/// (<see cref="ProbeNormalization.SharedScale"/>: not per-feature standardisation, which gives a dead feature
/// unbounded weights), folded back into a head on the raw features.
/// </summary>
internal static class HeadProbe
{
    /// <summary>Names this fit in the identity of cached runs whose heads it initialises.</summary>
    public const string Method = "centred-shared-scale";

    /// <summary>Adds the run parameter that names this fit (<see cref="Method"/>) to the parameters of a run whose head it initialises.</summary>
    public static Dictionary<string, string> Stamp(Dictionary<string, string> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        parameters["head_probe"] = Method;
        return parameters;
    }

    public static (float[] Weight, float[] Bias) Fit(FloatMatrix features, IReadOnlyList<int> labels, int classes, int seed, double l2, string source)
    {
        try
        {
            return LinearProbe.Train(features, labels, classes, new ProbeOptions { Seed = seed, L2 = l2, Normalization = ProbeNormalization.SharedScale }).ToLinear();
        }
        catch (RecyclingException e)
        {
            throw new RecyclingException($"{source}: {e.Message}", e);
        }
    }
}
