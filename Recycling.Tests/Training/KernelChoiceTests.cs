using Recycling.Training.Ops;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Tests.Training;

/// <summary>
/// The kernels Conv and MaxPool choose by shape on the CPU (ConvAsMatmul's dense, unfolded and pointwise forms, MaxPoolChannelsLast, MaxPoolGathered) against LibTorch's
/// default ones on the same tensors: the channels-last and gathered max-pools equal max_pool2d exactly, values and gradient,
/// with ties and NaNs in the windows; the convolutions as matrix products equal conv2d within float32 rounding
/// (1e-5 of the largest magnitude: a weight gradient sums 25,000 products; 1e-12 in float64), output and the gradients of input, weight and bias.
/// </summary>
[TestClass]
public sealed class KernelChoiceTests
{
    public static IEnumerable<object[]> PoolCases =>
    [
        // input shape, kernel, strides, pads, dilations, ceil
        [new long[] { 2, 3, 28, 28 }, new long[] { 2, 2 }, new long[] { 2, 2 }, new long[] { 0, 0 }, new long[] { 1, 1 }, false],
        [new long[] { 2, 3, 7, 9 }, new long[] { 2, 2 }, new long[] { 2, 2 }, new long[] { 0, 0 }, new long[] { 1, 1 }, true],
        [new long[] { 2, 4, 33, 33 }, new long[] { 3, 3 }, new long[] { 2, 2 }, new long[] { 0, 0 }, new long[] { 1, 1 }, false],
        [new long[] { 1, 5, 9, 8 }, new long[] { 3, 2 }, new long[] { 1, 2 }, new long[] { 1, 1 }, new long[] { 2, 1 }, false],
    ];

    [TestMethod]
    [DynamicData(nameof(PoolCases))]
    public void ChannelsLastMaxPoolEqualsMaxPool2dExactly(long[] shape, long[] kernel, long[] strides, long[] pads, long[] dilations, bool ceil)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(3);

        // Values from {0, 1, 2} tie in most windows; a few NaNs, some windows with two.
        var values = randint(0, 3, shape, generator: generator).to(ScalarType.Float32);
        var nan = rand(shape, generator: generator).lt(0.02);
        values = values.masked_fill(nan, float.NaN);
        var upstream = default(Tensor);

        (Tensor Y, Tensor Grad) Run(Func<Tensor, Tensor> pool)
        {
            var x = values.clone().requires_grad_(true);
            var y = pool(x);
            upstream ??= randn(y.shape, generator: generator);
            (y * upstream).nan_to_num().sum().backward();
            return (y.detach(), x.grad!);
        }

