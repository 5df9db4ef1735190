namespace Recycling.Training.Ops;

/// <summary>
/// Every converter, keyed by (domain, op type, since-version). A node resolves to the converter with the highest
/// since-version not above the model's opset for its domain, as onnx2torch resolves them.
/// </summary>
internal static class OpRegistry
{
    private static readonly Dictionary<(string Domain, string OpType), OpSpec[]> Specs =
        ElementwiseOps.Specs().Concat(ClipOps.Specs()).Concat(ConvOps.Specs()).Concat(PoolOps.Specs()).Concat(NormalizationOps.Specs())
            .Concat(LinearOps.Specs()).Concat(ShapeOps.Specs()).Concat(IndexingOps.Specs()).Concat(MiscOps.Specs()).Concat(ReduceOps.Specs())
            .Concat(ResizeOps.Specs()).Concat(ConvTransposeOps.Specs()).Concat(SelectionOps.Specs())
            .GroupBy(s => (s.Domain, s.OpType))
            .ToDictionary(g => g.Key, g => g.OrderByDescending(s => s.SinceVersion).ToArray());

    public static string NormalizeDomain(string domain) => domain == "ai.onnx" ? "" : domain;

    /// <summary>The converter for <paramref name="opType"/> at <paramref name="opset"/>, or null when none covers it.</summary>
    public static OpSpec? Resolve(string domain, string opType, long opset) =>
        Specs.TryGetValue((NormalizeDomain(domain), opType), out var versions) ? versions.FirstOrDefault(s => s.SinceVersion <= opset) : null;
}
