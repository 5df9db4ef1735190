using TorchSharp;
using static TorchSharp.torch;

namespace Recycling.Training.Ops;

/// <summary>
/// Resize (10, 11, 13, 18, 19) and Upsample (7, 9): nearest, linear and cubic on any axes, every coordinate
/// transformation mode but tf_crop_and_resize. Each resized axis is a weighted sum of index_selects (one tap for
/// nearest, two for linear, four for cubic), so the result is differentiable in the input, and the index arithmetic
/// runs in float32 the way ONNX Runtime computes it.
/// </summary>
internal static class ResizeOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        // Upsample 7: scales an attribute; 9: an input. Both use asymmetric coordinates and ONNX Runtime's "simple"
        // nearest rounding (floor when enlarging, ceil when shrinking), as Resize 10 does.
        yield return new OpSpec("", "Upsample", 7, a =>
        {
            var scales = a.Floats("scales") ?? throw a.Unsupported("scales missing");
            var resize = Legacy(a);
            return (_, i) => [resize.Run(i[0]!, scales, null)];
        });
        yield return new OpSpec("", "Upsample", 9, a =>
        {
            var resize = Legacy(a);
            return (_, i) => [resize.Run(i[0]!, Floats(i[1]!), null)];
        }, OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "Resize", 10, a =>
        {
            var resize = Legacy(a);
            return (_, i) => [resize.Run(i[0]!, Floats(i[1]!), null)];
        }, OpSpec.ConstantFrom(1));
        foreach (var since in new[] { 11, 13, 18, 19 })
        {
            yield return new OpSpec("", "Resize", since, a =>
            {
                var resize = Read(a, since);
                return (_, i) =>
                {
                    var scales = i.Length > 2 && i[2] is { } s && s.numel() > 0 ? Floats(s) : null;
                    var sizes = i.Length > 3 && i[3] is { } z && z.numel() > 0 ? OpHelpers.Longs(z) : null;
                    return [resize.Run(i[0]!, scales, sizes)];
                };
            }, OpSpec.ConstantFrom(1));
        }
    }

    private static Resizer Legacy(NodeAttributes a)
    {
        var mode = a.String("mode", "nearest");
        return mode is "nearest" or "linear" ? new Resizer(mode, "asymmetric", "simple", -0.75f, false, null) : throw a.Unsupported($"mode={mode}");
    }

    private static Resizer Read(NodeAttributes a, int since)
    {
        var mode = a.String("mode", "nearest");
        var transform = a.String("coordinate_transformation_mode", "half_pixel");
        var nearest = a.String("nearest_mode", "round_prefer_floor");
        if (mode is not ("nearest" or "linear" or "cubic"))
        {
            throw a.Unsupported($"mode={mode}");
        }

        var transforms = since >= 19
            ? new[] { "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn", "half_pixel_symmetric" }
            : ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"];
        if (!transforms.Contains(transform))
        {
            throw a.Unsupported($"coordinate_transformation_mode={transform}");
        }

        if (nearest is not ("round_prefer_floor" or "round_prefer_ceil" or "floor" or "ceil"))
        {
            throw a.Unsupported($"nearest_mode={nearest}");
        }

        if (a.Int("antialias", 0) != 0)
        {
            throw a.Unsupported("antialias=1");
        }

        if (a.String("keep_aspect_ratio_policy", "stretch") is var policy && policy != "stretch")
        {
            throw a.Unsupported($"keep_aspect_ratio_policy={policy}");
        }

        return new Resizer(mode, transform, nearest, a.Float("cubic_coeff_a", -0.75f), a.Int("exclude_outside", 0) != 0, a.Ints("axes"));
    }

    private static float[] Floats(Tensor t)
    {
        using var cpu = t.to(ScalarType.Float32).cpu();
        return cpu.data<float>().ToArray();
    }

    private sealed record Resizer(string Mode, string Transform, string Nearest, float CubicA, bool ExcludeOutside, long[]? Axes)
    {
        public Tensor Run(Tensor x, float[]? scales, long[]? sizes)
        {
            var rank = (int)x.dim();
            var axes = Axes?.Select(v => (int)OpHelpers.Axis(v, rank)).ToArray() ?? [.. Enumerable.Range(0, rank)];
            var given = sizes?.Length ?? scales?.Length ?? throw new UnsupportedOpException("Resize without scales or sizes");
            if (given != axes.Length)
            {
                throw new UnsupportedOpException($"Resize has {given} scales or sizes for {axes.Length} axes");
            }

            var y = x;
            for (var k = 0; k < axes.Length; k++)
            {
                var d = axes[k];
                var length = x.shape[d];
                var (output, scale) = sizes is not null ? (sizes[k], (float)sizes[k] / length) : ((long)(length * scales![k]), scales[k]);
                if (output == length && scale == 1f)
                {
                    continue;
                }

                y = ResizeAxis(y, d, length, output, scale);
            }

            return ReferenceEquals(y, x) ? x.alias() : y;
        }

        private Tensor ResizeAxis(Tensor x, int axis, long length, long output, float scale)
        {
            var taps = Taps(length, output, scale);
            var shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
            shape[axis] = output;
            Tensor? sum = null;
            foreach (var (index, weight) in taps)
            {
                using var indices = torch.tensor(index, device: x.device);
                var picked = x.index_select(axis, indices);
                if (weight is not null)
                {
                    using var w = torch.tensor(weight, device: x.device).to(x.dtype).reshape(shape);
                    picked = picked * w;
                }

                sum = sum is null ? picked : sum.Plus(picked);
            }

            return sum!;
        }

        /// <summary>Per output position: the source indices and weights of each tap (weights null: one tap of weight 1).</summary>
        private List<(long[] Index, float[]? Weight)> Taps(long length, long output, float scale)
        {
            var count = Mode switch { "nearest" => 1, "linear" => 2, _ => 4 };
            var taps = Enumerable.Range(0, count).Select(_ => (Index: new long[output], Weight: count == 1 ? null : new float[output])).ToList();
            for (var o = 0; o < output; o++)
            {
                var source = Source(o, length, output, scale);
                if (Mode == "nearest")
                {
                    taps[0].Index[o] = Math.Clamp(NearestIndex(source, scale < 1), 0, length - 1);
                }
                else if (Mode == "linear")
                {
                    source = Math.Clamp(source, 0, length - 1);
                    var low = (long)MathF.Floor(source);
                    var t = source - low;
                    taps[0].Index[o] = low;
                    taps[0].Weight![o] = 1 - t;
                    taps[1].Index[o] = Math.Min(low + 1, length - 1);
                    taps[1].Weight![o] = t;
                }
                else
                {
                    var low = (long)MathF.Floor(source);
                    var coefficients = Cubic(source - low);
                    var total = 0f;
                    for (var k = 0; k < 4; k++)
                    {
                        var index = low - 1 + k;
                        if (ExcludeOutside && (index < 0 || index >= length))
                        {
                            coefficients[k] = 0;
                        }

                        total += coefficients[k];
                        taps[k].Index[o] = Math.Clamp(index, 0, length - 1);
                    }

                    for (var k = 0; k < 4; k++)
                    {
                        taps[k].Weight![o] = ExcludeOutside ? coefficients[k] / total : coefficients[k];
                    }
                }
            }

            return taps;
        }

        private float Source(long o, long length, long output, float scale) => Transform switch
        {
            "half_pixel" => ((o + 0.5f) / scale) - 0.5f,
            "pytorch_half_pixel" => output > 1 ? ((o + 0.5f) / scale) - 0.5f : 0f,
            "align_corners" => output == 1 ? 0f : o * (float)(length - 1) / (output - 1),
            "asymmetric" => o / scale,
            "tf_half_pixel_for_nn" => (o + 0.5f) / scale,
            _ => HalfPixelSymmetric(o, length, output, scale),
        };

        private static float HalfPixelSymmetric(long o, long length, long output, float scale)
        {
            var adjustment = output / (scale * length);
            var center = length / 2f;
            return (center * (1 - adjustment)) + ((o + 0.5f) / scale) - 0.5f;
        }

        private long NearestIndex(float source, bool shrinking) => Nearest switch
        {
            "simple" => shrinking ? (long)MathF.Ceiling(source) : (long)source,
            "floor" => (long)MathF.Floor(source),
            "ceil" => (long)MathF.Ceiling(source),
            "round_prefer_ceil" => (long)MathF.Round(source, MidpointRounding.AwayFromZero),
            _ => source == MathF.Floor(source) + 0.5f ? (long)MathF.Floor(source) : (long)MathF.Round(source, MidpointRounding.AwayFromZero),
        };

        private float[] Cubic(float t)
        {
            var a = CubicA;
            float Near(float s) => ((((a + 2) * s) - (a + 3)) * s * s) + 1;
            float Far(float s) => ((((a * s) - (5 * a)) * s) + (8 * a)) * s - (4 * a);
            return [Far(t + 1), Near(t), Near(1 - t), Far(2 - t)];
        }
    }
}
