namespace Recycling.Training.Ops;

/// <summary>
/// Which of the CPU kernels that Conv and MaxPool choose by shape are allowed (<see cref="ConvAsMatmul"/>,
/// <see cref="MaxPoolChannelsLast"/>, <see cref="MaxPoolTiled"/>); where none applies, or it is not allowed, LibTorch's default kernel runs.
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
        TiledPool = 16,
        GatheredPool = 32,
        All = Dense | Pointwise | Unfolded | ChannelsLastPool | TiledPool | GatheredPool,
    }

    /// <summary>
    /// The dense and pointwise convolutions by default. The unfolded one-channel convolution and the channels-last
    /// max-pool are each faster alone (op-speed) but the zoo CNN's whole step, with both, took 2–4 ms more CPU than
    /// with LibTorch's default kernels in every round measured: not located yet, so they run only when asked for.
    /// The tiled max-pool (whole-tensor comparisons on strided views, then a gather) is exact but slower than
    /// LibTorch's pool alone (op-speed: 4.0 against 3.5 ms for the CNN's first pool, forward and backward).
    /// </summary>
    public static Kinds Allowed { get; set; } = Kinds.Dense | Kinds.Pointwise | Kinds.GatheredPool;

    public static bool Allows(Kinds kind) => (Allowed & kind) == kind;
}
