using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers;
using Microsoft.ML.Transforms;
using Recycling.MLNet.Inference;
using Recycling.Onnx;

namespace Recycling.MLNet.Probing;

/// <summary>The ML.NET multiclass trainer a probe uses.</summary>
public enum ProbeTrainer
{
    /// <summary>Multinomial logistic regression by L-BFGS (ML.NET LbfgsMaximumEntropy).</summary>
    Lbfgs,

    /// <summary>Multinomial logistic regression by stochastic dual coordinate ascent (ML.NET SdcaMaximumEntropy).</summary>
    Sdca,
}

/// <summary>How features are normalised before the probe (ML.NET normalizers, fitted on the training features).</summary>
public enum ProbeNormalization
{
    /// <summary>(x − mean) / std (NormalizeMeanVariance without fixZero).</summary>
    MeanVariance,

    /// <summary>Scaled into [0, 1] by the training minimum and maximum (NormalizeMinMax).</summary>
    MinMax,

    None,
}

public sealed record ProbeOptions
{
    public ProbeTrainer Trainer { get; init; } = ProbeTrainer.Lbfgs;

    public ProbeNormalization Normalization { get; init; } = ProbeNormalization.MeanVariance;

    /// <summary>
    /// L2 strength per training sample: the objective is mean cross-entropy + L2/2·‖W‖² (bias unpenalised), the zoo
    /// generator's probe. ML.NET's L-BFGS divides its sum objective by the sample count, so it receives L2 × N.
    /// For SDCA it is passed as ML.NET's l2Regularization unchanged.
    /// </summary>
    public double L2 { get; init; } = 1e-3;

    public int MaximumIterations { get; init; } = 1000;

    public int Threads { get; init; } = Environment.ProcessorCount;

    public int Seed { get; init; }
}

/// <summary>
/// A linear probe: an ML.NET multiclass linear classifier trained on frozen features (normaliser + maximum-entropy
/// trainer). <see cref="Predict"/> gives class probabilities, one row per sample, one column per class 0..K−1.
/// </summary>
public sealed class LinearProbe
{
    private readonly MLContext _ml;
    private readonly ITransformer _model;

    private LinearProbe(MLContext ml, ITransformer model, int featureCount, int classCount)
    {
        _ml = ml;
        _model = model;
        FeatureCount = featureCount;
        ClassCount = classCount;
    }

    /// <summary>
    /// The most classes a probe trains (labels 0..9,999). ML.NET sizes its weights, and the metrics their confusion
    /// matrix, by the class count, so one stray label of 2,000,000,000 would ask for gigabytes.
    /// </summary>
    public const int MaxClasses = 10_000;

    public int FeatureCount { get; }

    public int ClassCount { get; }

    public static LinearProbe Train(FloatMatrix features, IReadOnlyList<int> labels, int classCount, ProbeOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(labels);
        options ??= new ProbeOptions();
        if (features.Rows != labels.Count || features.Rows == 0)
        {
            throw new RecyclingException($"a probe needs one label per feature row ({features.Rows} rows, {labels.Count} labels)");
        }

        if (classCount > MaxClasses)
        {
            throw new RecyclingException($"a probe over {classCount} classes: the limit is {MaxClasses} (labels are class indices 0..K-1; remap sparse label ids to dense ones)");
        }

        if (classCount < 2 || labels.Any(l => l < 0 || l >= classCount))
        {
            throw new RecyclingException($"probe labels must be in 0..{classCount - 1}");
        }

        var ml = new MLContext(options.Seed);
        var data = ToDataView(ml, features, labels, classCount);
        var normalise = options.Normalization switch
        {
            ProbeNormalization.MeanVariance => (IEstimator<ITransformer>)ml.Transforms.NormalizeMeanVariance(FeatureColumn, fixZero: false),
            ProbeNormalization.MinMax => ml.Transforms.NormalizeMinMax(FeatureColumn, fixZero: false),
            _ => new EstimatorChain<ITransformer>(),
        };
        IEstimator<ITransformer> trainer = options.Trainer switch
        {
            ProbeTrainer.Lbfgs => ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(new LbfgsMaximumEntropyMulticlassTrainer.Options
            {
                LabelColumnName = LabelColumn,
                FeatureColumnName = FeatureColumn,
                L1Regularization = 0,
                L2Regularization = (float)(options.L2 * features.Rows),
                OptimizationTolerance = 1e-8f,
                HistorySize = 20,
                MaximumNumberOfIterations = options.MaximumIterations,
                NumberOfThreads = options.Threads,
                EnforceNonNegativity = false,
            }),
            _ => ml.MulticlassClassification.Trainers.SdcaMaximumEntropy(new SdcaMaximumEntropyMulticlassTrainer.Options
            {
                LabelColumnName = LabelColumn,
                FeatureColumnName = FeatureColumn,
                L2Regularization = (float)options.L2,
                MaximumNumberOfIterations = options.MaximumIterations,
                NumberOfThreads = options.Threads,
            }),
        };
        var model = normalise.Append(trainer).Fit(data);
        return new LinearProbe(ml, model, features.Columns, classCount);
    }