        var (expected, expectedGrad) = Run(x => F.max_pool2d(x, kernel, strides, pads, dilations, ceil));
        var (actual, actualGrad) = Run(x => MaxPoolChannelsLast.Pool(x, kernel, strides, pads, dilations, ceil));
        CollectionAssert.AreEqual(expected.shape, actual.shape);
        Assert.IsTrue(actual.is_contiguous(), "the result is NCHW");
        Assert.IsTrue(expected.isnan().any().item<bool>(), "the case has NaN windows");
        Assert.IsTrue(expected.isnan().eq(actual.isnan()).all().item<bool>(), "NaN positions differ");
        Assert.IsTrue(expected.nan_to_num().eq(actual.nan_to_num()).all().item<bool>(), "values differ");
        Assert.IsTrue(expectedGrad.eq(actualGrad).all().item<bool>(), $"gradients differ at {expectedGrad.ne(actualGrad).sum().item<long>()} positions");
    }

    public static IEnumerable<object[]> GatheredPoolCases =>
    [
        // input shape, ceil: rows of 14 windows (eight at a time, the last eight overlapping), 8, 7 and 4 (four at a
        // time), 3 and 1 (one by one); odd sizes drop the last row or column; ceil mode on even sizes.
        [new long[] { 2, 3, 28, 28 }, false],
        [new long[] { 2, 2, 5, 17 }, false],
        [new long[] { 1, 4, 14, 14 }, false],
        [new long[] { 3, 2, 9, 8 }, false],
        [new long[] { 2, 3, 7, 6 }, false],
        [new long[] { 3, 2, 6, 10 }, true],
        [new long[] { 8, 2, 2, 2 }, false],
    ];

    [TestMethod]
    [DynamicData(nameof(GatheredPoolCases))]
    public void GatheredMaxPoolEqualsMaxPool2dExactly(long[] shape, bool ceil)
    {
        using var scope = NewDisposeScope();
        long[] two = [2, 2], none = [0, 0], ones = [1, 1];
        Assert.IsTrue(MaxPoolGathered.Fits(zeros(shape), two, two, none, ones, ceil), "the case takes the gathered form");
        AssertSameAsMaxPool2d(shape, ScalarType.Float32, x => F.max_pool2d(x, two, two, none, ones, ceil), MaxPoolGathered.Pool);
        AssertSameAsMaxPool2d(shape, ScalarType.Float32, x => F.max_pool2d(x, two, two, none, ones, ceil), x => MaxPoolGathered.Pool(x.transpose(2, 3).contiguous().transpose(2, 3)));
    }

    /// <summary>The winners, vectorised and one by one, are max_pool2d's indices, with ±∞, ±0, NaN and ties of both.</summary>
    [TestMethod]
    [DataRow(2, 3, 12, 34)]
    [DataRow(1, 5, 10, 10)]
    [DataRow(3, 1, 4, 30)]
    public void GatheredPoolWinnersAreMaxPool2dsIndices(int n, int c, int h, int w)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(17);
        float[] special = [float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f, 1f, -1f];
        var x = randint(0, special.Length * 3, [n, c, h, w], generator: generator).to(ScalarType.Int64);
        var values = x.data<long>().ToArray().Select(v => v < special.Length ? special[v] : (v % 3) - 1f).ToArray();
        var input = tensor(values, [n, c, h, w]);
        var (_, expected) = F.max_pool2d_with_indices(input, [2, 2], [2, 2]);
        var want = expected.reshape(n, c, -1).data<long>().ToArray();
        CollectionAssert.AreEqual(want, MaxPoolGathered.Winners(input).data<long>().ToArray(), "vectorised");
        CollectionAssert.AreEqual(want, MaxPoolGathered.Winners(input, vectorised: false).data<long>().ToArray(), "one by one");
    }

    [TestMethod]
    public void GatheredPoolSplitAcrossThreadsEqualsMaxPool2d()
    {
        var threads = get_num_threads();
        try
        {
            set_num_threads(2);
            AssertSameAsMaxPool2d([8, 64, 32, 32], ScalarType.Float32, x => F.max_pool2d(x, [2, 2]), MaxPoolGathered.Pool);
        }
        finally
        {
            set_num_threads(threads);
        }
    }

    [TestMethod]
    [DataRow(0, 3)]
    [DataRow(2, 0)]
    public void GatheredPoolOfAnEmptyBatchOrChannelAxisIsEmpty(int n, int c)
    {
        using var scope = NewDisposeScope();
        var x = zeros([n, c, 6, 8]).requires_grad_(true);
        var y = MaxPoolGathered.Pool(x);
        CollectionAssert.AreEqual(new long[] { n, c, 3, 4 }, y.shape);
        y.sum().backward();
        CollectionAssert.AreEqual(x.shape, x.grad!.shape);
    }

    [TestMethod]
    public void GatheredPoolTakesOnlyTwoByTwoWindowsOfStrideTwo()
    {
        using var x = zeros(2, 3, 9, 9);
        long[] two = [2, 2], none = [0, 0], ones = [1, 1];
        Assert.IsTrue(MaxPoolGathered.Fits(x, two, two, none, ones, false));
        Assert.IsFalse(MaxPoolGathered.Fits(x, two, two, none, ones, true), "ceil mode with a partial last window");
        Assert.IsFalse(MaxPoolGathered.Fits(x, [3, 3], two, none, ones, false), "a 3×3 window");
        Assert.IsFalse(MaxPoolGathered.Fits(x, two, [1, 1], none, ones, false), "overlapping windows");
        Assert.IsFalse(MaxPoolGathered.Fits(x, two, two, [1, 1], ones, false), "padding");
        Assert.IsFalse(MaxPoolGathered.Fits(x, two, two, none, two, false), "dilation");
        Assert.IsFalse(MaxPoolGathered.Fits(zeros(2, 3, 1, 9), two, two, none, ones, false), "a plane lower than the window");
        Assert.IsFalse(MaxPoolGathered.Fits(zeros([2, 3, 8, 8], ScalarType.Float64), two, two, none, ones, false), "float64");
        Assert.IsFalse(MaxPoolGathered.Fits(zeros([2, 3, 8, 8], ScalarType.Int32), two, two, none, ones, false), "integers");
        Assert.IsFalse(MaxPoolGathered.Fits(zeros(3, 8, 8), two, two, none, ones, false), "no batch axis");
    }

    /// <summary>Values from {0, 1, 2} tie in most windows; a few NaNs, some windows with two (the pool takes the last).</summary>
    private static void AssertSameAsMaxPool2d(long[] shape, ScalarType dtype, Func<Tensor, Tensor> expectedPool, Func<Tensor, Tensor> actualPool)
    {
        var generator = new Generator(3);
        var values = randint(0, 3, shape, generator: generator).to(dtype);
        values = values.masked_fill(rand(shape, generator: generator).lt(0.05), double.NaN);
        var upstream = default(Tensor);

        (Tensor Y, Tensor Grad) Run(Func<Tensor, Tensor> pool)
        {
            var x = values.clone().requires_grad_(true);
            var y = pool(x);
            upstream ??= randn(y.shape, dtype, generator: generator);
            (y * upstream).nan_to_num().sum().backward();
            return (y.detach(), x.grad!);
        }

        var (expected, expectedGrad) = Run(expectedPool);
        var (actual, actualGrad) = Run(actualPool);
        CollectionAssert.AreEqual(expected.shape, actual.shape);
        Assert.IsTrue(expected.isnan().any().item<bool>(), "the case has NaN windows");
        Assert.IsTrue(expected.isnan().eq(actual.isnan()).all().item<bool>(), "NaN positions differ");
        Assert.IsTrue(expected.nan_to_num().eq(actual.nan_to_num()).all().item<bool>(), "values differ");
        Assert.IsTrue(expectedGrad.eq(actualGrad).all().item<bool>(), $"gradients differ at {expectedGrad.ne(actualGrad).sum().item<long>()} positions");
    }

    public static IEnumerable<object[]> ConvCases =>
    [
        // input shape, weight shape, strides, pads, dilations, bias
        [new long[] { 32, 64, 2, 2 }, new long[] { 48, 64, 3, 3 }, new long[] { 1, 1 }, new long[] { 1, 1 }, new long[] { 1, 1 }, false],
        [new long[] { 3, 5, 2, 3 }, new long[] { 4, 5, 3, 3 }, new long[] { 2, 2 }, new long[] { 1, 1 }, new long[] { 1, 1 }, true],
        [new long[] { 2, 3, 2, 2 }, new long[] { 5, 3, 2, 3 }, new long[] { 1, 1 }, new long[] { 1, 1 }, new long[] { 2, 1 }, true],
        [new long[] { 4, 8, 1, 1 }, new long[] { 6, 8, 1, 1 }, new long[] { 1, 1 }, new long[] { 0, 0 }, new long[] { 1, 1 }, true],
        [new long[] { 2, 6, 3, 3 }, new long[] { 7, 6, 3, 3 }, new long[] { 1, 1 }, new long[] { 0, 0 }, new long[] { 1, 1 }, true],
    ];

    [TestMethod]
    [DynamicData(nameof(ConvCases))]
    public void DenseConvolutionEqualsConv2d(long[] input, long[] weight, long[] strides, long[] pads, long[] dilations, bool bias)
    {
        Assert.IsTrue(ConvAsMatmul.DenseFits(input, weight, strides, pads, dilations, 1), "the case takes the dense form");
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            AssertSameAsConv2d(input, weight, bias, dtype, (x, w, b) => ConvAsMatmul.Dense(x, w, b, strides, pads, dilations),
                (x, w, b) => F.conv2d(x, w, b, strides, pads, dilations));
        }
    }

    [TestMethod]
    [DataRow(new long[] { 32, 256, 4, 4 }, new long[] { 512, 256, 1, 1 }, 2L, 2L, false)]
    [DataRow(new long[] { 2, 6, 5, 4 }, new long[] { 7, 6, 1, 1 }, 2L, 3L, true)]
    public void StridedPointwiseConvolutionEqualsConv2d(long[] input, long[] weight, long strideH, long strideW, bool bias)
    {
        long[] strides = [strideH, strideW];
        Assert.IsTrue(ConvAsMatmul.PointwiseFits(input, weight, strides, [0, 0], 1));
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            AssertSameAsConv2d(input, weight, bias, dtype, (x, w, b) => ConvAsMatmul.Pointwise(x, w, b, strides),
                (x, w, b) => F.conv2d(x, w, b, strides));
        }
    }

    [TestMethod]
    [DataRow(new long[] { 32, 1, 28, 28 }, new long[] { 16, 1, 3, 3 }, 1L, 1L, 1L, true)]
    [DataRow(new long[] { 3, 1, 9, 8 }, new long[] { 4, 1, 3, 2 }, 2L, 0L, 2L, false)]
    public void UnfoldedConvolutionEqualsConv2d(long[] input, long[] weight, long stride, long pad, long dilation, bool bias)
    {
        Assert.IsTrue(ConvAsMatmul.UnfoldedFits(input, weight, 1));
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            AssertSameAsConv2d(input, weight, bias, dtype, (x, w, b) => ConvAsMatmul.Unfolded(x, w, b, [stride, stride], [pad, pad], [dilation, dilation]),
                (x, w, b) => F.conv2d(x, w, b, [stride, stride], [pad, pad], [dilation, dilation]));
        }
    }

    [TestMethod]
    public void TheChoiceFollowsTheShape()
    {
        // ResNet18's 512→512 3×3 on 2×2 takes the dense form; 256→256 on 4×4 (16 positions, 9 taps) and the CNN's
        // 7×7 layer do not; grouped convolutions and 1×1 kernels without stride keep conv2d.
        Assert.IsTrue(ConvAsMatmul.DenseFits([32, 512, 2, 2], [512, 512, 3, 3], [1, 1], [1, 1], [1, 1], 1));
        Assert.IsFalse(ConvAsMatmul.DenseFits([32, 256, 4, 4], [256, 256, 3, 3], [1, 1], [1, 1], [1, 1], 1));
        Assert.IsFalse(ConvAsMatmul.DenseFits([32, 32, 7, 7], [64, 32, 3, 3], [1, 1], [1, 1], [1, 1], 1));
        Assert.IsFalse(ConvAsMatmul.DenseFits([32, 512, 2, 2], [512, 256, 3, 3], [1, 1], [1, 1], [1, 1], 2));
        Assert.IsFalse(ConvAsMatmul.DenseFits([1, 2048, 2, 2], [2048, 2048, 3, 3], [1, 1], [1, 1], [1, 1], 1), "the gathered weights would exceed the bound");
        Assert.IsTrue(ConvAsMatmul.PointwiseFits([32, 256, 4, 4], [512, 256, 1, 1], [2, 2], [0, 0], 1));
        Assert.IsFalse(ConvAsMatmul.PointwiseFits([32, 256, 4, 4], [512, 256, 1, 1], [1, 1], [0, 0], 1));
        Assert.IsFalse(ConvAsMatmul.PointwiseFits([32, 256, 4, 4], [512, 256, 1, 1], [2, 2], [1, 1], 1));
        Assert.IsTrue(ConvAsMatmul.UnfoldedFits([32, 1, 28, 28], [16, 1, 3, 3], 1));
        Assert.IsFalse(ConvAsMatmul.UnfoldedFits([32, 3, 69, 69], [64, 3, 7, 7], 1));
    }

    private static void AssertSameAsConv2d(long[] input, long[] weight, bool bias, ScalarType dtype,
        Func<Tensor, Tensor, Tensor?, Tensor> actual, Func<Tensor, Tensor, Tensor?, Tensor> expected)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(5);
        var x0 = randn(input, dtype, generator: generator);
        var w0 = randn(weight, dtype, generator: generator);
        var b0 = bias ? randn([weight[0]], dtype, generator: generator) : null;
        Tensor? upstream = null;

        Tensor[] Run(Func<Tensor, Tensor, Tensor?, Tensor> conv)
        {
            var (x, w, b) = (x0.clone().requires_grad_(true), w0.clone().requires_grad_(true), b0?.clone().requires_grad_(true));
            var y = conv(x, w, b);
            upstream ??= randn(y.shape, dtype, generator: generator);
            (y * upstream).sum().backward();
            return b is null ? [y.detach(), x.grad!, w.grad!] : [y.detach(), x.grad!, w.grad!, b.grad!];
        }

        var want = Run(expected);
        var got = Run(actual);
        var tolerance = dtype == ScalarType.Float32 ? 1e-5 : 1e-12;
        string[] names = ["output", "d/dx", "d/dw", "d/db"];
        for (var k = 0; k < want.Length; k++)
        {
            CollectionAssert.AreEqual(want[k].shape, got[k].shape, names[k]);
            var scale = Math.Max(1, want[k].abs().max().to(ScalarType.Float64).item<double>());
            var gap = (want[k] - got[k]).abs().max().to(ScalarType.Float64).item<double>();
            Assert.IsLessThanOrEqualTo(tolerance, gap / scale, $"{dtype} {names[k]}: {gap:G3} of {scale:G3}");
        }
    }
}
