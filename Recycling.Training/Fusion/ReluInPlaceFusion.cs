using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Fusion;

/// <summary>
/// Relu applied in place to its input, as PyTorch's nn.ReLU(inplace=True), where that is safe: the input is made by a
/// Conv, Gemm, MatMul, Add or BatchNormalization (a fresh tensor, and their backward reads their inputs, never their
/// output), Relu is its only reader, and it is no graph output (a call that asks for it runs the nodes as written).
/// Relu's backward reads its result in either form, so values and gradients are the same bits; the step allocates and
/// writes one activation fewer per ReLU. Sigmoid, Tanh, Exp or Softmax keep their output for their backward: never
/// with those.
/// </summary>
internal sealed class ReluInPlaceFusion : IFusionRule
{
    private static readonly string[] Producers = ["Conv", "Gemm", "MatMul", "Add", "BatchNormalization"];

    public FusionMatch? Match(FusionGraph graph, int anchor)
    {
        var relu = graph[anchor];
        if (!relu.Is("Relu") || relu.Inputs.Count != 1 || PoolBeforeReluFusion.Takes(graph, graph.Reader(relu.Proto.Output[0])))
        {
            return null;
        }

        var producer = Producer(graph, relu);
        if (producer < 0)
        {
            return null;
        }

        var node = graph[producer];
        return new FusionMatch(node.Proto.OpType + "Relu", [producer, anchor], [.. node.Inputs], (context, i) => InPlace(node.Run(context, i)));
    }

    /// <summary>The node that makes the Relu's input for it alone when it is one whose result may be rectified in place; else -1.</summary>
    public static int Producer(FusionGraph graph, CompiledNode relu) =>
        Producers.Select(op => graph.Private(relu.Inputs[0], op)).FirstOrDefault(p => p >= 0, -1);

    /// <summary>The producer's result rectified in place; out of place where it is not floating or is a leaf that trains
    /// (autograd forbids writing to it).</summary>
    public static Tensor InPlace(Tensor[] produced)
    {
        var y = produced[0];
        return y.is_floating_point() && !(y.is_leaf && y.requires_grad) ? y.relu_() : F.relu(y);
    }
}
