using System.IO.Compression;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.Training.Foundation;

/// <summary>An auxiliary task of the vision zoo: its split name, class count and what it asks.</summary>
internal sealed record VisionTask(string Name, int Classes, string Description);

/// <summary>
/// The vision zoo's data, generated deterministically from Fashion-MNIST (Debian's dataset-fashion-mnist) with the
/// small zoo's protocol (models/README.md): the target task is 10-way classification of images rotated by 0, 15, 30,
/// 45 or 60 degrees (in domain) and 75 degrees (out of distribution); eight auxiliary tasks relabel or transform
/// upright images. Every split is written as PREFIX_{images,labels,domains}.npy.gz: images uint8 [N, 1, 28, 28],
/// labels and domains int64 [N]. The training set feeds the auxiliary and target-training splits, the test set the
/// probe/val/OOD splits, so no evaluated image was trained on. Draws come from one SplitMix64 stream per purpose, and
/// all arithmetic is in float32 with fixed rounding, so the arrays are the same on every machine.
/// </summary>
internal static class FashionMnistTasks
{
    public const string DefaultSource = "/usr/share/datasets/fashion-mnist";

    public static readonly int[] TrainDomains = [0, 15, 30, 45, 60];

    public const int OodDomain = 75;

    /// <summary>The small zoo's eight auxiliary tasks; the ones closest to the target's shift (rotations, flips,
    /// pixel-level changes) first, so a build that takes the first few keeps them, the label-subset ones last.</summary>
    public static readonly VisionTask[] Auxiliaries =
    [
        new("invert", 10, "10-way classification of inverted images (255 - x)"),
        new("blur", 10, "10-way classification of Gaussian-blurred images (sigma 1.5, 7 taps, zero padding)"),
        new("noise", 10, "10-way classification with additive Gaussian noise (sigma 0.3 of the range, clamped)"),
        new("rot90", 10, "10-way classification of images rotated by 90 degrees"),
        new("rotpred4", 4, "self-supervised: predict the rotation (0/90/180/270) of upright images"),
        new("flipv", 10, "10-way classification of vertically flipped images"),
        new("coarse4", 4, "4-way coarse labels: tops {0,2,4,6}, trouser/dress {1,3}, footwear {5,7,9}, bag {8}"),
        new("subset5", 5, "5-way classification restricted to classes 0-4"),
    ];

    private static readonly int[] Coarse = [0, 1, 0, 1, 0, 2, 0, 2, 3, 2];

    /// <summary>How many images each split holds.</summary>
    internal sealed record Sizes(int Auxiliary = 500, int TargetTrain = 1000, int ProbeTrain = 500, int Validation = 500, int Ood = 500);

    /// <summary>The split names written: target_train, probe_train, val, ood_test, then aux_TASK per auxiliary task.</summary>
    public static IEnumerable<string> SplitNames => new[] { "target_train", "probe_train", "val", "ood_test" }.Concat(Auxiliaries.Select(a => $"aux_{a.Name}"));

