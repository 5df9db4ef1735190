using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.Onnx;

namespace Recycling.MLNet.Probing;

/// <summary>A probe's results: metrics on the training split and on each evaluation split.</summary>
public sealed record ProbeResult(string Model, ClassificationMetrics Train, IReadOnlyDictionary<string, ClassificationMetrics> Evaluations);

/// <summary>Trains a linear probe on a model's frozen features and evaluates it.</summary>
public static class ProbeEvaluation
{
    /// <summary>
    /// Fits a probe on <paramref name="extract"/>(train) and evaluates it on each of <paramref name="evaluate"/>.
    /// <paramref name="extract"/> turns a data set into feature rows (e.g. an <see cref="OnnxScorer"/> to "features").
    /// </summary>
    public static ProbeResult Run(string model, Func<Dataset, FloatMatrix> extract, Dataset train, IReadOnlyList<Dataset> evaluate, ProbeOptions? options = null, int? classCount = null)
    {
        ArgumentNullException.ThrowIfNull(extract);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(evaluate);
        foreach (var data in evaluate.Prepend(train).Where(d => d.ClassCount > LinearProbe.MaxClasses))
        {
            throw new RecyclingException(
                $"{data.Name}: label {data.ClassCount - 1} is over the probe's limit of {LinearProbe.MaxClasses - 1} (labels are class indices 0..K-1; remap sparse label ids to dense ones)");
        }

        int classes = classCount ?? Math.Max(train.ClassCount, evaluate.Select(d => d.ClassCount).DefaultIfEmpty(0).Max());
        var trainFeatures = extract(train);
        var probe = LinearProbe.Train(trainFeatures, train.Labels, classes, options);
        var trainMetrics = ClassificationMetrics.FromProbabilities(probe.Predict(trainFeatures), train.Labels, train.Domains);
        var results = new Dictionary<string, ClassificationMetrics>(StringComparer.Ordinal);
        foreach (var data in evaluate)
        {
            results[data.Name] = ClassificationMetrics.FromProbabilities(probe.Predict(extract(data)), data.Labels, data.Domains);
        }

        return new ProbeResult(model, trainMetrics, results);
    }
}
