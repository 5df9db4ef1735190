using TorchSharp;
using static TorchSharp.torch;

namespace Recycling.Training.Ops;

/// <summary>Shape, Reshape, Flatten, Transpose, Squeeze/Unsqueeze (axes as input from 13), Concat, Expand, Tile,
/// DepthToSpace/SpaceToDepth.
/// Shapes are computed eagerly: a shape tensor's values are read when a node needs them.</summary>
internal static class ShapeOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return new OpSpec("", "Shape", 1, a =>
        {
            long? start = a.Has("start") ? a.Int("start", 0) : null, end = a.Has("end") ? a.Int("end", 0) : null;
            return (_, i) =>
            {
                var shape = i[0]!.shape;
                var rank = shape.Length;
                var from = (int)Math.Clamp(OpHelpers.Axis(start ?? 0, rank), 0, rank);
                var to = (int)Math.Clamp(OpHelpers.Axis(end ?? rank, rank), from, rank);
                return [torch.tensor(shape[from..to], ScalarType.Int64, device: i[0]!.device)];
            };
        });
        yield return new OpSpec("", "Size", 1, _ => (_, i) => [torch.tensor(i[0]!.numel(), ScalarType.Int64, device: i[0]!.device)]);
        yield return new OpSpec("", "Reshape", 5, a =>
        {
            var allowZero = a.Int("allowzero", 0) != 0;
            return (_, i) =>
            {
                var x = i[0]!;
                var target = OpHelpers.Longs(i[1]!);
                if (!allowZero)
                {
                    for (var d = 0; d < target.Length; d++)
                    {
                        if (target[d] == 0)
                        {
                            target[d] = x.shape[d];
                        }
                    }
                }

                return [x.reshape(target)];
            };
        }, OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "Flatten", 1, a =>
        {
            var axis = a.Int("axis", 1);
            return (_, i) =>
            {
                var x = i[0]!;
                var split = (int)OpHelpers.Axis(axis, x.dim());
                var outer = x.shape[..split].Aggregate(1L, (p, v) => p * v);
                return [x.reshape(outer, -1)];
            };
        });
        yield return new OpSpec("", "Transpose", 1, a =>
        {
            var perm = a.Ints("perm");
            return (_, i) =>
            {
                var x = i[0]!;
                return [x.permute(perm ?? [.. Enumerable.Range(0, (int)x.dim()).Reverse().Select(v => (long)v)])];
            };
        });
        yield return new OpSpec("", "Squeeze", 1, a => Squeeze(a.Ints("axes")));
        yield return new OpSpec("", "Squeeze", 13, _ => (c, i) => Squeeze(OpHelpers.OptionalLongs(i, 1))(c, i), OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "Unsqueeze", 1, a => Unsqueeze(a.Ints("axes") ?? throw a.Unsupported("axes missing")));
        yield return new OpSpec("", "Unsqueeze", 13, _ => (c, i) => Unsqueeze(OpHelpers.Longs(i[1]!))(c, i), OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "Concat", 4, a =>
        {
            var axis = a.Int("axis", 0);
            return (_, i) =>
            {
                var parts = i.Where(t => t is not null).Select(t => t!).ToList();
                var nonEmpty = parts.Where(t => t.numel() > 0).ToList();
                return [torch.cat(nonEmpty.Count > 0 ? nonEmpty : parts, OpHelpers.Axis(axis, parts[0].dim()))];
            };
        });
        yield return new OpSpec("", "Expand", 8, _ => (_, i) =>
        {
            var x = i[0]!;
            var target = OpHelpers.Longs(i[1]!);
            var rank = Math.Max(x.dim(), target.Length);
            var shape = new long[rank];
            for (var d = 0; d < rank; d++)
            {
                var fromX = d - (rank - x.dim()) >= 0 ? x.shape[d - (rank - x.dim())] : 1;
                var fromT = d - (rank - target.Length) >= 0 ? target[d - (rank - target.Length)] : 1;
                shape[d] = fromX == 1 ? fromT : fromX;
            }

            return [x.expand(shape)];
        }, OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "DepthToSpace", 1, a => DepthToSpace(a.Int("blocksize", 0), a.String("mode", "DCR")));
        yield return new OpSpec("", "SpaceToDepth", 1, a =>
        {
            var b = a.Int("blocksize", 0);
            return (_, i) =>
            {
                var x = i[0]!;
                var (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
                return [x.reshape(n, c, h / b, b, w / b, b).permute(0, 3, 5, 1, 2, 4).reshape(n, c * b * b, h / b, w / b)];
            };
        });
        yield return new OpSpec("", "Tile", 6, _ => (_, i) => [i[0]!.tile(OpHelpers.Longs(i[1]!))], OpSpec.ConstantFrom(1));
    }

    private static OpRun DepthToSpace(long b, string mode)
    {
        if (mode is not ("DCR" or "CRD"))
        {
            throw new UnsupportedOpException($"attribute mode={mode}");
        }

        return (_, i) =>
        {
            var x = i[0]!;
            var (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
            var y = mode == "DCR"
                ? x.reshape(n, b, b, c / (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
                : x.reshape(n, c / (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3);
            return [y.reshape(n, c / (b * b), h * b, w * b)];
        };
    }

    private static OpRun Squeeze(long[]? axes) => (_, i) =>
    {
        var x = i[0]!;
        if (axes is null)
        {
            return [x.squeeze()];
        }

        var shape = x.shape.ToList();
        foreach (var axis in axes.Select(v => OpHelpers.Axis(v, x.dim())).OrderDescending())
        {
            shape.RemoveAt((int)axis);
        }

        return [x.reshape([.. shape])];
    };

    private static OpRun Unsqueeze(long[] axes) => (_, i) =>
    {
        var x = i[0]!;
        var rank = x.dim() + axes.Length;
        var inserted = axes.Select(v => OpHelpers.Axis(v, rank)).ToHashSet();
        var shape = new long[rank];
        var source = 0;
        for (var d = 0; d < rank; d++)
        {
            shape[d] = inserted.Contains(d) ? 1 : x.shape[source++];
        }

        return [x.reshape(shape)];
    };
}