    /// <summary>Writes every split into <paramref name="folder"/> (atomically, file by file).</summary>
    public static void Generate(string folder, Sizes? sizes = null, string source = DefaultSource)
    {
        sizes ??= new Sizes();
        var (trainImages, trainLabels) = Read(source, "train");
        var (testImages, testLabels) = Read(source, "t10k");
        var trainOrder = Permutation(trainLabels.Length, 20261130);
        var testOrder = Permutation(testLabels.Length, 20261131);
        var needed = (Auxiliaries.Length * sizes.Auxiliary * PoolFactor) + sizes.TargetTrain;
        if (needed > trainOrder.Length || sizes.ProbeTrain + sizes.Validation + sizes.Ood > testOrder.Length || new[] { sizes.Auxiliary, sizes.TargetTrain, sizes.ProbeTrain, sizes.Validation, sizes.Ood }.Any(n => n < 1))
        {
            throw new RecyclingException($"split sizes {sizes} do not fit Fashion-MNIST's 60,000 training and 10,000 test images");
        }

        Directory.CreateDirectory(folder);
        var next = 0;
        int[] Take(int[] order, int count)
        {
            var taken = order[next..(next + count)];
            next += count;
            return taken;
        }

        // Target training: the training set's images after the auxiliary pools, domains cycling over the rotations.
        next = Auxiliaries.Length * sizes.Auxiliary * PoolFactor;
        WriteRotated(folder, "target_train", trainImages, trainLabels, Take(trainOrder, sizes.TargetTrain), ood: false);
        next = 0;
        foreach (var (split, count, ood) in new[] { ("probe_train", sizes.ProbeTrain, false), ("val", sizes.Validation, false), ("ood_test", sizes.Ood, true) })
        {
            WriteRotated(folder, split, testImages, testLabels, Take(testOrder, count), ood);
        }

        // Auxiliary tasks: task j draws from its own pool of 3·N training images (subset5 keeps the first N of classes 0-4).
        for (var j = 0; j < Auxiliaries.Length; j++)
        {
            var task = Auxiliaries[j];
            var pool = trainOrder[(j * sizes.Auxiliary * PoolFactor)..((j + 1) * sizes.Auxiliary * PoolFactor)];
            var chosen = (task.Name == "subset5" ? pool.Where(i => trainLabels[i] < 5) : pool).Take(sizes.Auxiliary).ToArray();
            if (chosen.Length < sizes.Auxiliary)
            {
                throw new RecyclingException($"aux_{task.Name}: only {chosen.Length} images of its pool qualify, {sizes.Auxiliary} asked");
            }

            var random = new SplitMix64(1000 + (ulong)j);
            var images = new byte[chosen.Length * Pixels];
            var labels = new long[chosen.Length];
            for (var n = 0; n < chosen.Length; n++)
            {
                var image = trainImages.AsSpan(chosen[n] * Pixels, Pixels);
                var target = images.AsSpan(n * Pixels, Pixels);
                labels[n] = Transform(task.Name, image, trainLabels[chosen[n]], target, random);
            }

            Write(folder, $"aux_{task.Name}", images, labels, new long[chosen.Length]);
        }
    }

    /// <summary>Each auxiliary task's pool holds this many times its size (subset5 keeps only classes 0-4 of it).</summary>
    private const int PoolFactor = 3;

    private const int Side = 28;
    private const int Pixels = Side * Side;

    /// <summary>Writes <paramref name="image"/> transformed for <paramref name="task"/> into <paramref name="target"/>; returns its label.</summary>
    private static long Transform(string task, ReadOnlySpan<byte> image, int label, Span<byte> target, SplitMix64 random)
    {
        switch (task)
        {
            case "invert":
                for (var i = 0; i < Pixels; i++)
                {
                    target[i] = (byte)(255 - image[i]);
                }

                return label;
            case "coarse4":
                image.CopyTo(target);
                return Coarse[label];
            case "blur":
                Blur(image, target);
                return label;
            case "noise":
                for (var i = 0; i < Pixels; i++)
                {
                    target[i] = Quantise(image[i] + (0.3f * 255f * random.NextGaussian()));
                }

                return label;
            case "rot90":
                Rotate90(image, target, 1);
                return label;
            case "rotpred4":
                var quarter = (int)(random.NextUInt64() % 4);
                Rotate90(image, target, quarter);
                return quarter;
            case "subset5":
                image.CopyTo(target);
                return label;
            case "flipv":
                for (var y = 0; y < Side; y++)
                {
                    image.Slice((Side - 1 - y) * Side, Side).CopyTo(target.Slice(y * Side, Side));
                }

                return label;
            default:
                throw new ArgumentOutOfRangeException(nameof(task), task, null);
        }
    }

    private static void WriteRotated(string folder, string split, byte[] images, int[] labels, int[] indices, bool ood)
    {
        var rotated = new byte[indices.Length * Pixels];
        var outLabels = new long[indices.Length];
        var domains = new long[indices.Length];
        for (var n = 0; n < indices.Length; n++)
        {
            var degrees = ood ? OodDomain : TrainDomains[n % TrainDomains.Length];
            Rotate(images.AsSpan(indices[n] * Pixels, Pixels), rotated.AsSpan(n * Pixels, Pixels), degrees);
            outLabels[n] = labels[indices[n]];
            domains[n] = degrees;
        }

        Write(folder, split, rotated, outLabels, domains);
    }

