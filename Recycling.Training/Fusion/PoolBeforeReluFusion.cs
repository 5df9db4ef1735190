using Recycling.Training.Ops;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Fusion;

/// <summary>
/// Relu followed by a 2×2 MaxPool of stride 2 run as MaxPool, then Relu in place on the pooled values (with the node
/// that made the Relu's input, where <see cref="ReluInPlaceFusion"/> would have taken it): ReLU is non-decreasing, so
/// the two commute, and the ReLU touches a quarter of the values. Only where the pool runs as
/// <see cref="MaxPoolGathered"/>: LibTorch's pool scans with data-dependent branches and was slower on the
/// un-rectified values (the zoo CNN's step with default kernels 0.86× as fast), so elsewhere the nodes run in their
/// order, the Relu in place as <see cref="ReluInPlaceFusion"/> runs it. The same bits forward (up to the sign of a zero:
/// a window whose maximum is −0) and backward: where the window's maximum is positive both orders pick the same first
/// maximum, where it is NaN the same last NaN (ReLU keeps NaN and lets its gradient through), and elsewhere both give
/// zeros. The Relu must be read by the pool alone; a MaxPool asked for its indices is left as written.
/// </summary>
internal sealed class PoolBeforeReluFusion : IFusionRule
{
    public FusionMatch? Match(FusionGraph graph, int anchor)
    {
        if (!Takes(graph, anchor))
        {
            return null;
        }

        var pool = graph[anchor];
        var ceil = pool.Proto.Attribute.Any(a => a.Name == "ceil_mode" && a.I != 0);
        var relu = graph.Private(pool.Inputs[0], "Relu");
        var producer = ReluInPlaceFusion.Producer(graph, graph[relu]);
        Tensor Pooled(OpContext context, Tensor x, bool fresh) => MaxPoolGathered.Fits(x, ceil)
            ? ReluInPlaceFusion.InPlace(pool.Run(context, [x]))
            : pool.Run(context, [fresh ? ReluInPlaceFusion.InPlace([x]) : F.relu(x)])[0];
        if (producer < 0)
        {
            return new FusionMatch("MaxPoolRelu", [relu, anchor], [graph[relu].Inputs[0]], (context, i) => Pooled(context, i[0]!, fresh: false));
        }

        var node = graph[producer];
        return new FusionMatch(node.Proto.OpType + "MaxPoolRelu", [producer, relu, anchor], [.. node.Inputs], (context, i) => Pooled(context, node.Run(context, i)[0], fresh: true));
    }

    /// <summary>Whether node <paramref name="pool"/> is a 2×2 MaxPool of stride 2 (values only, no padding or dilation) of a Relu's value that nothing else reads.</summary>
    public static bool Takes(FusionGraph graph, int pool)
    {
        if (pool < 0 || graph[pool] is not { } node || !node.Is("MaxPool") || node.Inputs.Count != 1 || node.Proto.Output is not [{ Length: > 0 }])
        {
            return false;
        }

        long[]? Ints(string name) => node.Proto.Attribute.FirstOrDefault(a => a.Name == name)?.Ints.ToArray();
        var autoPad = node.Proto.Attribute.FirstOrDefault(a => a.Name == "auto_pad")?.S.ToStringUtf8() ?? "NOTSET";
        return Ints("kernel_shape") is [2, 2] && Ints("strides") is [2, 2] && Ints("pads") is null or [0, 0, 0, 0]
            && Ints("dilations") is null or [1, 1] && autoPad is "NOTSET" or "VALID" && node.Proto.Attribute.All(a => a.Name != "storage_order" || a.I == 0)
            && graph.Private(node.Inputs[0], "Relu") is >= 0 and var relu && graph[relu].Inputs.Count == 1;
    }
}
