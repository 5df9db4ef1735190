using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Fusion;

/// <summary>
/// The exact GELU as exporters write it before opset 20, 0.5 · x · (1 + erf(x / √2)): Div (or Mul by 1/√2), Erf,
/// Add 1, and two Muls in any of the orders PyTorch's F.gelu and Hugging Face's <c>x * 0.5 * (1.0 + torch.erf(x /
/// math.sqrt(2.0)))</c> export. One F.gelu call instead of five ops and their backward nodes. The constants must
/// be constants (a trainable scalar keeps the graph as written).
/// </summary>
internal sealed class GeluFusion : IFusionRule
{
    private const double Tolerance = 1e-6;

    public FusionMatch? Match(FusionGraph graph, int anchor)
    {
        var top = graph[anchor];
        if (!top.Is("Mul") || top.Inputs.Count != 2)
        {
            return null;
        }

        for (var side = 0; side < 2; side++)
        {
            string u = top.Inputs[side], v = top.Inputs[1 - side];
            var inner = graph.Private(u, "Mul");
            List<int>? erf;

            // (x · (1 + erf)) · 0.5
            if (inner >= 0 && graph.IsScalar(v, 0.5))
            {
                foreach (var (x, e) in graph.Operands(inner))
                {
                    if ((erf = ErfTerm(graph, e, x)) is not null)
                    {
                        return Fused(graph, x, [.. erf, inner, anchor]);
                    }
                }
            }

            // (x · 0.5) · (1 + erf)
            if (inner >= 0)
            {
                foreach (var (x, half) in graph.Operands(inner))
                {
                    if (graph.IsScalar(half, 0.5) && (erf = ErfTerm(graph, v, x)) is not null)
                    {
                        return Fused(graph, x, [.. erf, inner, anchor]);
                    }
                }
            }

            // x · ((1 + erf) · 0.5)
            var scaled = graph.Private(v, "Mul");
            if (scaled >= 0)
            {
                foreach (var (e, half) in graph.Operands(scaled))
                {
                    if (graph.IsScalar(half, 0.5) && (erf = ErfTerm(graph, e, u)) is not null)
                    {
                        return Fused(graph, u, [.. erf, scaled, anchor]);
                    }
                }
            }
        }

        return null;
    }

    /// <summary>The nodes computing <paramref name="value"/> = 1 + erf(<paramref name="x"/> / √2), or null.</summary>
    private static List<int>? ErfTerm(FusionGraph graph, string value, string x)
    {
        var add = graph.Private(value, "Add");
        if (add < 0)
        {
            return null;
        }

        foreach (var (e, one) in graph.Operands(add))
        {
            var erf = graph.Private(e, "Erf");
            if (erf < 0 || !graph.IsScalar(one, 1))
            {
                continue;
            }

            var scaledInput = graph[erf].Inputs[0];
            var div = graph.Private(scaledInput, "Div");
            if (div >= 0 && graph[div].Inputs.Count == 2 && graph[div].Inputs[0] == x && graph.IsScalar(graph[div].Inputs[1], Math.Sqrt(2), Tolerance))
            {
                return [div, erf, add];
            }

            var mul = graph.Private(scaledInput, "Mul");
            if (mul >= 0 && graph.Operands(mul).Any(p => p.First == x && graph.IsScalar(p.Second, Math.Sqrt(0.5), Tolerance)))
            {
                return [mul, erf, add];
            }
        }

        return null;
    }

    private static FusionMatch Fused(FusionGraph graph, string x, int[] nodes)
    {
        // The constants' type and rank decide the result's type and rank under broadcasting: the fast path applies
        // where they change neither.
        var constants = nodes.SelectMany(n => graph[n].Inputs).Select(graph.Scalar).OfType<Tensor>().ToArray();
        var rank = constants.Max(c => c.dim());
        var types = constants.Select(c => c.dtype).Distinct().ToArray();
        return new FusionMatch("Gelu", [.. nodes.Order()], [x], (_, i) =>
        {
            var input = i[0]!;
            return types.Length == 1 && input.dtype == types[0] && input.dim() >= rank ? F.gelu(input) : null;
        });
    }
}
