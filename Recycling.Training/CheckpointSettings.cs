namespace Recycling.Training;

/// <summary>
/// Where and how often a fine-tuning run saves the state it needs to resume after being killed (docs/training.md,
/// "Checkpoints and resuming"). Rerunning the same run resumes from its checkpoint; a checkpoint of another run is not used.
/// </summary>
public sealed record CheckpointSettings
{
    /// <summary>How often the default saves between epoch ends: every this much training time.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromMinutes(5);

    /// <summary>False: no checkpoint is read or written.</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>The folder holding the checkpoint; null: the output's path with ".ckpt" appended, beside it.</summary>
    public string? Folder { get; init; }

    /// <summary>Save every this many optimizer steps as well as at every epoch end (0: only at epoch ends); null: every <see cref="DefaultInterval"/> of training.</summary>
    public int? EverySteps { get; init; }

    /// <summary>Start from the beginning even when a checkpoint of this run exists (it is then replaced).</summary>
    public bool Restart { get; init; }

    /// <summary>Leave the checkpoint in place after the run succeeds (by default it is removed).</summary>
    public bool KeepAfterSuccess { get; init; }
}
