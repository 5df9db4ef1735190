using TorchSharp;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>Gemm (opset 7 on: unidirectional broadcasting of C), MatMul and Einsum.</summary>
internal static class LinearOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return new OpSpec("", "Gemm", 7, a =>
        {
            double alpha = a.Float("alpha", 1f), beta = a.Float("beta", 1f);
            bool transA = a.Int("transA", 0) != 0, transB = a.Int("transB", 0) != 0;
            return (_, i) =>
            {
                var x = transA ? i[0]!.t() : i[0]!;
                var c = i.Length > 2 ? i[2] : null;
                if (transB && alpha == 1 && beta == 1 && (c is null || c.dim() == 1))
                {
                    return [F.linear(x, i[1]!, c)];
                }

                var y = x.matmul(transB ? i[1]!.t() : i[1]!);
                if (alpha != 1)
                {
                    y = y.Times(alpha);
                }

                return [c is null ? y : beta == 1 ? y.Plus(c) : y.Plus(c.Times(beta))];
            };
        });
        yield return new OpSpec("", "MatMul", 1, _ => (_, i) => [i[0]!.matmul(i[1]!)]);
        yield return new OpSpec("", "Einsum", 12, a =>
        {
            var equation = a.String("equation", "").Replace(" ", "", StringComparison.Ordinal);
            return equation.Length == 0 ? throw a.Unsupported("empty equation") : (_, i) => [torch.einsum(equation, [.. i.Select(t => t!)])];
        });
    }
}
