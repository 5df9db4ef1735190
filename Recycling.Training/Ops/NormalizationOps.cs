using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>BatchNormalization (every version from 6: spatial up to 8, training_mode from 14), LayerNormalization (17),
/// InstanceNormalization, GroupNormalization (18, 21), LpNormalization and MeanVarianceNormalization.</summary>
internal static class NormalizationOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        static InputRole Roles(int slot) => slot >= 3 ? InputRole.RunningStatistic : InputRole.Data;
        yield return new OpSpec("", "BatchNormalization", 6, BatchNorm, Roles);
        yield return new OpSpec("", "BatchNormalization", 7, BatchNorm, Roles);
        yield return new OpSpec("", "BatchNormalization", 9, BatchNorm, Roles);
        yield return new OpSpec("", "BatchNormalization", 14, BatchNorm, Roles);
        yield return new OpSpec("", "BatchNormalization", 15, BatchNorm, Roles);
        yield return new OpSpec("", "LayerNormalization", 17, a =>
        {
            var axis = a.Int("axis", -1);
            var eps = a.Float("epsilon", 1e-5f);
            if (a.Node.Output.Skip(1).Any(o => o.Length > 0))
            {
                throw a.Unsupported("Mean/InvStdDev outputs of LayerNormalization");
            }

            return (_, i) =>
            {
                var x = i[0]!;
                var normalized = x.shape[(int)OpHelpers.Axis(axis, x.dim())..];
                var scale = i[1]!;
                var bias = i.Length > 2 ? i[2] : null;
                if (scale.shape.SequenceEqual(normalized) && (bias is null || bias.shape.SequenceEqual(normalized)))
                {
                    return [F.layer_norm(x, normalized, scale, bias, eps)];
                }

                var y = F.layer_norm(x, normalized, null, null, eps) * scale;
                return [bias is null ? y : y.Plus(bias)];
            };
        });
        yield return new OpSpec("", "InstanceNormalization", 6, a =>
        {
            var eps = a.Float("epsilon", 1e-5f);
            return (_, i) => [Affine(Normalize(i[0]!, 2, eps), i[1]!, i[2]!)];
        });

        // GroupNormalization 18: scale and bias per group (deprecated by 21, which has them per channel).
        yield return new OpSpec("", "GroupNormalization", 18, a => GroupNorm(a, perChannel: false));
        yield return new OpSpec("", "GroupNormalization", 21, a => GroupNorm(a, perChannel: true));
        yield return new OpSpec("", "LpNormalization", 1, a =>
        {
            var axis = a.Int("axis", -1);
            var p = a.Int("p", 2);
            if (p is not (1 or 2))
            {
                throw a.Unsupported($"p={p}");
            }

            return (_, i) =>
            {
                var x = i[0]!;
                var dim = OpHelpers.Axis(axis, x.dim());
                return [x / (p == 1 ? x.abs().sum(dim, true) : x.Squared().sum(dim, true).sqrt())];
            };
        });
        yield return new OpSpec("", "MeanVarianceNormalization", 9, a =>
        {
            var axes = a.Ints("axes") ?? [0, 2, 3];
            return (_, i) =>
            {
                var x = i[0]!;
                var dims = axes.Select(v => OpHelpers.Axis(v, x.dim())).ToArray();
                var centered = x - x.mean(dims, true);
                return [centered / centered.Squared().mean(dims, true).sqrt().Plus(1e-9)];
            };
        });
    }

    /// <summary>(x − mean) / sqrt(var + eps) over every axis from <paramref name="firstAxis"/> on, per leading index (biased variance).</summary>
    private static Tensor Normalize(Tensor x, int firstAxis, double eps)
    {
        var dims = Enumerable.Range(firstAxis, (int)x.dim() - firstAxis).Select(v => (long)v).ToArray();
        var centered = x - x.mean(dims, true);
        return centered / centered.Squared().mean(dims, true).Plus(eps).sqrt();
    }

    /// <summary>y * scale + bias with one value per channel (axis 1).</summary>
    private static Tensor Affine(Tensor y, Tensor scale, Tensor bias)
    {
        long[] shape = [-1, .. Enumerable.Repeat(1L, (int)y.dim() - 2)];
        return (y * scale.reshape(shape)).Plus(bias.reshape(shape));
    }

    private static OpRun GroupNorm(NodeAttributes a, bool perChannel)
    {
        var eps = a.Float("epsilon", 1e-5f);
        var groups = a.Int("num_groups", 0);
        if (groups < 1)
        {
            throw a.Unsupported($"num_groups={groups}");
        }

        return (_, i) =>
        {
            var x = i[0]!;
            var shape = x.shape;
            var grouped = Normalize(x.reshape(shape[0], groups, -1), 2, eps);
            if (perChannel)
            {
                return [Affine(grouped.reshape(shape), i[1]!, i[2]!)];
            }

            return [Affine(grouped, i[1]!, i[2]!).reshape(shape)];
        };
    }

    private static OpRun BatchNorm(NodeAttributes a)
    {
        var eps = a.Float("epsilon", 1e-5f);

        // ONNX's momentum weighs the old running value, PyTorch's the new batch value.
        var momentum = 1.0 - a.Float("momentum", 0.9f);
        var spatial = a.Int("spatial", 1) != 0;
        var exportedTraining = a.Int("training_mode", 0) != 0;
        return (context, i) =>
        {
            var x = i[0]!;
            Tensor scale = i[1]!, bias = i[2]!, mean = i[3]!, variance = i[4]!;
            var shape = x.shape;
            if (!spatial)
            {
                // One statistic per activation: normalise [N, C*D1*...] over the batch axis.
                x = x.reshape(shape[0], -1);
                (scale, bias, mean, variance) = (scale.reshape(-1), bias.reshape(-1), mean.reshape(-1), variance.reshape(-1));
            }

            Tensor y;
            if (context.Training && context.BatchNorm == BatchNormMode.Train)
            {
                y = F.batch_norm(x, mean, variance, scale, bias, true, momentum, eps);
            }
            else if (!context.Training && exportedTraining)
            {
                // An export in training mode normalises with batch statistics even at inference, as ONNX Runtime does.
                y = F.batch_norm(x, null, null, scale, bias, true, momentum, eps);
            }
            else
            {
                y = F.batch_norm(x, mean, variance, scale, bias, false, momentum, eps);
            }

            return [spatial ? y : y.reshape(shape)];
        };
    }
}
