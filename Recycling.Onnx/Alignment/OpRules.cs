using Recycling.Onnx.Proto;

namespace Recycling.Onnx.Alignment;

/// <summary>How the exporter transformed a weight before storing it, as far as merging cares.</summary>
public enum ParameterTransform
{
    /// <summary>Stored as trained.</summary>
    None,

    /// <summary>A BatchNorm folded into the preceding Conv (eval-mode exports): averaging approximates averaging the originals.</summary>
    FoldedIntoConv,

    /// <summary>Stored transposed by constant folding (MatMul, Gemm): linear, so averaging is exact.</summary>
    Transposed,

    /// <summary>Another constant folded from parameters: averaging is exact only if the folding was linear.</summary>
    FoldedConstant,
}

/// <summary>
/// What alignment and merging know about one operator, keyed by domain, op type and the opset version it holds
/// from. One rule per op, in <see cref="OpRules"/>: add a rule there rather than comparing op names elsewhere.
/// </summary>
internal sealed record OpRule(string Domain, string OpType, int SinceVersion)
{
    /// <summary>Input slots holding BatchNorm running statistics: averaged over the inputs, never merged otherwise.</summary>
    public IReadOnlyList<int> StatisticSlots { get; init; } = [];

    /// <summary>What a folded initializer feeding this op (an exporter-generated name) went through.</summary>
    public ParameterTransform FoldedWeight { get; init; } = ParameterTransform.FoldedConstant;

    /// <summary>Passes its one input through unchanged: an alias of an initializer, not computation.</summary>
    public bool IsIdentity { get; init; }

    /// <summary>Produces a tensor from an attribute (its value is a weight like an initializer's).</summary>
    public bool IsConstant { get; init; }
}

/// <summary>The operator rules (default ONNX domain: "" and "ai.onnx" are the same).</summary>
internal static class OpRules
{
    private static readonly OpRule Default = new("", "", 1);

    private static readonly OpRule[] Rules =
    [
        new("", "BatchNormalization", 1) { StatisticSlots = [3, 4] },
        new("", "Conv", 1) { FoldedWeight = ParameterTransform.FoldedIntoConv },
        new("", "ConvTranspose", 1) { FoldedWeight = ParameterTransform.FoldedIntoConv },
        new("", "MatMul", 1) { FoldedWeight = ParameterTransform.Transposed },
        new("", "Gemm", 1) { FoldedWeight = ParameterTransform.Transposed },
        new("", "Identity", 1) { IsIdentity = true },
        new("", "Constant", 1) { IsConstant = true },
    ];

    /// <summary>The rule of <paramref name="opType"/> in <paramref name="domain"/> at opset <paramref name="version"/> (the latest without one); a rule of no special behaviour when none is known.</summary>
    public static OpRule For(string domain, string opType, int version = int.MaxValue)
    {
        string normalised = domain == "ai.onnx" ? "" : domain;
        return Rules.Where(r => r.Domain == normalised && r.OpType == opType && r.SinceVersion <= version)
            .MaxBy(r => r.SinceVersion) ?? Default;
    }

    public static OpRule For(NodeProto node) => For(node.Domain, node.OpType);
}
