using System.Globalization;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>How a parameter's value is written in a flag or a YAML config.</summary>
internal enum ParameterKind
{
    Number,

    /// <summary>true/false (1/0).</summary>
    Boolean,

    /// <summary>One of <see cref="MethodParameter.Choices"/> by name, stored as its number.</summary>
    Choice,
}

/// <summary>
/// One parameter of a merge method, as mergekit names it (<c>weight</c>, <c>density</c>, <c>lambda</c>, <c>t</c> ...):
/// its default, valid range, and whether each model may have its own value (mergekit's tensor parameters).
/// Values are doubles: booleans are 1/0, choices their number.
/// </summary>
internal sealed record MethodParameter(string Name, double Default, string Description)
{
    public ParameterKind Kind { get; init; } = ParameterKind.Number;

    /// <summary>True when each model may have its own value (mergekit's per-model <c>parameters:</c>).</summary>
    public bool PerModel { get; init; }

    public double Min { get; init; } = double.NegativeInfinity;

    public double Max { get; init; } = double.PositiveInfinity;

    public bool MinExclusive { get; init; }

    public bool MaxExclusive { get; init; }

    /// <summary>For <see cref="ParameterKind.Choice"/>: name → value (the first name of a value is how it is shown).</summary>
    public IReadOnlyList<KeyValuePair<string, double>> Choices { get; init; } = [];

    /// <summary>The range as text, e.g. "(0, 1]", "true|false", "per_tensor|global".</summary>
    public string Range => Kind switch
    {
        ParameterKind.Boolean => "true|false",
        ParameterKind.Choice => string.Join("|", Choices.Select(c => c.Value).Distinct().Select(FormatChoice)),
        _ when double.IsNegativeInfinity(Min) && double.IsPositiveInfinity(Max) => "any finite number",
        _ => string.Create(CultureInfo.InvariantCulture,
            $"{(MinExclusive ? "(" : "[")}{Show(Min)}, {Show(Max)}{(MaxExclusive ? ")" : "]")}"),
    };

    private static string Show(double v) => double.IsInfinity(v) ? (v > 0 ? "∞" : "−∞") : v.ToString(CultureInfo.InvariantCulture);

    /// <summary>Parses a flag or YAML value ("0.2", "true", "global"); the message names <paramref name="where"/>.</summary>
    public double Parse(string text, string where)
    {
        var trimmed = text.Trim();
        switch (Kind)
        {
            case ParameterKind.Boolean:
                return trimmed.ToLowerInvariant() switch
                {
                    "true" or "1" or "yes" => 1,
                    "false" or "0" or "no" => 0,
                    _ => throw new RecyclingException($"{where}: {Name} is true or false, not {MessageText.Path(trimmed)}"),
                };
            case ParameterKind.Choice:
                foreach (var choice in Choices)
                {
                    if (string.Equals(choice.Key, trimmed, StringComparison.OrdinalIgnoreCase))
                    {
                        return choice.Value;
                    }
                }

                throw new RecyclingException($"{where}: {Name} is one of {Range}, not {MessageText.Path(trimmed)}");
            default:
                if (!double.TryParse(trimmed, NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
                {
                    throw new RecyclingException($"{where}: {Name} must be a number, not {MessageText.Path(trimmed)}");
                }

                Check(value, where);
                return value;
        }
    }

    /// <summary>Throws a <see cref="RecyclingException"/> naming <paramref name="where"/> when <paramref name="value"/> is out of range.</summary>
    public void Check(double value, string where)
    {
        bool ok = Kind switch
        {
            ParameterKind.Boolean => value is 0 or 1,
            ParameterKind.Choice => Choices.Any(c => c.Value == value),
            _ => double.IsFinite(value)
                && (MinExclusive ? value > Min : value >= Min)
                && (MaxExclusive ? value < Max : value <= Max),
        };
        if (!ok)
        {
            throw new RecyclingException(string.Create(CultureInfo.InvariantCulture, $"{where}: {Name} must be in {Range}, not {Format(value)}"));
        }
    }

    /// <summary>The value as a user writes it ("0.2", "true", "global").</summary>
    public string Format(double value) => Kind switch
    {
        ParameterKind.Boolean => value != 0 ? "true" : "false",
        ParameterKind.Choice => FormatChoice(value),
        _ => value.ToString("R", CultureInfo.InvariantCulture),
    };

    private string FormatChoice(double value) =>
        Choices.FirstOrDefault(c => c.Value == value).Key ?? value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>The parameters several methods share, named and bounded as mergekit does; a method takes them as they are or <c>with { Default = ... }</c>.</summary>
internal static class CommonParameters
{
    public static readonly MethodParameter Weight = new("weight", 1, "the model's weight")
    {
        PerModel = true,
    };

    /// <summary>mergekit's default 1 keeps every entry; the TIES paper used 0.2, DARE's 0.1 (drop rate 0.9).</summary>
    public static readonly MethodParameter Density = new("density", 1, "fraction of each task vector's entries kept")
    {
        PerModel = true, Min = 0, Max = 1,
    };

    public static readonly MethodParameter Lambda = new("lambda", 1, "scale of the combined task vector");

    public static readonly MethodParameter Normalize = new("normalize", 1, "divide by the sum of the weights") { Kind = ParameterKind.Boolean };

    /// <summary>How entries kept by a random drop are rescaled.</summary>
    public static readonly MethodParameter Rescale = new("rescale", RescaleModes.L1, "rescale after a random drop: true (L1, keep each tensor's L1 norm: mergekit), inverse (1/density: DARE paper, PEFT), false")
    {
        Kind = ParameterKind.Choice,
        Choices = [new("true", RescaleModes.L1), new("l1", RescaleModes.L1), new("inverse", RescaleModes.Inverse), new("peft", RescaleModes.Inverse), new("false", RescaleModes.None), new("none", RescaleModes.None)],
    };

    /// <summary>Seed of our counter-based random masks (mergekit draws from torch's global generator instead).</summary>
    public static readonly MethodParameter Seed = new("seed", 0, "seed of the random masks") { Min = 0, Max = (double)(1UL << 53) };

    /// <summary>TIES trim scope: mergekit trims each tensor, the paper the whole model.</summary>
    public static readonly MethodParameter Trim = new("trim", TrimModes.PerTensor, "TIES magnitude trim over each tensor (mergekit) or the whole model (the paper)")
    {
        Kind = ParameterKind.Choice,
        Choices = [new("per_tensor", TrimModes.PerTensor), new("per-tensor", TrimModes.PerTensor), new("global", TrimModes.Global)],
    };

    public static readonly MethodParameter T = new("t", 0.5, "interpolation factor (0 = base model)");

    /// <summary>mergekit's <c>int8_mask</c>: a memory saving of its own; accepted and ignored (our masks are never stored).</summary>
    public static readonly MethodParameter Int8Mask = new("int8_mask", 0, "accepted for mergekit configs; no effect") { Kind = ParameterKind.Boolean };
}

/// <summary>Values of <see cref="CommonParameters.Rescale"/>.</summary>
internal static class RescaleModes
{
    public const double None = 0;
    public const double L1 = 1;
    public const double Inverse = 2;
}

/// <summary>Values of <see cref="CommonParameters.Trim"/>.</summary>
internal static class TrimModes
{
    public const double PerTensor = 0;
    public const double Global = 1;
}