    /// <summary>Class probabilities for each row of <paramref name="features"/>.</summary>
    public FloatMatrix Predict(FloatMatrix features)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.Columns != FeatureCount)
        {
            throw new RecyclingException($"the probe was trained on {FeatureCount} features, got {features.Columns}");
        }

        var scored = _model.Transform(ToDataView(_ml, features, new int[features.Rows], ClassCount));
        var result = new float[features.Rows * ClassCount];
        int row = 0;
        foreach (var scores in scored.GetColumn<float[]>("Score"))
        {
            if (scores.Length != ClassCount)
            {
                throw new RecyclingException($"the probe returned {scores.Length} scores for {ClassCount} classes");
            }

            scores.CopyTo(result, row * ClassCount);
            row++;
        }

        return new FloatMatrix(features.Rows, ClassCount, result);
    }

    /// <summary>
    /// The probe as one linear map on the raw features: softmax(W·x + b) equals <see cref="Predict"/>'s probabilities,
    /// the normaliser's affine map (x − offset)·scale folded into W and b. W is row-major [classes, features].
    /// </summary>
    internal (float[] Weight, float[] Bias) ToLinear()
    {
        var features = FeatureCount;
        var scale = Enumerable.Repeat(1.0, features).ToArray();
        var offset = new double[features];
        MaximumEntropyModelParameters? classifier = null;
        foreach (var transformer in (IEnumerable<ITransformer>)_model)
        {
            switch (transformer)
            {
                case NormalizingTransformer normalizer when normalizer.GetNormalizerModelParameters(0) is NormalizingTransformer.AffineNormalizerModelParameters<System.Collections.Immutable.ImmutableArray<float>> affine:
                    for (var j = 0; j < features; j++)
                    {
                        scale[j] = affine.Scale[j];
                        offset[j] = affine.Offset.IsDefaultOrEmpty ? 0 : affine.Offset[j];
                    }

                    break;
                case MulticlassPredictionTransformer<MaximumEntropyModelParameters> prediction:
                    classifier = prediction.Model;
                    break;
                default:
                    throw new RecyclingException($"the probe's {transformer.GetType().Name} has no linear form");
            }
        }

        if (classifier is null)
        {
            throw new RecyclingException("the probe has no maximum-entropy classifier");
        }

        VBuffer<float>[] rows = [];
        classifier.GetWeights(ref rows, out var classes);
        var biases = classifier.GetBiases().ToArray();
        if (classes != ClassCount)
        {
            throw new RecyclingException($"the probe has {classes} classes, {ClassCount} expected");
        }

        var weight = new float[ClassCount * features];
        var bias = new float[ClassCount];
        for (var k = 0; k < ClassCount; k++)
        {
            var row = rows[k].DenseValues().ToArray();
            double shift = biases[k];
            for (var j = 0; j < features; j++)
            {
                var w = row[j] * scale[j];
                weight[k * features + j] = (float)w;
                shift -= w * offset[j];
            }

            bias[k] = (float)shift;
        }

        return (weight, bias);
    }

    private const string LabelColumn = "Label";
    private const string FeatureColumn = "Features";

    private static IDataView ToDataView(MLContext ml, FloatMatrix features, IReadOnlyList<int> labels, int classCount)
    {
        var rows = new ProbeRow[features.Rows];
        for (int i = 0; i < rows.Length; i++)
        {
            rows[i] = new ProbeRow { Label = (uint)labels[i], Features = features.Row(i).ToArray() };
        }

        var schema = SchemaDefinition.Create(typeof(ProbeRow));
        schema[FeatureColumn].ColumnType = new VectorDataViewType(NumberDataViewType.Single, features.Columns);
        schema[LabelColumn].ColumnType = new KeyDataViewType(typeof(uint), classCount);
        return ml.Data.LoadFromEnumerable(rows, schema);
    }

    /// <summary>One training row. LoadFromEnumerable takes key values 0-based (class index) and stores them 1-based.</summary>
    internal sealed class ProbeRow
    {
        public uint Label { get; set; }

        public float[] Features { get; set; } = [];
    }
}
