using System.Globalization;
using Recycling.Onnx;

namespace Recycling.Training;

/// <summary>How a new head's weights start.</summary>
public enum HeadInit
{
    Zeros,

    /// <summary>PyTorch's nn.Linear default: W and b uniform in ±1/sqrt(features), from the run's seed.</summary>
    Random,

    /// <summary>A linear probe (ML.NET) fitted on the frozen features at the cut over the training data: LP-FT.</summary>
    Probe,
}

/// <summary>
/// A new K-way linear head: the graph is cut at the value <see cref="At"/> (default: the output "features", else the
/// only output), that value is flattened per sample and a linear layer with output "logits" is attached.
/// </summary>
public sealed record HeadSpec
{
    /// <summary>Null: the training labels' class count (largest label + 1).</summary>
    public int? Classes { get; init; }

    /// <summary>The value the head reads: a graph output or any internal value; null: "features", else the only output.</summary>
    public string? At { get; init; }

    public HeadInit Init { get; init; } = HeadInit.Zeros;

    /// <summary>L2 strength of the <see cref="HeadInit.Probe"/> fit (<see cref="HeadProbe"/>: on centred features divided by one shared scale); null: the probe's default, 1e-3.</summary>
    public double? ProbeL2 { get; init; }

    /// <summary>Parses the CLI's <c>--head new:K</c> or <c>--head probe</c> (K then taken from the data's labels) with <c>--head-init</c>.</summary>
    public static HeadSpec Parse(string head, string? at, string? init)
    {
        ArgumentNullException.ThrowIfNull(head);
        if (head == "probe")
        {
            if (init is not null && init != "probe")
            {
                throw new RecyclingException($"--head probe fits the head by a linear probe; --head-init {init} contradicts it");
            }

            return new HeadSpec { At = at, Init = HeadInit.Probe };
        }

        if (!head.StartsWith("new:", StringComparison.Ordinal) || !int.TryParse(head.AsSpan(4), NumberStyles.None, CultureInfo.InvariantCulture, out var classes) || classes is < 2 or > MaxClasses)
        {
            throw new RecyclingException($"--head {head}: use new:K (K classes, 2..{MaxClasses}) or probe");
        }

        return new HeadSpec
        {
            Classes = classes,
            At = at,
            Init = (init ?? "zeros") switch
            {
                "zeros" => HeadInit.Zeros,
                "random" => HeadInit.Random,
                "probe" => HeadInit.Probe,
                var other => throw new RecyclingException($"--head-init {other}: use zeros, random or probe"),
            },
        };
    }

    /// <summary>The most classes a head has (the probe's limit).</summary>
    public const int MaxClasses = Recycling.MLNet.Probing.LinearProbe.MaxClasses;
}
