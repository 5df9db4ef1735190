using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>Conv (1-D to 3-D, groups, dilations, explicit or automatic padding).</summary>
internal static class ConvOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return new OpSpec("", "Conv", 1, a =>
        {
            var window = Window.Read(a);
            var group = a.Int("group", 1);
            return (_, i) =>
            {
                var x = i[0]!;
                var w = i[1]!;
                var bias = i.Length > 2 ? i[2] : null;
                var spatial = (int)x.dim() - 2;
                var kernel = window.Kernel ?? [.. w.shape.Skip(2)];
                var (padded, symmetric) = window.Pad(x, kernel, 0);
                var strides = window.StridesOr(spatial);
                var dilations = window.DilationsOr(spatial);
                if (spatial == 2 && padded.device_type == DeviceType.CPU)
                {
                    if (KernelChoice.Allows(KernelChoice.Kinds.Dense) && ConvAsMatmul.DenseFits(padded.shape, w.shape, strides, symmetric, dilations, group))
                    {
                        return [ConvAsMatmul.Dense(padded, w, bias, strides, symmetric, dilations)];
                    }

                    if (KernelChoice.Allows(KernelChoice.Kinds.Unfolded) && ConvAsMatmul.UnfoldedFits(padded.shape, w.shape, group))
                    {
                        return [ConvAsMatmul.Unfolded(padded, w, bias, strides, symmetric, dilations)];
                    }

                    if (KernelChoice.Allows(KernelChoice.Kinds.Pointwise) && ConvAsMatmul.PointwiseFits(padded.shape, w.shape, strides, symmetric, group))
                    {
                        return [ConvAsMatmul.Pointwise(padded, w, bias, strides)];
                    }
                }

                return [spatial switch
                {
                    1 => F.conv1d(padded, w, bias, strides[0], symmetric[0], dilations[0], group),
                    2 => F.conv2d(padded, w, bias, strides, symmetric, dilations, group),
                    3 => F.conv3d(padded, w, bias, strides, symmetric, dilations, group),
                    _ => throw new UnsupportedOpException($"Conv on {spatial} spatial dimensions"),
                }];
            };
        });
    }
}

/// <summary>The window attributes Conv and the pooling ops share: kernel_shape, strides, dilations, pads, auto_pad.</summary>
internal sealed record Window(long[]? Kernel, long[]? Strides, long[]? Dilations, long[]? Pads, string AutoPad)
{
    public static Window Read(NodeAttributes a)
    {
        var autoPad = a.String("auto_pad", "NOTSET");
        if (autoPad is not ("NOTSET" or "VALID" or "SAME_UPPER" or "SAME_LOWER"))
        {
            throw a.Unsupported($"auto_pad={autoPad}");
        }

        return new Window(a.Ints("kernel_shape"), a.Ints("strides"), a.Ints("dilations"), a.Ints("pads"), autoPad);
    }

    public long[] StridesOr(int spatial) => Strides ?? [.. Enumerable.Repeat(1L, spatial)];

    public long[] DilationsOr(int spatial) => Dilations ?? [.. Enumerable.Repeat(1L, spatial)];

    /// <summary>Begin/end padding per spatial axis for an input of this shape.</summary>
    public (long[] Begin, long[] End) Padding(long[] inputShape, long[] kernel)
    {
        var spatial = kernel.Length;
        var begin = new long[spatial];
        var end = new long[spatial];
        var strides = StridesOr(spatial);
        var dilations = DilationsOr(spatial);
        for (var d = 0; d < spatial; d++)
        {
            if (AutoPad is "SAME_UPPER" or "SAME_LOWER")
            {
                var size = inputShape[d + 2];
                var output = (size + strides[d] - 1) / strides[d];
                var total = Math.Max(0, ((output - 1) * strides[d]) + ((kernel[d] - 1) * dilations[d]) + 1 - size);
                var small = total / 2;
                (begin[d], end[d]) = AutoPad == "SAME_UPPER" ? (small, total - small) : (total - small, small);
            }
            else if (AutoPad == "NOTSET" && Pads is not null)
            {
                begin[d] = Pads[d];
                end[d] = Pads[d + spatial];
            }
        }

        return (begin, end);
    }

    /// <summary>Pads asymmetric padding explicitly with <paramref name="value"/>; returns the input and the symmetric padding left for the op.</summary>
    public (Tensor Input, long[] Symmetric) Pad(Tensor x, long[] kernel, double value)
    {
        var (begin, end) = Padding(x.shape, kernel);
        if (begin.SequenceEqual(end))
        {
            return (x, begin);
        }

        // F.pad lists the last axis first.
        var pads = new long[begin.Length * 2];
        for (var d = 0; d < begin.Length; d++)
        {
            pads[2 * (begin.Length - 1 - d)] = begin[d];
            pads[(2 * (begin.Length - 1 - d)) + 1] = end[d];
        }

        return (F.pad(x, pads, PaddingModes.Constant, value), new long[begin.Length]);
    }
}
