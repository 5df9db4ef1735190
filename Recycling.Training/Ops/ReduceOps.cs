using static TorchSharp.torch;

namespace Recycling.Training.Ops;

/// <summary>Reduce ops: axes an attribute until ReduceSum 13 and the others 18, an optional input after.</summary>
internal static class ReduceOps
{
    private static readonly (string Op, Func<Tensor, long[], bool, Tensor> Reduce)[] All =
    [
        ("ReduceMean", (x, axes, keep) => x.mean(axes, keep)),
        ("ReduceSum", (x, axes, keep) => x.sum(axes, keep)),
        ("ReduceMax", (x, axes, keep) => x.amax(axes, keep)),
        ("ReduceMin", (x, axes, keep) => x.amin(axes, keep)),
        ("ReduceProd", (x, axes, keep) => axes.OrderDescending().Aggregate(x, (t, a) => t.prod(a, keep))),
        ("ReduceSumSquare", (x, axes, keep) => (x * x).sum(axes, keep)),
        ("ReduceL1", (x, axes, keep) => x.abs().sum(axes, keep)),
        ("ReduceL2", (x, axes, keep) => (x * x).sum(axes, keep).sqrt()),
        ("ReduceLogSumExp", (x, axes, keep) => axes.OrderDescending().Aggregate(x, (t, a) => t.logsumexp(a, keep))),
    ];

    public static IEnumerable<OpSpec> Specs()
    {
        foreach (var (op, reduce) in All)
        {
            yield return new OpSpec("", op, 1, a =>
            {
                var axes = a.Ints("axes");
                var keep = a.Int("keepdims", 1) != 0;
                return (_, i) => [Run(reduce, i[0]!, axes, keep, noopWithEmptyAxes: false)];
            });
            yield return new OpSpec("", op, op == "ReduceSum" ? 13 : 18, a =>
            {
                var keep = a.Int("keepdims", 1) != 0;
                var noop = a.Int("noop_with_empty_axes", 0) != 0;
                return (_, i) => [Run(reduce, i[0]!, OpHelpers.OptionalLongs(i, 1), keep, noop)];
            }, OpSpec.ConstantFrom(1));
        }
    }

    private static Tensor Run(Func<Tensor, long[], bool, Tensor> reduce, Tensor x, long[]? axes, bool keep, bool noopWithEmptyAxes)
    {
        if (axes is null || axes.Length == 0)
        {
            if (noopWithEmptyAxes)
            {
                return x.alias();
            }

            axes = [.. Enumerable.Range(0, (int)x.dim()).Select(v => (long)v)];
        }

        return reduce(x, [.. axes.Select(a => OpHelpers.Axis(a, x.dim()))], keep);
    }
}
