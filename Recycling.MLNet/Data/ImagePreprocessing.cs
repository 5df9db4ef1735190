using System.Globalization;
using Recycling.Onnx;

namespace Recycling.MLNet.Data;

/// <summary>
/// What real image models expect of the zoo's small images, applied per sample of shape [C, H, W] (or [H, W], one
/// channel) in this order: grey to <see cref="Channels"/> channels (the one channel copied), a bilinear resize to
/// <see cref="Height"/>×<see cref="Width"/> (PyTorch's F.interpolate(mode='bilinear', align_corners=False,
/// antialias=False): half-pixel centres, edge-clamped), then (x − mean[c]) / std[c].
/// </summary>
public sealed record ImagePreprocessing
{
    public static readonly float[] ImageNetMean = [0.485f, 0.456f, 0.406f];
    public static readonly float[] ImageNetStd = [0.229f, 0.224f, 0.225f];

    private const int MaxSide = 4096;

    public int? Height { get; init; }

    public int? Width { get; init; }

    /// <summary>Grey data (one channel) is copied to this many channels; other channel counts must already match.</summary>
    public int? Channels { get; init; }

    public IReadOnlyList<float>? Mean { get; init; }

    public IReadOnlyList<float>? Std { get; init; }

    /// <summary>Parses the CLI's <c>--resize HxW</c>, <c>--channels N</c> and <c>--normalize imagenet|m1,m2,m3:s1,s2,s3</c>; null when none is given.</summary>
    public static ImagePreprocessing? Parse(string? resize, int? channels, string? normalize)
    {
        if (resize is null && channels is null && normalize is null)
        {
            return null;
        }

        int? height = null, width = null;
        if (resize is not null)
        {
            var parts = resize.Split('x', 'X');
            if (parts.Length != 2 || !TryInt(parts[0], out var h) || !TryInt(parts[1], out var w) || h is < 1 or > MaxSide || w is < 1 or > MaxSide)
            {
                throw new RecyclingException($"--resize {resize}: use HxW, e.g. 64x64 (1..{MaxSide} each)");
            }

            (height, width) = (h, w);
        }

        if (channels is < 1 or > 64)
        {
            throw new RecyclingException($"--channels {channels}: use 1..64");
        }

        IReadOnlyList<float>? mean = null, std = null;
        if (normalize is not null)
        {
            if (normalize == "imagenet")
            {
                (mean, std) = (ImageNetMean, ImageNetStd);
            }
            else
            {
                var halves = normalize.Split(':');
                if (halves.Length != 2 || !TryFloats(halves[0], out var m) || !TryFloats(halves[1], out var s) || m.Length != s.Length || s.Any(v => !(v > 0)))
                {
                    throw new RecyclingException($"--normalize {normalize}: use imagenet or MEANS:STDS with one finite mean and one positive std per channel, e.g. 0.5,0.5,0.5:0.5,0.5,0.5");
                }

                (mean, std) = (m, s);
            }
        }

        return new ImagePreprocessing { Height = height, Width = width, Channels = channels, Mean = mean, Std = std };
    }

    /// <summary>The dimensions the model's single input declares (−1 where unknown), or null when it has several inputs or no shape.</summary>
    internal static long[]? InputDims(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var graph = model.Proto.Graph;
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var inputs = graph.Input.Where(i => !initializers.Contains(i.Name)).ToList();
        return inputs is [{ Type.TensorType.Shape: { } shape }]
            ? [.. shape.Dim.Select(d => d.ValueCase == Onnx.Proto.TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : -1)]
            : null;
    }

    /// <summary>The preprocessing <paramref name="requested"/>, with grey data copied to 3 channels when the model's
    /// single input declares [N, 3, H, W] (<paramref name="inputDims"/>) and the channel count was not given; null when
    /// there is nothing to do.</summary>
    internal static ImagePreprocessing? ForModel(long[]? inputDims, Dataset data, ImagePreprocessing? requested)
    {
        ArgumentNullException.ThrowIfNull(data);
        var wantsRgb = inputDims is [_, 3, _, _];
        var grey = data.SampleShape.Count == 2 || (data.SampleShape.Count == 3 && data.SampleShape[0] == 1);
        return wantsRgb && grey && requested?.Channels is null ? (requested ?? new ImagePreprocessing()) with { Channels = 3 } : requested;
    }

