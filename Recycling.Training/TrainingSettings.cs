using Recycling.Training.Ops;

namespace Recycling.Training;

/// <summary>How the learning rate moves over the run's optimizer steps after the warmup (<see cref="LearningRates"/>).</summary>
public enum LearningRateSchedule
{
    Constant,
    Cosine,
    Linear,
}

public enum OptimizerKind
{
    Sgd,
    Adam,
    AdamW,
}

/// <summary>The optimizer and loss settings, with PyTorch's defaults (AdamW's weight decay 0.01, the others' 0).</summary>
public sealed record TrainingSettings
{
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.Sgd;

    public double LearningRate { get; init; } = 0.01;

    /// <summary>SGD momentum.</summary>
    public double Momentum { get; init; }

    public bool Nesterov { get; init; }

    /// <summary>Null: PyTorch's default for the optimizer.</summary>
    public double? WeightDecay { get; init; }

    public double LabelSmoothing { get; init; }

    /// <summary>Clip the global L2 norm of the gradients to this value; null: no clipping.</summary>
    public double? MaxGradNorm { get; init; }

    public LearningRateSchedule Schedule { get; init; } = LearningRateSchedule.Constant;

    /// <summary>Optimizer steps of linear warmup from 0 to <see cref="LearningRate"/> before the schedule.</summary>
    public int WarmupSteps { get; init; }

    public BatchNormMode BatchNorm { get; init; } = BatchNormMode.Train;

    internal double EffectiveWeightDecay => WeightDecay ?? (Optimizer == OptimizerKind.AdamW ? 0.01 : 0);
}
