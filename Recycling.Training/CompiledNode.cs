using Recycling.Onnx.Proto;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>One graph node compiled to a TorchSharp call; it owns the constant tensors its attributes held.</summary>
internal sealed record CompiledNode(NodeProto Proto, string Label, OpSpec Spec, OpRun Run, List<Tensor> Owned) : IDisposable
{
    /// <summary>The values the node reads, in ONNX order: its inputs, but for running statistics split from a parameter.</summary>
    public required IReadOnlyList<string> Inputs { get; init; }

    /// <summary>Whether the node is the standard-domain op <paramref name="opType"/>.</summary>
    public bool Is(string opType) => Proto.OpType == opType && OpRegistry.NormalizeDomain(Proto.Domain).Length == 0;

    public void Dispose() => Owned.ForEach(t => t.Dispose());
}
