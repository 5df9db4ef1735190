using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>
/// A 2-D max-pool on the CPU run in NHWC memory order and its result returned in NCHW: LibTorch 2.10's channels-last
/// max-pool kernel with both copies takes about half the CPU time of its NCHW kernel (op-speed: the CNN's 2×2 pool
/// 2.0 ms against 4.4 forward and backward). The same kernel family and scan order, so values and the gradient's
/// routing (the first maximum of each window; ties are not split) equal max_pool2d's exactly. Only for the pool:
/// LibTorch's channels-last BatchNorm is slower, so the tensors around it stay NCHW. Off by default
/// (<see cref="KernelChoice"/>): the zoo CNN's whole training step was slower with it.
/// </summary>
internal static class MaxPoolChannelsLast
{
    public static bool Fits(Tensor x, long[] kernel) => KernelChoice.Allows(KernelChoice.Kinds.ChannelsLastPool) && kernel.Length == 2 && x.dim() == 4 && x.device_type == DeviceType.CPU;

    public static Tensor Pool(Tensor x, long[] kernel, long[] strides, long[] pads, long[] dilations, bool ceil)
    {
        using var nhwc = x.permute(0, 2, 3, 1).contiguous();
        using var channelsLast = nhwc.permute(0, 3, 1, 2);
        using var pooled = F.max_pool2d(channelsLast, kernel, strides, pads, dilations, ceil);
        return pooled.contiguous();
    }
}