    private static void Write(string folder, string split, byte[] images, long[] labels, long[] domains)
    {
        var prefix = Path.Combine(folder, split);
        NpyFile.Write($"{prefix}_images.npy.gz", NpyArray.From<byte>(images, labels.Length, 1, Side, Side));
        NpyFile.Write($"{prefix}_labels.npy.gz", NpyArray.From<long>(labels, labels.Length));
        NpyFile.Write($"{prefix}_domains.npy.gz", NpyArray.From<long>(domains, domains.Length));
    }

    /// <summary>
    /// Counter-clockwise rotation about the centre, bilinear with zero fill, as torch's affine_grid + grid_sample
    /// (align_corners=False) compute it in models/generate_zoo.py, rounded half to even and clamped to uint8.
    /// </summary>
    internal static void Rotate(ReadOnlySpan<byte> image, Span<byte> target, int degrees)
    {
        var radians = degrees * Math.PI / 180;
        float cos = (float)Math.Cos(radians), sin = (float)Math.Sin(radians);
        for (var y = 0; y < Side; y++)
        {
            for (var x = 0; x < Side; x++)
            {
                // Normalised output coordinates, the rotated source point, back to pixel coordinates.
                float nx = ((2f * x) + 1f) / Side - 1f, ny = ((2f * y) + 1f) / Side - 1f;
                float sx = (cos * nx) - (sin * ny), sy = (sin * nx) + (cos * ny);
                float px = (((sx + 1f) * Side) - 1f) / 2f, py = (((sy + 1f) * Side) - 1f) / 2f;
                int x0 = (int)MathF.Floor(px), y0 = (int)MathF.Floor(py);
                float wx = px - x0, wy = py - y0;
                var value = ((1 - wx) * (1 - wy) * Pixel(image, x0, y0)) + (wx * (1 - wy) * Pixel(image, x0 + 1, y0))
                    + ((1 - wx) * wy * Pixel(image, x0, y0 + 1)) + (wx * wy * Pixel(image, x0 + 1, y0 + 1));
                target[(y * Side) + x] = Quantise(value);
            }
        }
    }

    private static float Pixel(ReadOnlySpan<byte> image, int x, int y) => x is >= 0 and < Side && y is >= 0 and < Side ? image[(y * Side) + x] : 0f;

    /// <summary>torch.rot90(x, k, (H, W)): k quarter turns counter-clockwise.</summary>
    private static void Rotate90(ReadOnlySpan<byte> image, Span<byte> target, int quarters)
    {
        for (var y = 0; y < Side; y++)
        {
            for (var x = 0; x < Side; x++)
            {
                var (sy, sx) = quarters switch
                {
                    0 => (y, x),
                    1 => (x, Side - 1 - y),
                    2 => (Side - 1 - y, Side - 1 - x),
                    _ => (Side - 1 - x, y),
                };
                target[(y * Side) + x] = image[(sy * Side) + sx];
            }
        }
    }

    /// <summary>Separable Gaussian blur, sigma 1.5, 7 taps, zero padding.</summary>
    private static void Blur(ReadOnlySpan<byte> image, Span<byte> target)
    {
        Span<float> kernel = stackalloc float[7];
        var sum = 0f;
        for (var i = 0; i < 7; i++)
        {
            kernel[i] = MathF.Exp(-0.5f * (i - 3) * (i - 3) / (1.5f * 1.5f));
            sum += kernel[i];
        }

        for (var i = 0; i < 7; i++)
        {
            kernel[i] /= sum;
        }

        Span<float> rows = stackalloc float[Pixels];
        for (var y = 0; y < Side; y++)
        {
            for (var x = 0; x < Side; x++)
            {
                var v = 0f;
                for (var k = -3; k <= 3; k++)
                {
                    v += kernel[k + 3] * Pixel(image, x + k, y);
                }

                rows[(y * Side) + x] = v;
            }
        }

        for (var y = 0; y < Side; y++)
        {
            for (var x = 0; x < Side; x++)
            {
                var v = 0f;
                for (var k = -3; k <= 3; k++)
                {
                    v += y + k is >= 0 and < Side ? kernel[k + 3] * rows[((y + k) * Side) + x] : 0f;
                }

                target[(y * Side) + x] = Quantise(v);
            }
        }
    }

