namespace Recycling.Training.Fusion;

/// <summary>
/// Relu followed by MaxPool run as MaxPool, then Relu in place on the pooled values (with the node that made the
/// Relu's input, where <see cref="ReluInPlaceFusion"/> would have taken it): ReLU is non-decreasing, so the two
/// commute, and the ReLU touches a quarter of the values after a 2×2 pool. The same bits forward (up to the sign of a
/// zero: a window whose maximum is −0) and backward: where the window's maximum is positive both orders pick the same
/// first maximum, where it is NaN the same last NaN (ReLU keeps NaN and lets its gradient through), and elsewhere
/// both give zeros. The Relu must be the pool's only input and read by nothing else; a MaxPool asked for its
/// indices is left as written.
/// </summary>
internal sealed class PoolBeforeReluFusion : IFusionRule
{
    public FusionMatch? Match(FusionGraph graph, int anchor)
    {
        var pool = graph[anchor];
        if (!Takes(graph, anchor))
        {
            return null;
        }

        var relu = graph.Private(pool.Inputs[0], "Relu");
        var producer = ReluInPlaceFusion.Producer(graph, graph[relu]);
        if (producer < 0)
        {
            return new FusionMatch("MaxPoolRelu", [relu, anchor], [graph[relu].Inputs[0]], (context, i) => ReluInPlaceFusion.InPlace(pool.Run(context, [i[0]])));
        }

        var node = graph[producer];
        return new FusionMatch(node.Proto.OpType + "MaxPoolRelu", [producer, relu, anchor], [.. node.Inputs], (context, i) => ReluInPlaceFusion.InPlace(pool.Run(context, node.Run(context, i))));
    }

    /// <summary>Whether node <paramref name="pool"/> is a MaxPool (values only) of a Relu's value that nothing else reads.</summary>
    public static bool Takes(FusionGraph graph, int pool) =>
        pool >= 0 && graph[pool] is { } node && node.Is("MaxPool") && node.Inputs.Count == 1 && node.Proto.Output.Count(o => o.Length > 0) == 1
        && node.Proto.Output[0].Length > 0 && graph.Private(node.Inputs[0], "Relu") is var relu && relu >= 0 && graph[relu].Inputs.Count == 1;
}
