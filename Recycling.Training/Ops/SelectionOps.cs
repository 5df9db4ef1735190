using TorchSharp;
using static TorchSharp.torch;

namespace Recycling.Training.Ops;

/// <summary>GatherElements, ScatterElements, ScatterND, OneHot, NonZero, TopK: index-driven selection and scatter.</summary>
internal static class SelectionOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return new OpSpec("", "GatherElements", 11, a =>
        {
            var axis = a.Int("axis", 0);
            return (_, i) =>
            {
                var data = i[0]!;
                var dim = OpHelpers.Axis(axis, data.dim());
                using var index = Wrapped(i[1]!, data.shape[dim]);
                return [data.gather(dim, index)];
            };
        }, OpSpec.ConstantFrom(1));
        foreach (var since in new[] { 11, 13, 16, 18 })
        {
            yield return new OpSpec("", "ScatterElements", since, a =>
            {
                var axis = a.Int("axis", 0);
                var reduction = Reduction(a);
                return (_, i) =>
                {
                    var data = i[0]!;
                    var dim = OpHelpers.Axis(axis, data.dim());
                    using var index = Wrapped(i[1]!, data.shape[dim]);
                    return [reduction == "add" ? data.scatter_add(dim, index, i[2]!) : data.scatter(dim, index, i[2]!)];
                };
            }, slot => slot == 1 ? InputRole.Constant : InputRole.Data);
            yield return new OpSpec("", "ScatterND", since, a =>
            {
                var reduction = Reduction(a);
                return (_, i) => [ScatterNd(i[0]!, i[1]!, i[2]!, reduction == "add")];
            }, slot => slot == 1 ? InputRole.Constant : InputRole.Data);
        }

        yield return new OpSpec("", "OneHot", 9, a =>
        {
            var axis = a.Int("axis", -1);
            return (_, i) =>
            {
                var depth = (long)OpHelpers.Scalar(i[1]!);
                var values = i[2]!;
                using var index = Wrapped(i[0]!, depth);
                using var classes = TorchScalars.Range(depth, ScalarType.Int64, index.device);
                using var hot = index.unsqueeze(-1).eq(classes);
                var y = torch.where(hot, values[1], values[0]);
                var dim = OpHelpers.Axis(axis, y.dim());
                return [dim == y.dim() - 1 ? y : y.movedim([y.dim() - 1], [dim])];
            };
        }, OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "NonZero", 9, _ => (_, i) => [i[0]!.nonzero().t().contiguous()]);
        yield return new OpSpec("", "TopK", 1, a =>
        {
            var k = a.Int("k", 1);
            var axis = a.Int("axis", -1);
            return (_, i) => TopK(i[0]!, k, axis, true, true);
        });
        yield return new OpSpec("", "TopK", 10, a =>
        {
            var axis = a.Int("axis", -1);
            return (_, i) => TopK(i[0]!, (long)OpHelpers.Scalar(i[1]!), axis, true, true);
        }, OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "TopK", 11, a =>
        {
            var axis = a.Int("axis", -1);
            bool largest = a.Int("largest", 1) != 0, sorted = a.Int("sorted", 1) != 0;
            return (_, i) => TopK(i[0]!, (long)OpHelpers.Scalar(i[1]!), axis, largest, sorted);
        }, OpSpec.ConstantFrom(1));
    }

    private static string Reduction(NodeAttributes a)
    {
        var reduction = a.String("reduction", "none");
        return reduction is "none" or "add" ? reduction : throw a.Unsupported($"reduction={reduction}");
    }

    /// <summary>Indices as int64 with negative values counted from the end of an axis of <paramref name="size"/>.</summary>
    private static Tensor Wrapped(Tensor index, long size)
    {
        using var raw = index.to(ScalarType.Int64);
        return torch.where(raw.Less(0), raw.Plus(size), raw);
    }

    private static Tensor[] TopK(Tensor x, long k, long axis, bool largest, bool sorted)
    {
        var (values, indices) = x.topk((int)k, (int)OpHelpers.Axis(axis, x.dim()), largest, sorted);
        return [values, indices];
    }

    /// <summary>
    /// ScatterND as index_copy (or index_add) along the flattened leading axes the index tuples address, which keeps
    /// the result differentiable in both the data and the updates.
    /// </summary>
    private static Tensor ScatterNd(Tensor data, Tensor indices, Tensor updates, bool add)
    {
        var depth = (int)indices.shape[^1];
        var leading = data.shape[..depth];
        var rest = data.shape[depth..];
        var strides = new long[depth];
        for (var d = depth - 1; d >= 0; d--)
        {
            strides[d] = d == depth - 1 ? 1 : strides[d + 1] * leading[d + 1];
        }

        using var raw = indices.to(ScalarType.Int64).reshape(-1, depth);
        using var sizes = torch.tensor(leading, device: raw.device);
        using var negative = raw.Less(0);
        using var shifted = raw.Plus(sizes);
        using var wrapped = torch.where(negative, shifted, raw);
        using var weights = torch.tensor(strides, device: raw.device);
        using var linear = (wrapped * weights).sum(1);
        var flat = data.reshape([-1, .. rest]);
        var source = updates.reshape([-1, .. rest]);
        return (add ? flat.IndexAdded(0, linear, source) : flat.index_copy(0, linear, source)).reshape(data.shape);
    }
}