    private static byte Quantise(float value) => (byte)Math.Clamp(MathF.Round(value, MidpointRounding.ToEven), 0f, 255f);

    /// <summary>A Fisher–Yates permutation of 0..count-1 from a SplitMix64 stream.</summary>
    private static int[] Permutation(int count, ulong seed)
    {
        var random = new SplitMix64(seed);
        var order = Enumerable.Range(0, count).ToArray();
        for (var i = count - 1; i > 0; i--)
        {
            var j = (int)(random.NextUInt64() % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }

        return order;
    }

    /// <summary>Reads SOURCE/PART-images-idx3-ubyte.gz and PART-labels-idx1-ubyte.gz (Fashion-MNIST's IDX files).</summary>
    private static (byte[] Images, int[] Labels) Read(string source, string part)
    {
        var imagesPath = Path.Combine(source, $"{part}-images-idx3-ubyte.gz");
        var labelsPath = Path.Combine(source, $"{part}-labels-idx1-ubyte.gz");
        if (!File.Exists(imagesPath) || !File.Exists(labelsPath))
        {
            throw new RecyclingException($"{MessageText.Path(source)}: no Fashion-MNIST here ({part}-images-idx3-ubyte.gz, {part}-labels-idx1-ubyte.gz); install Debian's dataset-fashion-mnist (scripts/setup-test-deps.sh does)");
        }

        var images = ReadIdx(imagesPath, [Side, Side]);
        var labels = ReadIdx(labelsPath, []);
        if (images.Length != labels.Length * Pixels || labels.Any(l => l > 9))
        {
            throw new RecyclingException($"{MessageText.Path(imagesPath)}: {images.Length / Pixels} images for {labels.Length} labels (or a label above 9)");
        }

        return (images, [.. labels.Select(l => (int)l)]);
    }

    private static byte[] ReadIdx(string path, int[] itemShape)
    {
        using var gzip = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        using var memory = new MemoryStream();
        gzip.CopyTo(memory);
        var bytes = memory.ToArray();
        var dims = 1 + itemShape.Length;
        if (bytes.Length < 4 + (4 * dims) || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 || bytes[3] != dims)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: not an IDX file of unsigned bytes with {dims} dimensions");
        }

        int Dim(int d) => (bytes[4 + (4 * d)] << 24) | (bytes[5 + (4 * d)] << 16) | (bytes[6 + (4 * d)] << 8) | bytes[7 + (4 * d)];
        var count = Dim(0);
        for (var d = 0; d < itemShape.Length; d++)
        {
            if (Dim(d + 1) != itemShape[d])
            {
                throw new RecyclingException($"{MessageText.Path(path)}: items of dimension {d + 1} are {Dim(d + 1)}, expected {itemShape[d]}");
            }
        }

        var size = (long)count * itemShape.Aggregate(1, (a, b) => a * b);
        var start = 4 + (4 * dims);
        return bytes.Length - start == size ? bytes[start..]
            : throw new RecyclingException($"{MessageText.Path(path)}: {bytes.Length - start} data bytes for {size} declared");
    }

    /// <summary>SplitMix64 (Steele, Lea, Flood 2014): a fixed, portable pseudo-random stream.</summary>
    private sealed class SplitMix64(ulong seed)
    {
        private ulong _state = seed;

        public ulong NextUInt64()
        {
            var z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>A uniform float in (0, 1) from the top 24 bits.</summary>
        public float NextFloat() => ((NextUInt64() >> 40) + 0.5f) / (1 << 24);

        /// <summary>A standard normal draw (Box–Muller, the cosine half; float64 inside).</summary>
        public float NextGaussian()
        {
            double u1 = NextFloat(), u2 = NextFloat();
            return (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
    }
}
