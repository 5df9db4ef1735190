using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace Recycling.Training.Ops;

/// <summary>
/// The CNNs' 2×2 max-pool of stride 2 on a float32 CPU tensor: each window's winner found by one vectorised C# pass
/// over the input's memory, the output then gathered from the input at the winners. LibTorch 2.10's NCHW max-pool
/// kernel is the slowest part of the zoo CNN's step against PyTorch 1.13 (op-speed: 3.5 ms forward and backward for
/// the first pool), as any per-window scan with data-dependent branches is; here eight windows are compared at once
/// without branches. The winner follows max_pool2d's rule exactly (the window scanned row by row, an element taken
/// when greater than the maximum so far or NaN: ties go to the first maximum, NaNs to the last NaN), so the values
/// are the input's and the gradient (gather's backward: a scatter into zeros) reaches the element max_pool2d's
/// backward routes it to.
/// </summary>
internal static class MaxPoolGathered
{
    /// <summary>Inputs of at least this many elements are split by planes across LibTorch's threads.</summary>
    private const long ParallelElements = 1 << 18;

    public static bool Fits(Tensor x, long[] kernel, long[] strides, long[] pads, long[] dilations, bool ceil) =>
        kernel is [2, 2] && strides is [2, 2] && pads is [0, 0] && dilations is [1, 1] && Fits(x, ceil);

    /// <summary>Whether a 2×2 pool of stride 2, without padding or dilation, of <paramref name="x"/> runs here.</summary>
    public static bool Fits(Tensor x, bool ceil) =>
        KernelChoice.Allows(KernelChoice.Kinds.GatheredPool) && x.device_type == DeviceType.CPU && x.dtype == ScalarType.Float32
        && x.dim() == 4 && x.shape[2] >= 2 && x.shape[3] is >= 2 and < int.MaxValue / 2 && (!ceil || (x.shape[2] % 2 == 0 && x.shape[3] % 2 == 0));

