using Recycling.Onnx.Proto;
using Recycling.Training.Fusion;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>
/// Node fusions (<see cref="IFusionRule"/>): chains such as MatMul + Add or the exporters' Erf GELU run as one
/// TorchSharp call. The fused node reads the pattern's inputs and writes its last node's outputs; the values inside
/// the pattern are not computed, so a call that asks for one of them runs the graph as compiled instead.
/// </summary>
internal sealed partial class OnnxProgram
{
    internal const string FusedDomain = "recycling.fused";

    private static readonly IFusionRule[] Rules = [new LinearFusion(), new GeluFusion(), new LayerNormFusion(), new PoolBeforeReluFusion(), new ReluInPlaceFusion()];

    /// <summary>The op type of every fused node, in graph order.</summary>
    internal IReadOnlyList<string> FusedOps => [.. _fused.Nodes.Where(n => n.Proto.Domain == FusedDomain).Select(n => n.Proto.OpType)];

    /// <summary>The nodes with every matched pattern replaced by one fused node; <paramref name="fusedAway"/>: the values no node computes any more.</summary>
    private static List<CompiledNode> Fuse(List<CompiledNode> nodes, IReadOnlyDictionary<string, Tensor> constants, IEnumerable<string> outputs, out HashSet<string> fusedAway)
    {
        var graph = new FusionGraph(nodes, constants, outputs);
        var taken = new bool[nodes.Count];
        var fusedAt = new Dictionary<int, CompiledNode>();
        for (var anchor = 0; anchor < nodes.Count; anchor++)
        {
            foreach (var rule in Rules)
            {
                if (rule.Match(graph, anchor) is { } match && match.Nodes[^1] == anchor && !match.Nodes.Any(n => taken[n]))
                {
                    foreach (var n in match.Nodes)
                    {
                        taken[n] = true;
                    }

                    fusedAt[anchor] = FusedNode(match, [.. match.Nodes.Select(n => nodes[n])]);
                    break;
                }
            }
        }

        fusedAway = new HashSet<string>(StringComparer.Ordinal);
        var fused = new List<CompiledNode>(nodes.Count);
        for (var index = 0; index < nodes.Count; index++)
        {
            if (fusedAt.TryGetValue(index, out var node))
            {
                fused.Add(node);
            }
            else if (taken[index])
            {
                fusedAway.UnionWith(nodes[index].Proto.Output);
            }
            else
            {
                fused.Add(nodes[index]);
            }
        }

        return fused;
    }

    /// <summary>One node for <paramref name="parts"/>: the fast path where it applies, else the parts in order.</summary>
    private static CompiledNode FusedNode(FusionMatch match, CompiledNode[] parts)
    {
        var produced = parts.SelectMany(p => p.Proto.Output).ToHashSet(StringComparer.Ordinal);
        var extra = parts.SelectMany(p => p.Inputs).Where(i => i.Length > 0 && !produced.Contains(i) && !match.Inputs.Contains(i)).Distinct(StringComparer.Ordinal);
        string[] inputs = [.. match.Inputs, .. extra];
        var last = parts[^1];
        var proto = new NodeProto { Name = string.Join("+", parts.Select(p => p.Proto.Name)), OpType = match.OpType, Domain = FusedDomain };
        proto.Input.AddRange(inputs);
        proto.Output.AddRange(last.Proto.Output);
        var label = $"{string.Join(" + ", parts.Select(p => p.Label))} (fused as {match.OpType})";
        OpRun run = (context, args) =>
        {
            if (match.Fast(context, args) is { } result)
            {
                return [result];
            }

            var values = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            for (var k = 0; k < inputs.Length; k++)
            {
                values[inputs[k]] = args[k]!;
            }

            RunNodes(parts, values, context);
            return [.. last.Proto.Output.Select(o => values[o])];
        };
        var spec = new OpSpec(FusedDomain, match.OpType, 1, _ => run);
        return new CompiledNode(proto, label, spec, run, []) { Inputs = inputs };
    }
}
