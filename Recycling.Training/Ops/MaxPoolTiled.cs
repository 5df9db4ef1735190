using TorchSharp;
using static TorchSharp.torch;

namespace Recycling.Training.Ops;

/// <summary>
/// A 2-D max-pool whose windows tile the input (kernel = stride, no padding, no dilation: the CNN's 2×2/2) on the CPU.
/// LibTorch 2.10's NCHW max-pool visits every window element through scalar index arithmetic (op-speed: the CNN's
/// 32×16×28×28 pool takes 2.5–3.5 ms forward); here each window element is a strided view of the input and the
/// running maximum is a few whole-tensor comparisons. The winner of each window is chosen by max_pool2d's own rule,
/// scanning the window row by row and taking an element when it is greater than the maximum so far or NaN (so ties
/// go to the first maximum and NaNs to the last NaN); the output is gathered from the input at the winners'
/// positions, so values are the input's exactly and the gradient (gather's backward: a scatter into zeros) reaches
/// the same element that max_pool2d's backward routes it to.
/// </summary>
internal static class MaxPoolTiled
{
    /// <summary>Windows of at most this many elements: the comparisons per output grow with it.</summary>
    private const long MaxWindow = 16;

    public static bool Fits(Tensor x, long[] kernel, long[] strides, long[] pads, long[] dilations, bool ceil) =>
        x.device_type == DeviceType.CPU && x.dim() == 4 && x.is_floating_point()
        && kernel.Length == 2 && kernel.SequenceEqual(strides) && pads.All(p => p == 0) && dilations.All(d => d == 1)
        && kernel[0] * kernel[1] is > 1 and <= MaxWindow
        && x.shape[2] >= kernel[0] && x.shape[3] >= kernel[1]
        && (!ceil || (x.shape[2] % kernel[0] == 0 && x.shape[3] % kernel[1] == 0));

    public static Tensor Pool(Tensor x, long[] kernel)
    {
        var (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        var (kh, kw) = (kernel[0], kernel[1]);
        var (ho, wo) = (h / kh, w / kw);
        using var scope = NewDisposeScope();
        Tensor winner;
        using (no_grad())
        {
            // The window's element (dy, dx) for every output: rows dy, dy + kh, ..., columns dx, dx + kw, ...
            Tensor Element(long dy, long dx) => x[TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Slice(dy, dy + ((ho - 1) * kh) + 1, kh), TensorIndex.Slice(dx, dx + ((wo - 1) * kw) + 1, kw)];

            // Each window's first element's position in its input plane, flattened row-major.
            using var rows = TorchScalars.Range(ho, ScalarType.Int64, x.device).Times(kh * w).view(ho, 1);
            using var columns = TorchScalars.Range(wo, ScalarType.Int64, x.device).Times(kw);
            var origin = rows.Plus(columns);
            var best = Element(0, 0);
            winner = origin.expand(n, c, ho, wo);
            for (var dy = 0L; dy < kh; dy++)
            {
                for (var dx = dy == 0 ? 1L : 0L; dx < kw; dx++)
                {
                    var candidate = Element(dy, dx);
                    var take = candidate.gt(best).logical_or_(candidate.isnan());
                    best = torch.where(take, candidate, best);
                    winner = torch.where(take, origin.Plus((dy * w) + dx), winner);
                }
            }
        }

        var pooled = x.reshape(n, c, h * w).gather(2, winner.reshape(n, c, ho * wo)).view(n, c, ho, wo);
        return pooled.MoveToOuterDisposeScope();
    }
}
