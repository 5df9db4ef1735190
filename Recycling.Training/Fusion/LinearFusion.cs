using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Fusion;

/// <summary>
/// MatMul(x, W) followed by Add with a bias b: the exporters' nn.Linear on inputs of rank 3 and up (and every
/// Linear of a ViT or BERT export). One addmm call (with the leading axes folded into rows) instead of matmul, add and their
/// two backward nodes. Applies when W is 2-D and b is 1-D of W's output width, all of one floating type.
/// </summary>
internal sealed class LinearFusion : IFusionRule
{
    public FusionMatch? Match(FusionGraph graph, int anchor)
    {
        var add = graph[anchor];
        if (!add.Is("Add") || add.Inputs.Count != 2)
        {
            return null;
        }

        for (var side = 0; side < 2; side++)
        {
            var matmul = graph.Private(add.Inputs[side], "MatMul");
            if (matmul >= 0 && graph[matmul].Inputs.Count == 2)
            {
                return new FusionMatch("Linear", [matmul, anchor], [graph[matmul].Inputs[0], graph[matmul].Inputs[1], add.Inputs[1 - side]], (_, i) => Linear(i[0]!, i[1]!, i[2]!));
            }
        }

        return null;
    }

    private static Tensor? Linear(Tensor x, Tensor w, Tensor b)
    {
        var (shape, weight, bias) = (x.shape, w.shape, b.shape);
        var applies = weight.Length == 2 && bias.Length == 1 && shape.Length >= 1 && bias[0] == weight[1] && shape[^1] == weight[0]
            && x.is_floating_point() && x.dtype == w.dtype && b.dtype == w.dtype;
        if (!applies)
        {
            return null;
        }

        // addmm reads W as the exporter stores it ([in, out]); F.linear would want Wᵀ: one transpose more each way.
        if (shape.Length == 1)
        {
            return F.linear(x, w.t(), b);
        }

        var rows = shape.Length == 2 ? x : x.reshape(-1, shape[^1]);
        var y = addmm(b, rows, w, 1f, 1f);
        return shape.Length == 2 ? y : y.reshape([.. shape[..^1], weight[1]]);
    }
}
