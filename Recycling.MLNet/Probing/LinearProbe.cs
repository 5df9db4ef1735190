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

/// <summary>How features are normalised before the probe (fitted on the training features, folded back by <see cref="LinearProbe.ToLinear"/>).</summary>
public enum ProbeNormalization
{
    /// <summary>(x − mean) / std (NormalizeMeanVariance without fixZero).</summary>
    MeanVariance,

    /// <summary>Scaled into [0, 1] by the training minimum and maximum (NormalizeMinMax).</summary>
    MinMax,

    None,

    /// <summary>
    /// (x − mean) / s with one scale s shared by all features: the root-mean-square of their standard deviations.
    /// Unlike <see cref="MeanVariance"/>, which multiplies each feature's weight by 1/std without bound for a feature
    /// that hardly varies, the L2 penalty then bounds every weight on the raw features, and a feature that does not
    /// vary gets none. all-MiniLM-L6-v2 has two dead pooled dimensions (they vary by 1e-32): a standardised probe gave
    /// them weights of 7e30, and a head initialised from it sent fine-tuning's logits to 1e26.
    /// </summary>
    SharedScale,
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
    private readonly SharedScaling? _shared;

    private LinearProbe(MLContext ml, ITransformer model, SharedScaling? shared, int featureCount, int classCount)
    {
        _ml = ml;
        _model = model;
        _shared = shared;
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
        var shared = options.Normalization == ProbeNormalization.SharedScale ? SharedScaling.Fit(features) : null;
        var data = ToDataView(ml, shared?.Apply(features) ?? features, labels, classCount);
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
        return new LinearProbe(ml, model, shared, features.Columns, classCount);
    }

    /// <summary>Class probabilities for each row of <paramref name="features"/>.</summary>
    public FloatMatrix Predict(FloatMatrix features)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.Columns != FeatureCount)
        {
            throw new RecyclingException($"the probe was trained on {FeatureCount} features, got {features.Columns}");
        }

        var scored = _model.Transform(ToDataView(_ml, _shared?.Apply(features) ?? features, new int[features.Rows], ClassCount));
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
    /// the normaliser's affine map (x − offset)·scale, or (x − mean) / s of <see cref="ProbeNormalization.SharedScale"/>,
    /// folded into W and b. W is row-major [classes, features].
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
                var w = _shared is { } shared ? row[j] / shared.Scale : row[j] * scale[j];
                weight[k * features + j] = (float)w;
                shift -= w * (_shared?.Mean[j] ?? offset[j]);
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

    /// <summary>The centring and the one scale of <see cref="ProbeNormalization.SharedScale"/>, accumulated in double.</summary>
    private sealed record SharedScaling(double[] Mean, double Scale)
    {
        public static SharedScaling Fit(FloatMatrix features)
        {
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
                throw new RecyclingException("the features a probe is fitted on are not all finite");
            }

            var scale = Math.Sqrt(squares / ((double)rows * columns));
            return new SharedScaling(mean, scale > 0 ? scale : 1); // 1: every feature is constant, the probe can only learn the class frequencies, in the bias
        }

        public FloatMatrix Apply(FloatMatrix features)
        {
            var (rows, columns) = (features.Rows, features.Columns);
            var values = features.Data;
            var scaled = new float[values.Length];
            for (var r = 0; r < rows; r++)
            {
                for (var j = 0; j < columns; j++)
                {
                    scaled[(r * columns) + j] = (float)((values[(r * columns) + j] - Mean[j]) / Scale);
                }
            }

            return new FloatMatrix(rows, columns, scaled);
        }
    }

    /// <summary>One training row. LoadFromEnumerable takes key values 0-based (class index) and stores them 1-based.</summary>
    internal sealed class ProbeRow
    {
        public uint Label { get; set; }

        public float[] Features { get; set; } = [];
    }
}
