using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>
/// 2-D convolutions that one matrix product computes faster than LibTorch 2.10's oneDNN convolution, chosen by shape
/// (as cuDNN's benchmark mode chooses an algorithm): the same sums in another order, so forward and gradients equal
/// the convolution's within float32 rounding.
/// </summary>
internal static class ConvAsMatmul
{
    /// <summary>Weights of the dense form are gathered every step: above this many values the gather costs more than it saves.</summary>
    private const long MaxDenseWeights = 1L << 23;

    /// <summary>
    /// A convolution over an input with no more positions than the kernel has taps (ResNet's 512→512 3×3 on 2×2): every
    /// output position reads at most all input positions, so the convolution is one dense layer from C·H·W inputs to
    /// O·Ho·Wo outputs whose weight matrix is gathered from the kernel (zero where a tap falls outside the input), with
    /// fewer multiply-adds than the convolution's (H·W ≤ kh·kw per output).
    /// </summary>
    public static bool DenseFits(long[] input, long[] weight, long[] strides, long[] pads, long[] dilations, long groups)
    {
        if (input.Length != 4 || weight.Length != 4 || groups != 1 || input[1] != weight[1] || input[2] * input[3] > weight[2] * weight[3])
        {
            return false;
        }

        var (ho, wo) = (Output(input[2], weight[2], strides[0], pads[0], dilations[0]), Output(input[3], weight[3], strides[1], pads[1], dilations[1]));
        return ho > 0 && wo > 0 && weight[0] * weight[1] * input[2] * input[3] * ho * wo <= MaxDenseWeights;
    }

    public static Tensor Dense(Tensor x, Tensor w, Tensor? bias, long[] strides, long[] pads, long[] dilations)
    {
        var (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        var (o, kh, kw) = (w.shape[0], w.shape[2], w.shape[3]);
        var (ho, wo) = (Output(h, kh, strides[0], pads[0], dilations[0]), Output(wd, kw, strides[1], pads[1], dilations[1]));
        var taps = kh * kw;

        // For each (output position, input position): the kernel tap that links them, or `taps` (a zero tap) for none.
        var index = new long[ho * wo * h * wd];
        var allLinked = true;
        for (var p = 0; p < ho * wo; p++)
        {
            for (var q = 0; q < h * wd; q++)
            {
                var ky = Tap((q / wd) - ((p / wo) * strides[0]) + pads[0], dilations[0], kh);
                var kx = Tap((q % wd) - ((p % wo) * strides[1]) + pads[1], dilations[1], kw);
                var linked = ky >= 0 && kx >= 0;
                allLinked &= linked;
                index[(p * h * wd) + q] = linked ? (ky * kw) + kx : taps;
            }
        }

        // Weights as [O, taps, C] so that the gathered matrix is [O·P, Q·C] in one copy; the input as [N, Q·C].
        var byTap = w.reshape(o, c, taps).transpose(1, 2);
        if (!allLinked)
        {
            byTap = F.pad(byTap, [0, 0, 0, 1]);
        }

        using var gather = tensor(index, device: w.device);
        var dense = byTap.index_select(1, gather).reshape(o * ho * wo, h * wd * c);
        var flat = x.permute(0, 2, 3, 1).reshape(n, h * wd * c);
        var expandedBias = bias?.unsqueeze(1).expand(o, ho * wo).reshape(o * ho * wo);
        return F.linear(flat, dense, expandedBias).view(n, o, ho, wo);
    }

    private static long Output(long size, long kernel, long stride, long pad, long dilation) =>
        size + (2 * pad) - (dilation * (kernel - 1)) - 1 is var span and >= 0 ? (span / stride) + 1 : 0;

    private static long Tap(long offset, long dilation, long size) =>
        offset >= 0 && offset % dilation == 0 && offset / dilation < size ? offset / dilation : -1;

    /// <summary>
    /// A convolution of one input channel (a grey image's first layer, the CNN's 1→16 3×3 on 28×28): oneDNN computes
    /// in blocks of 8 channels with layout conversions of the whole output, which cost more than the few multiply-adds;
    /// here the input's patches (unfold) times the weight matrix, the output in NCHW directly.
    /// </summary>
    public static bool UnfoldedFits(long[] input, long[] weight, long groups) =>
        input.Length == 4 && weight.Length == 4 && groups == 1 && input[1] == 1 && weight[1] == 1;

    public static Tensor Unfolded(Tensor x, Tensor w, Tensor? bias, long[] strides, long[] pads, long[] dilations)
    {
        var (n, h, wd) = (x.shape[0], x.shape[2], x.shape[3]);
        var (o, kh, kw) = (w.shape[0], w.shape[2], w.shape[3]);
        var (ho, wo) = (Output(h, kh, strides[0], pads[0], dilations[0]), Output(wd, kw, strides[1], pads[1], dilations[1]));
        var patches = F.unfold(x, (kh, kw), (dilations[0], dilations[1]), (pads[0], pads[1]), (strides[0], strides[1]));
        var y = w.reshape(o, -1).matmul(patches);
        if (bias is not null)
        {
            y = y.Plus(bias.view(1, o, 1));
        }

        return y.view(n, o, ho, wo);
    }

    /// <summary>A 1×1 convolution with stride and no padding (ResNet's down-sampling projection): the strided pixels times the weight matrix.</summary>
    public static bool PointwiseFits(long[] input, long[] weight, long[] strides, long[] pads, long groups) =>
        input.Length == 4 && weight.Length == 4 && groups == 1 && input[1] == weight[1] && weight[2] == 1 && weight[3] == 1 && pads.All(p => p == 0) && strides.Any(s => s > 1);

    public static Tensor Pointwise(Tensor x, Tensor w, Tensor? bias, long[] strides)
    {
        var picked = x[TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Slice(null, null, strides[0]), TensorIndex.Slice(null, null, strides[1])];
        var (n, ho, wo) = (picked.shape[0], picked.shape[2], picked.shape[3]);
        var o = w.shape[0];
        var rows = picked.permute(0, 2, 3, 1).reshape(n * ho * wo, x.shape[1]);
        return F.linear(rows, w.view(o, x.shape[1]), bias).view(n, ho, wo, o).permute(0, 3, 1, 2);
    }
}
