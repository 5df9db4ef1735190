namespace Recycling.Training.Ops;

/// <summary>
/// Which of the CPU kernels that Conv and MaxPool choose by shape are allowed (<see cref="ConvAsMatmul"/>,
/// <see cref="MaxPoolChannelsLast"/>, <see cref="MaxPoolGathered"/>); where none applies, or it is not allowed, LibTorch's default kernel runs.
/// The benchmark sets this in its worker processes (`train-speed --default-kernels`, `--kernels`) to measure what
/// each choice gains; nothing else changes it.
/// </summary>
internal static class KernelChoice
{
    [Flags]
    public enum Kinds
    {
        None = 0,
        Dense = 1,
        Pointwise = 2,
        Unfolded = 4,
        ChannelsLastPool = 8,
        GatheredPool = 16,
        All = Dense | Pointwise | Unfolded | ChannelsLastPool | GatheredPool,
    }

    /// <summary>
    /// The dense and pointwise convolutions and the gathered 2×2 max-pool (<see cref="MaxPoolGathered"/>; op-speed: 1.4
    /// against LibTorch's 4.0 ms for the CNN's first pool, forward and backward) by default. The unfolded one-channel convolution and the channels-last
    /// max-pool are each faster alone (op-speed) but the zoo CNN's whole step, with both, took 2–4 ms more CPU than
    /// with LibTorch's default kernels in every round measured: not located yet, so they run only when asked for.
    /// </summary>
    public static Kinds Allowed { get; set; } = Kinds.Dense | Kinds.Pointwise | Kinds.GatheredPool;

    public static bool Allows(Kinds kind) => (Allowed & kind) == kind;
}