    public static Tensor Pool(Tensor x)
    {
        var (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        using var scope = NewDisposeScope();
        var input = x.contiguous();
        var pooled = input.reshape(n, c, h * w).gather(2, Winners(input)).view(n, c, h / 2, w / 2);
        return pooled.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Each window's winner as its position in its input plane (row-major), shaped [N, C, windows]; one by one
    /// unless <paramref name="vectorised"/> (and AVX2 runs).
    /// </summary>
    internal static unsafe Tensor Winners(Tensor contiguous, bool vectorised = true)
    {
        var (n, c, h, w) = (contiguous.shape[0], contiguous.shape[1], contiguous.shape[2], contiguous.shape[3]);
        var (outHeight, outWidth) = (h / 2, w / 2);
        var winners = torch.empty([n, c, outHeight * outWidth], ScalarType.Int64, device: contiguous.device);
        if (n * c == 0 || outHeight * outWidth == 0)
        {
            return winners;
        }

        var source = (float*)Data(contiguous);
        var target = (long*)Data(winners);
        var (planes, inPlane, outPlane) = (n * c, h * w, outHeight * outWidth);
        var group = !vectorised || !Avx2.IsSupported || outWidth < 4 ? 1 : outWidth < 8 ? 4 : 8;
        void Plane(long p) => PlaneWinners(source + (p * inPlane), target + (p * outPlane), w, outHeight, outWidth, group);
        var threads = torch.get_num_threads();
        if (threads > 1 && planes > 1 && planes * inPlane >= ParallelElements)
        {
            Parallel.For(0, planes, new ParallelOptions { MaxDegreeOfParallelism = threads }, Plane);
        }
        else
        {
            for (var p = 0L; p < planes; p++)
            {
                Plane(p);
            }
        }

        return winners;
    }

    /// <summary>
    /// One plane's winners, <paramref name="group"/> windows at a time: eight (or, in rows narrower than eight windows,
    /// four) where AVX2 runs, a row's last group overlapping the one before (the same winners written twice); else one.
    /// </summary>
    private static unsafe void PlaneWinners(float* plane, long* winners, long width, long outHeight, long outWidth, int group)
    {
        for (var oh = 0L; oh < outHeight; oh++)
        {
            var row = 2 * oh * width;
            var output = winners + (oh * outWidth);
            for (var ow = 0L; ow < outWidth; ow += group)
            {
                var first = Math.Min(ow, outWidth - group);
                var at = row + (2 * first);
                switch (group)
                {
                    case 8:
                        EightWindows(plane + at, width, at, output + first);
                        break;
                    case 4:
                        FourWindows(plane + at, width, at, output + first);
                        break;
                    default:
                        output[first] = Window(plane, at, width);
                        break;
                }
            }
        }
    }

    /// <summary>
    /// max_pool2d's scan of one window whose top-left element is at <paramref name="at"/>, without branches (the
    /// winner is data-dependent: a branch would mispredict about every other window). The running maximum as
    /// MathF.Max keeps it where a tie would (only comparisons read it: +0 and −0 compare equal) and NaN once NaN.
    /// </summary>
    internal static unsafe long Window(float* plane, long at, long width)
    {
        var best = at;
        var max = plane[at];
        foreach (var next in (ReadOnlySpan<long>)[at + 1, at + width, at + width + 1])
        {
            var value = plane[next];
            var take = (value > max) | float.IsNaN(value);
            best ^= (best ^ next) & -(long)Unsafe.As<bool, byte>(ref take);
            max = MathF.Max(max, value);
        }

        return best;
    }

    /// <summary>
    /// Eight consecutive windows whose first top-left element is at <paramref name="top"/> (position
    /// <paramref name="at"/> in the plane). The shuffles split the two rows' 16 elements each into the windows'
    /// left and right columns in the lane order 0 1 4 5 2 3 6 7; the final permutation restores the windows' order.
    /// </summary>
    private static unsafe void EightWindows(float* top, long width, long at, long* output)
    {
        var (t0, t1) = (Avx.LoadVector256(top), Avx.LoadVector256(top + 8));
        var (b0, b1) = (Avx.LoadVector256(top + width), Avx.LoadVector256(top + width + 8));
        var max = Avx.Shuffle(t0, t1, 0b10_00_10_00);
        var offset = Vector256<int>.Zero;
        Take(Avx.Shuffle(t0, t1, 0b11_01_11_01), Vector256.Create(1), ref max, ref offset);
        Take(Avx.Shuffle(b0, b1, 0b10_00_10_00), Vector256.Create((int)width), ref max, ref offset);
        Take(Avx.Shuffle(b0, b1, 0b11_01_11_01), Vector256.Create((int)width + 1), ref max, ref offset);
        var ordered = Avx2.PermuteVar8x32(offset, Vector256.Create(0, 1, 4, 5, 2, 3, 6, 7)) + Vector256.Create(0, 2, 4, 6, 8, 10, 12, 14);
        var origin = Vector256.Create(at);
        Avx.Store(output, Avx2.ConvertToVector256Int64(ordered.GetLower()) + origin);
        Avx.Store(output + 4, Avx2.ConvertToVector256Int64(ordered.GetUpper()) + origin);
    }

    /// <summary>Four windows as <see cref="EightWindows"/> in 128 bits, where the shuffles keep the windows' order.</summary>
    private static unsafe void FourWindows(float* top, long width, long at, long* output)
    {
        var (t0, t1) = (Sse.LoadVector128(top), Sse.LoadVector128(top + 4));
        var (b0, b1) = (Sse.LoadVector128(top + width), Sse.LoadVector128(top + width + 4));
        var max = Sse.Shuffle(t0, t1, 0b10_00_10_00);
        var offset = Vector128<int>.Zero;
        var take = Take(Sse.Shuffle(t0, t1, 0b11_01_11_01), max);
        (max, offset) = (Sse41.BlendVariable(max, Sse.Shuffle(t0, t1, 0b11_01_11_01), take), Select(offset, Vector128.Create(1), take));
        take = Take(Sse.Shuffle(b0, b1, 0b10_00_10_00), max);
        (max, offset) = (Sse41.BlendVariable(max, Sse.Shuffle(b0, b1, 0b10_00_10_00), take), Select(offset, Vector128.Create((int)width), take));
        take = Take(Sse.Shuffle(b0, b1, 0b11_01_11_01), max);
        offset = Select(offset, Vector128.Create((int)width + 1), take);
        Avx.Store(output, Avx2.ConvertToVector256Int64(offset + Vector128.Create(0, 2, 4, 6)) + Vector256.Create(at));
    }

    private static Vector128<float> Take(Vector128<float> value, Vector128<float> max) =>
        Sse.Or(Sse.CompareGreaterThan(value, max), Sse.CompareUnordered(value, value));

    private static Vector128<int> Select(Vector128<int> kept, Vector128<int> taken, Vector128<float> take) =>
        Sse41.BlendVariable(kept.AsSingle(), taken.AsSingle(), take).AsInt32();

    /// <summary>Where <paramref name="value"/> &gt; max or is NaN, it becomes the maximum and its offset the winner's.</summary>
    private static void Take(Vector256<float> value, Vector256<int> at, ref Vector256<float> max, ref Vector256<int> offset)
    {
        var take = Avx.Or(Avx.Compare(value, max, FloatComparisonMode.OrderedGreaterThanNonSignaling), Avx.Compare(value, value, FloatComparisonMode.UnorderedNonSignaling));
        max = Avx.BlendVariable(max, value, take);
        offset = Avx.BlendVariable(offset.AsSingle(), at.AsSingle(), take).AsInt32();
    }

    private static IntPtr Data(Tensor t) => THSTensor_data(t.Handle) is var p && p != IntPtr.Zero ? p : throw new InvalidOperationException("LibTorch returned no data pointer for a CPU tensor");

    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_data(IntPtr tensor);
}