    /// <summary>The shape of a preprocessed sample; throws naming <paramref name="dataName"/> when the samples are not images this can process.</summary>
    public int[] OutputShape(IReadOnlyList<int> shape, string dataName)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Count is not (2 or 3))
        {
            throw new RecyclingException($"{MessageText.Path(dataName)}: samples of shape [{string.Join(",", shape)}] are not images [C,H,W] or [H,W]; image preprocessing needs one of those");
        }

        var channels = shape.Count == 3 ? shape[0] : 1;
        var outChannels = Channels ?? channels;
        if (outChannels != channels && channels != 1)
        {
            throw new RecyclingException($"{MessageText.Path(dataName)}: {channels} channels cannot become {outChannels} (only grey, one channel, is copied)");
        }

        if (Mean is not null && Mean.Count != outChannels)
        {
            throw new RecyclingException($"{MessageText.Path(dataName)}: normalisation has {Mean.Count} means for {outChannels} channel(s){(outChannels == 1 ? "; add --channels 3 for grey data" : "")}");
        }

        return [outChannels, Height ?? shape[^2], Width ?? shape[^1]];
    }

    /// <summary>Preprocesses one sample of <paramref name="shape"/> into <paramref name="destination"/> (<see cref="OutputShape"/>'s size).</summary>
    public void Apply(ReadOnlySpan<float> sample, IReadOnlyList<int> shape, Span<float> destination, string dataName = "data")
    {
        var output = OutputShape(shape, dataName);
        int channels = shape.Count == 3 ? shape[0] : 1, height = shape[^2], width = shape[^1];
        int outHeight = output[1], outWidth = output[2], plane = outHeight * outWidth;
        if (sample.Length != channels * height * width || destination.Length != output[0] * plane)
        {
            throw new ArgumentException("sample or destination size does not match the shapes");
        }

        for (var c = 0; c < output[0]; c++)
        {
            var source = sample.Slice((channels == 1 ? 0 : c) * height * width, height * width);
            var target = destination.Slice(c * plane, plane);
            Resize(source, height, width, target, outHeight, outWidth);
            if (Mean is not null)
            {
                float mean = Mean[c], std = Std![c];
                for (var i = 0; i < target.Length; i++)
                {
                    target[i] = (target[i] - mean) / std;
                }
            }
        }
    }

    /// <summary>Every sample of <paramref name="data"/> preprocessed (labels and domains kept).</summary>
    public Dataset Apply(Dataset data)
    {
        ArgumentNullException.ThrowIfNull(data);
        var shape = OutputShape(data.SampleShape, data.Name);
        var size = shape.Aggregate(1L, (p, d) => p * d);
        if (size * data.Count > Array.MaxLength)
        {
            throw new RecyclingException($"{MessageText.Path(data.Name)}: {data.Count} samples of [{string.Join(",", shape)}] do not fit in one array; use fewer samples");
        }

        var values = new float[size * data.Count];
        for (var i = 0; i < data.Count; i++)
        {
            Apply(data.Sample(i), data.SampleShape, values.AsSpan((int)(i * size), (int)size), data.Name);
        }

        return new Dataset(data.Name, values, shape, data.Labels, data.Domains);
    }

    /// <summary>The settings as recorded in lineage metadata, e.g. "resize=64x64 channels=3 normalize=0.485,0.456,0.406:0.229,0.224,0.225".</summary>
    public override string ToString()
    {
        var parts = new List<string>();
        if (Height is not null)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"resize={Height}x{Width} (bilinear, half-pixel)"));
        }

        if (Channels is not null)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"channels={Channels}"));
        }

        if (Mean is not null)
        {
            parts.Add($"normalize={string.Join(",", Mean.Select(v => v.ToString("R", CultureInfo.InvariantCulture)))}:{string.Join(",", Std!.Select(v => v.ToString("R", CultureInfo.InvariantCulture)))}");
        }

        return string.Join(" ", parts);
    }

    /// <summary>Bilinear resize of one plane as torch's upsample_bilinear2d with align_corners=False: source
    /// coordinate (i + 0.5)·in/out − 0.5, clamped at 0, neighbours clamped to the last row/column.</summary>
    private static void Resize(ReadOnlySpan<float> source, int height, int width, Span<float> target, int outHeight, int outWidth)
    {
        if (height == outHeight && width == outWidth)
        {
            source.CopyTo(target);
            return;
        }

        Span<int> x0 = outWidth <= 1024 ? stackalloc int[outWidth] : new int[outWidth];
        Span<int> x1 = outWidth <= 1024 ? stackalloc int[outWidth] : new int[outWidth];
        Span<float> lx = outWidth <= 1024 ? stackalloc float[outWidth] : new float[outWidth];
        for (var x = 0; x < outWidth; x++)
        {
            (x0[x], x1[x], lx[x]) = Source(x, width, outWidth);
        }

        for (var y = 0; y < outHeight; y++)
        {
            var (y0, y1, ly) = Source(y, height, outHeight);
            var top = source.Slice(y0 * width, width);
            var bottom = source.Slice(y1 * width, width);
            var row = target.Slice(y * outWidth, outWidth);
            for (var x = 0; x < outWidth; x++)
            {
                var t = (1 - lx[x]) * top[x0[x]] + lx[x] * top[x1[x]];
                var b = (1 - lx[x]) * bottom[x0[x]] + lx[x] * bottom[x1[x]];
                row[x] = (1 - ly) * t + ly * b;
            }
        }
    }

    private static (int Low, int High, float Weight) Source(int index, int size, int outSize)
    {
        var scale = (float)size / outSize;
        var position = Math.Max(scale * (index + 0.5f) - 0.5f, 0f);
        var low = Math.Min((int)position, size - 1);
        var high = Math.Min(low + 1, size - 1);
        return (low, high, position - low);
    }

    private static bool TryInt(string text, out int value) => int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);

    private static bool TryFloats(string text, out float[] values)
    {
        var parts = text.Split(',');
        values = new float[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            if (!float.TryParse(parts[i], NumberStyles.Float, CultureInfo.InvariantCulture, out values[i]) || !float.IsFinite(values[i]))
            {
                return false;
            }
        }

        return parts.Length > 0;
    }
}
