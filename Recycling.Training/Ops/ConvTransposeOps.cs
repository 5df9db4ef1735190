using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>
/// ConvTranspose (1-D to 3-D, groups, dilations, output_padding, explicit, automatic or output_shape-derived
/// padding). The full transposed convolution runs unpadded; the padding then crops it (or output_padding extends it
/// with zeros) per axis, and the bias is added last, so asymmetric padding needs no special case.
/// </summary>
internal static class ConvTransposeOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return new OpSpec("", "ConvTranspose", 1, a =>
        {
            var autoPad = a.String("auto_pad", "NOTSET");
            if (autoPad is not ("NOTSET" or "VALID" or "SAME_UPPER" or "SAME_LOWER"))
            {
                throw a.Unsupported($"auto_pad={autoPad}");
            }

            var group = a.Int("group", 1);
            long[]? kernelAttribute = a.Ints("kernel_shape"), strideAttribute = a.Ints("strides"), dilationAttribute = a.Ints("dilations");
            long[]? pads = a.Ints("pads"), outputPadding = a.Ints("output_padding"), outputShape = a.Ints("output_shape");
            return (_, i) =>
            {
                var x = i[0]!;
                var w = i[1]!;
                var bias = i.Length > 2 ? i[2] : null;
                var spatial = (int)x.dim() - 2;
                var kernel = kernelAttribute ?? [.. w.shape.Skip(2)];
                var strides = strideAttribute ?? [.. Enumerable.Repeat(1L, spatial)];
                var dilations = dilationAttribute ?? [.. Enumerable.Repeat(1L, spatial)];
                var full = spatial switch
                {
                    1 => F.conv_transpose1d(x, w, null, stride: strides[0], dilation: dilations[0], groups: group),
                    2 => F.conv_transpose2d(x, w, null, strides: strides, dilation: dilations, groups: group),
                    3 => F.conv_transpose3d(x, w, null, strides: strides, dilation: dilations, groups: group),
                    _ => throw new UnsupportedOpException($"ConvTranspose on {spatial} spatial dimensions"),
                };

                var y = full;
                for (var d = 0; d < spatial; d++)
                {
                    var fullLength = full.shape[d + 2];
                    var extra = outputPadding?[d] ?? 0;
                    long begin, length;
                    if (outputShape is not null)
                    {
                        // The total padding is what the unpadded output exceeds the requested shape by.
                        length = outputShape[^(spatial - d)];
                        var total = fullLength + extra - length;
                        begin = Head(autoPad, total);
                    }
                    else if (autoPad is "SAME_UPPER" or "SAME_LOWER")
                    {
                        length = x.shape[d + 2] * strides[d];
                        var total = fullLength + extra - length;
                        begin = Head(autoPad, total);
                    }
                    else
                    {
                        begin = autoPad == "NOTSET" && pads is not null ? pads[d] : 0;
                        var end = autoPad == "NOTSET" && pads is not null ? pads[d + spatial] : 0;
                        length = fullLength + extra - begin - end;
                    }

                    y = Window(y, d + 2, begin, length);
                }

                return [bias is null ? y : y.Plus(bias.reshape([-1, .. Enumerable.Repeat(1L, spatial)]))];
            };
        });
    }

    /// <summary>The leading share of a derived total padding, by the spec's rule that ONNX Runtime follows: the extra
    /// position of an odd total goes to the end for SAME_UPPER, to the beginning otherwise.</summary>
    private static long Head(string autoPad, long total) => autoPad == "SAME_UPPER" ? total / 2 : total - (total / 2);

    /// <summary>Positions [begin, begin + length) of one axis, zeros where that runs past either end.</summary>
    private static Tensor Window(Tensor y, int axis, long begin, long length)
    {
        var size = y.shape[axis];
        if (begin == 0 && length == size)
        {
            return y;
        }

        long before = Math.Max(0, -begin), after = Math.Max(0, begin + length - size);
        var start = Math.Max(0, begin);
        var kept = y.narrow(axis, start, Math.Min(size, begin + length) - start);
        if (before == 0 && after == 0)
        {
            return kept;
        }

        var pad = new long[2 * ((int)y.dim() - axis)];
        pad[^2] = before;
        pad[^1] = after;
        return F.pad(kept, pad);
    }
}
