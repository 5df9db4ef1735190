namespace Recycling.Training.Ops;

/// <summary>
/// Whether Conv and MaxPool pick their kernel by shape on the CPU (<see cref="ConvAsMatmul"/>,
/// <see cref="MaxPoolChannelsLast"/>) or always call LibTorch's default one. On by default; the benchmark turns it
/// off in a separate process (`train-speed --default-kernels`) to measure what the choice gains.
/// </summary>
internal static class KernelChoice
{
    public static bool ByShape { get; set; } = true;
}
