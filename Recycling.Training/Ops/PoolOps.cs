using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>MaxPool, AveragePool (2-D and 1-D/3-D where torch has them) and the global pools.</summary>
internal static class PoolOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return new OpSpec("", "MaxPool", 1, a =>
        {
            var withIndices = a.Node.Output.Count > 1 && a.Node.Output[1].Length > 0;
            if (a.Int("storage_order", 0) != 0)
            {
                throw a.Unsupported("storage_order=1");
            }

            var window = Window.Read(a);
            var kernel = window.Kernel ?? throw a.Unsupported("kernel_shape missing");
            var ceil = a.Int("ceil_mode", 0) != 0;
            return (_, i) =>
            {
                var (x, pads) = window.Pad(i[0]!, kernel, double.NegativeInfinity);
                var strides = window.StridesOr(kernel.Length);
                var dilations = window.DilationsOr(kernel.Length);
                if (withIndices)
                {
                    var shift = ReferenceEquals(x, i[0]) ? new long[kernel.Length] : window.Padding(i[0]!.shape, kernel).Begin;
                    return MaxWithIndices(i[0]!, x, shift, kernel, strides, pads, dilations, ceil);
                }

                if (MaxPoolGathered.Fits(x, kernel, strides, pads, dilations, ceil))
                {
                    return [MaxPoolGathered.Pool(x)];
                }

                if (MaxPoolChannelsLast.Fits(x, kernel))
                {
                    return [MaxPoolChannelsLast.Pool(x, kernel, strides, pads, dilations, ceil)];
                }

                return [kernel.Length switch
                {
                    1 => F.max_pool1d(x, kernel[0], strides[0], pads[0], dilations[0], ceil),
                    2 => F.max_pool2d(x, kernel, strides, pads, dilations, ceil),
                    3 => F.max_pool3d(x, kernel, strides, pads, dilations, ceil),
                    _ => throw new UnsupportedOpException($"MaxPool on {kernel.Length} spatial dimensions"),
                }];
            };
        });
        yield return new OpSpec("", "AveragePool", 1, a =>
        {
            var window = Window.Read(a);
            var kernel = window.Kernel ?? throw a.Unsupported("kernel_shape missing");
            var ceil = a.Int("ceil_mode", 0) != 0;
            var includePad = a.Int("count_include_pad", 0) != 0;
            if (window.Dilations is { } d && d.Any(v => v != 1))
            {
                throw a.Unsupported("dilations in AveragePool");
            }

            return (_, i) =>
            {
                var x = i[0]!;
                var (begin, end) = window.Padding(x.shape, kernel);
                var strides = window.StridesOr(kernel.Length);
                if (begin.SequenceEqual(end))
                {
                    return [Average(x, kernel, strides, begin, ceil, includePad)];
                }

                // Asymmetric padding: pool the zero-padded input, divided by the pooled in-bounds mask unless padding counts.
                var (padded, none) = window.Pad(x, kernel, 0);
                var sum = Average(padded, kernel, strides, none, ceil, true);
                if (includePad)
                {
                    return [sum];
                }

                using var ones = torch.ones([1, 1, .. x.shape.Skip(2)], x.dtype, device: x.device);
                var (mask, _) = window.Pad(ones, kernel, 0);
                return [sum / Average(mask, kernel, strides, none, ceil, true)];
            };
        });
        yield return new OpSpec("", "GlobalAveragePool", 1, _ => (_, i) =>
        {
            var x = i[0]!;
            return [x.mean([.. Enumerable.Range(2, (int)x.dim() - 2).Select(v => (long)v)], keepdim: true)];
        });
        yield return new OpSpec("", "GlobalMaxPool", 1, _ => (_, i) =>
        {
            var x = i[0]!;
            return [x.amax([.. Enumerable.Range(2, (int)x.dim() - 2).Select(v => (long)v)], keepdim: true)];
        });
    }

    /// <summary>
    /// MaxPool's values and ONNX indices: positions in the whole input flattened row-major (storage_order 0), where
    /// torch counts within one (padded) spatial plane.
    /// </summary>
    private static Tensor[] MaxWithIndices(Tensor input, Tensor padded, long[] shift, long[] kernel, long[] strides, long[] pads, long[] dilations, bool ceil)
    {
        var (values, planeIndex) = kernel.Length switch
        {
            1 => F.max_pool1d_with_indices(padded, kernel[0], strides[0], pads[0], dilations[0], ceil),
            2 => F.max_pool2d_with_indices(padded, kernel, strides, pads, dilations, ceil),
            3 => F.max_pool3d_with_indices(padded, kernel, strides, pads, dilations, ceil),
            _ => throw new UnsupportedOpException($"MaxPool on {kernel.Length} spatial dimensions"),
        };

        using var scope = NewDisposeScope();
        var spatial = kernel.Length;
        var rest = planeIndex;
        var index = torch.zeros_like(planeIndex);
        var stride = 1L;
        for (var d = spatial - 1; d >= 0; d--)
        {
            var paddedSize = padded.shape[d + 2];
            var size = input.shape[d + 2];

            // Explicit (asymmetric) padding shifted the plane: subtract what was added before each axis.
            index = index.Plus(rest.Modulo(paddedSize).Minus(shift[d]).Times(stride));
            rest = rest.FloorOver(paddedSize);
            stride *= size;
        }

        var planes = input.shape[0] * input.shape[1];
        using var plane = TorchScalars.Range(planes, ScalarType.Int64, input.device).reshape([input.shape[0], input.shape[1], .. Enumerable.Repeat(1L, spatial)]);
        return [values, index.Plus(plane.Times(stride)).MoveToOuterDisposeScope()];
    }

    private static Tensor Average(Tensor x, long[] kernel, long[] strides, long[] pads, bool ceil, bool includePad) => kernel.Length switch
    {
        1 => F.avg_pool1d(x, kernel[0], strides[0], pads[0], ceil, includePad),
        2 => F.avg_pool2d(x, kernel, strides, pads, ceil, includePad),
        3 => F.avg_pool3d(x, kernel, strides, pads, ceil, includePad),
        _ => throw new UnsupportedOpException($"AveragePool on {kernel.Length} spatial dimensions"),
    };
}
