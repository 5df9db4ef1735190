using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>Gather, Slice (starts/ends as inputs from 10), Split (split as input from 13), Pad (pads as input from 11), Trilu, CumSum.</summary>
internal static class IndexingOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return new OpSpec("", "Gather", 1, a =>
        {
            var axis = a.Int("axis", 0);
            return (_, i) =>
            {
                var data = i[0]!;
                var dim = OpHelpers.Axis(axis, data.dim());
                if (i[1]!.dim() == 0 && i[1]!.dtype is ScalarType.Int64 or ScalarType.Int32)
                {
                    // One index (a ViT's class token, a Shape chain's dimension): a view, as x[:, 0] is.
                    var index = i[1]!.dtype == ScalarType.Int64 ? i[1]!.item<long>() : i[1]!.item<int>();
                    var size = data.shape[dim];
                    return [data.select(dim, index < 0 ? index + size : index)];
                }

                using var raw = i[1]!.to(ScalarType.Int64);
                using var negative = raw.Less(0);
                using var shifted = raw.Plus(data.shape[dim]);
                using var indices = torch.where(negative, shifted, raw);
                var picked = data.index_select(dim, indices.flatten());
                return [picked.reshape([.. data.shape[..(int)dim], .. indices.shape, .. data.shape[((int)dim + 1)..]])];
            };
        }, slot => slot == 1 ? InputRole.Constant : InputRole.Data);
        yield return new OpSpec("", "Slice", 1, a =>
        {
            var starts = a.Ints("starts") ?? throw a.Unsupported("starts missing");
            var ends = a.Ints("ends") ?? throw a.Unsupported("ends missing");
            var axes = a.Ints("axes");
            return (_, i) => [Slice(i[0]!, starts, ends, axes, null)];
        });
        yield return new OpSpec("", "Slice", 10, _ => (_, i) =>
            [Slice(i[0]!, OpHelpers.Longs(i[1]!), OpHelpers.Longs(i[2]!), OpHelpers.OptionalLongs(i, 3), OpHelpers.OptionalLongs(i, 4))], OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "Split", 2, a =>
        {
            var axis = a.Int("axis", 0);
            var split = a.Ints("split");
            var count = a.Node.Output.Count;
            return (_, i) => Split(i[0]!, axis, split, count);
        });
        yield return new OpSpec("", "Split", 13, a =>
        {
            var axis = a.Int("axis", 0);
            var count = a.Node.Output.Count;
            return (_, i) => Split(i[0]!, axis, OpHelpers.OptionalLongs(i, 1), count);
        }, OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "Split", 18, a =>
        {
            var axis = a.Int("axis", 0);
            var count = (int)a.Int("num_outputs", a.Node.Output.Count);
            return (_, i) => Split(i[0]!, axis, OpHelpers.OptionalLongs(i, 1), count);
        }, OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "Pad", 2, a =>
        {
            var pads = a.Ints("pads") ?? throw a.Unsupported("pads missing");
            var mode = a.String("mode", "constant");
            var value = a.Float("value", 0f);
            return (_, i) => [Pad(i[0]!, pads, mode, value, null)];
        });
        yield return new OpSpec("", "Pad", 11, a =>
        {
            var mode = a.String("mode", "constant");
            return (_, i) => [Pad(i[0]!, OpHelpers.Longs(i[1]!), mode, i.Length > 2 && i[2] is { } v && v.numel() > 0 ? OpHelpers.Scalar(v) : 0, OpHelpers.OptionalLongs(i, 3))];
        }, OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "Trilu", 14, a =>
        {
            var upper = a.Int("upper", 1) != 0;
            return (_, i) =>
            {
                var k = i.Length > 1 && i[1] is { } kt ? (long)OpHelpers.Scalar(kt) : 0;
                return [upper ? i[0]!.triu(k) : i[0]!.tril(k)];
            };
        }, OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "CumSum", 11, a =>
        {
            bool exclusive = a.Int("exclusive", 0) != 0, reverse = a.Int("reverse", 0) != 0;
            return (_, i) =>
            {
                var x = i[0]!;
                var axis = OpHelpers.Axis((long)OpHelpers.Scalar(i[1]!), x.dim());
                var source = reverse ? x.flip(axis) : x;
                var sum = source.cumsum(axis, source.dtype);
                if (exclusive)
                {
                    sum = sum - source;
                }

                return [reverse ? sum.flip(axis) : sum];
            };
        }, OpSpec.ConstantFrom(1));
    }

    private static Tensor Slice(Tensor x, long[] starts, long[] ends, long[]? axes, long[]? steps)
    {
        var result = x;
        for (var k = 0; k < starts.Length; k++)
        {
            var axis = OpHelpers.Axis(axes?[k] ?? k, x.dim());
            var size = x.shape[axis];
            var step = steps?[k] ?? 1;
            if (step == 0)
            {
                throw new UnsupportedOpException("Slice with step 0");
            }

            var start = starts[k] < 0 ? starts[k] + size : starts[k];
            var end = ends[k] < 0 ? ends[k] + size : ends[k];
            if (step > 0)
            {
                start = Math.Clamp(start, 0, size);
                end = Math.Clamp(end, 0, size);
                result = result.slice(axis, start, Math.Max(start, end), step);
            }
            else
            {
                // Negative steps: flip, then slice forward.
                start = Math.Clamp(start, -1, size - 1);
                end = Math.Clamp(end, -1, size - 1);
                var flipped = result.flip(axis);
                var (from, to) = (size - 1 - start, size - 1 - end);
                result = flipped.slice(axis, from, Math.Max(from, to), -step);
            }
        }

        return result;
    }

    private static Tensor[] Split(Tensor x, long axis, long[]? split, int count)
    {
        var dim = OpHelpers.Axis(axis, x.dim());
        if (split is null)
        {
            var size = x.shape[dim];
            var chunk = (size + count - 1) / count;
            split = [.. Enumerable.Range(0, count).Select(k => Math.Min(chunk, size - (k * chunk)))];
        }

        return x.split(split, dim);
    }

    private static Tensor Pad(Tensor x, long[] pads, string mode, double value, long[]? axes)
    {
        var rank = (int)x.dim();
        var dims = axes?.Select(a => OpHelpers.Axis(a, rank)).ToArray() ?? [.. Enumerable.Range(0, rank).Select(v => (long)v)];
        var begin = new long[rank];
        var end = new long[rank];
        for (var k = 0; k < dims.Length; k++)
        {
            begin[dims[k]] = pads[k];
            end[dims[k]] = pads[k + dims.Length];
        }

        // F.pad lists the last axis first and pads only trailing axes; negative pads crop.
        var last = Array.FindIndex(begin.Zip(end).ToArray(), p => p.First != 0 || p.Second != 0);
        if (last < 0)
        {
            return x.alias();
        }

        var torchPads = new List<long>();
        for (var d = rank - 1; d >= last; d--)
        {
            torchPads.Add(begin[d]);
            torchPads.Add(end[d]);
        }

        var paddingMode = mode switch
        {
            "constant" => PaddingModes.Constant,
            "reflect" => PaddingModes.Reflect,
            "edge" => PaddingModes.Replicate,
            _ => throw new UnsupportedOpException($"Pad mode {mode}"),
        };
        return F.pad(x, [.. torchPads], paddingMode, value);
    }
}
