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
            if (a.Node.Output.Count > 1 && a.Node.Output[1].Length > 0)
            {
                throw a.Unsupported("Indices output of MaxPool");
            }

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

                using var ones = torch.ones([1, 1, .. x.shape.Skip(2)], x.dtype, x.device);
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

    private static Tensor Average(Tensor x, long[] kernel, long[] strides, long[] pads, bool ceil, bool includePad) => kernel.Length switch
    {
        1 => F.avg_pool1d(x, kernel[0], strides[0], pads[0], ceil, includePad),
        2 => F.avg_pool2d(x, kernel, strides, pads, ceil, includePad),
        3 => F.avg_pool3d(x, kernel, strides, pads, ceil, includePad),
        _ => throw new UnsupportedOpException($"AveragePool on {kernel.Length} spatial dimensions"),
    };
}
