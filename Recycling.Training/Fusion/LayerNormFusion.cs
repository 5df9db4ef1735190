using Recycling.Training.Ops;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Fusion;

/// <summary>
/// Layer normalisation as exporters write it before LayerNormalization existed (opset 17): ReduceMean, Sub, Pow 2,
/// ReduceMean, Add ε, Sqrt, Div, Mul γ, Add β over the last axis (PyTorch's nn.LayerNorm and BERT exports at opset
/// 16 and below). One F.layer_norm call instead of nine ops and their backward nodes. Applies where both means run
/// over the same last axis with kept dimensions and γ, β are 1-D of that axis' size, all of one floating type.
/// </summary>
internal sealed class LayerNormFusion : IFusionRule
{
    public FusionMatch? Match(FusionGraph graph, int anchor)
    {
        var shift = graph[anchor];
        if (!shift.Is("Add") || shift.Inputs.Count != 2)
        {
            return null;
        }

        foreach (var (scaledValue, beta) in graph.Operands(anchor))
        {
            var scale = graph.Private(scaledValue, "Mul");
            foreach (var (normalizedValue, gamma) in graph.Operands(scale))
            {
                var div = graph.Private(normalizedValue, "Div");
                if (div < 0 || graph[div].Inputs.Count != 2)
                {
                    continue;
                }

                var (centred, deviation) = (graph[div].Inputs[0], graph[div].Inputs[1]);
                var sqrt = graph.Private(deviation, "Sqrt");
                var addEps = sqrt < 0 ? -1 : graph.Private(graph[sqrt].Inputs[0], "Add");
                foreach (var (varianceValue, epsValue) in graph.Operands(addEps))
                {
                    var variance = graph.Private(varianceValue, "ReduceMean");
                    var pow = variance < 0 ? -1 : graph.Private(graph[variance].Inputs[0], "Pow");
                    var sub = graph.Reads(centred) == 2 ? graph.Producer(centred, "Sub") : -1;
                    if (graph.Scalar(epsValue) is not { } eps || pow < 0 || sub < 0 || graph[pow].Inputs[0] != centred || !graph.IsScalar(graph[pow].Inputs[1], 2)
                        || graph[sub].Inputs.Count != 2)
                    {
                        continue;
                    }

                    var (x, meanValue) = (graph[sub].Inputs[0], graph[sub].Inputs[1]);
                    var mean = graph.Private(meanValue, "ReduceMean");
                    if (mean < 0 || graph[mean].Inputs[0] != x || Axis(graph, mean) is not { } axis || Axis(graph, variance) != axis)
                    {
                        continue;
                    }

                    var epsilon = OpHelpers.Scalar(eps);
                    int[] nodes = [mean, sub, pow, variance, addEps, sqrt, div, scale, anchor];
                    return new FusionMatch("LayerNorm", [.. nodes.Order()], [x, gamma, beta], (_, i) => LayerNorm(i[0]!, i[1]!, i[2]!, axis, epsilon));
                }
            }
        }

        return null;
    }

    /// <summary>The one axis a ReduceMean keeping dimensions averages over (an attribute, or a constant input from opset 18), or null.</summary>
    private static long? Axis(FusionGraph graph, int node)
    {
        var proto = graph[node].Proto;
        if (proto.Attribute.FirstOrDefault(a => a.Name == "keepdims") is { I: 0 } || proto.Attribute.Any(a => a.Name == "noop_with_empty_axes" && a.I != 0))
        {
            return null;
        }

        var axes = proto.Attribute.FirstOrDefault(a => a.Name == "axes")?.Ints.ToArray()
            ?? (graph[node].Inputs.Count > 1 && graph.Constant(graph[node].Inputs[1]) is { } t && !t.is_floating_point() ? OpHelpers.Longs(t) : null);
        return axes is [var axis] ? axis : null;
    }

    private static Tensor? LayerNorm(Tensor x, Tensor gamma, Tensor beta, long axis, double epsilon)
    {
        var width = x.dim() > 0 ? x.shape[^1] : -1;
        var applies = x.dim() > 0 && OpHelpers.Axis(axis, x.dim()) == x.dim() - 1 && x.is_floating_point() && gamma.dtype == x.dtype && beta.dtype == x.dtype
            && gamma.shape.SequenceEqual([width]) && beta.shape.SequenceEqual([width]);
        return applies ? F.layer_norm(x, [width], gamma, beta, epsilon) : null;
    }
}
