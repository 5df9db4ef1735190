using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>BatchNormalization (every version from 6: spatial up to 8, training_mode from 14) and LayerNormalization (17).</summary>
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
                return [bias is null ? y : y + bias];
            };
        });
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
