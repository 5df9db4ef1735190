using System.Runtime.Intrinsics;

namespace Recycling.Onnx.Merging;

/// <summary>The instruction-set width a CPU kernel runs with. Every path computes the same elementwise results.</summary>
internal enum SimdPath
{
    Scalar,
    Vector128,
    Vector256,
    Vector512,
}

/// <summary>Which <see cref="SimdPath"/>s this machine accelerates, and which one kernels use by default.</summary>
internal static class SimdPaths
{
    /// <summary>Forces a path for the whole process: <c>scalar</c>, <c>128</c>, <c>256</c> or <c>512</c>.</summary>
    public const string EnvironmentVariable = "RECYCLING_SIMD";

    public static bool IsAvailable(SimdPath path) => path switch
    {
        SimdPath.Scalar => true,
        SimdPath.Vector128 => Vector128.IsHardwareAccelerated,
        SimdPath.Vector256 => Vector256.IsHardwareAccelerated,
        SimdPath.Vector512 => Vector512.IsHardwareAccelerated,
        _ => false,
    };

    /// <summary>Every path this machine can run, narrowest first (tests run all of them).</summary>
    public static IReadOnlyList<SimdPath> Available { get; } =
        Enum.GetValues<SimdPath>().Where(IsAvailable).ToArray();

    /// <summary>The widest accelerated path, unless <see cref="EnvironmentVariable"/> forces another.</summary>
    public static SimdPath Default { get; } = Resolve(Environment.GetEnvironmentVariable(EnvironmentVariable));

    internal static SimdPath Resolve(string? forced)
    {
        if (string.IsNullOrWhiteSpace(forced))
        {
            return Available[^1];
        }

        SimdPath path = forced.Trim().ToLowerInvariant() switch
        {
            "scalar" => SimdPath.Scalar,
            "128" or "vector128" => SimdPath.Vector128,
            "256" or "vector256" => SimdPath.Vector256,
            "512" or "vector512" => SimdPath.Vector512,
            _ => throw new RecyclingException(
                $"{EnvironmentVariable}={forced}: expected scalar, 128, 256 or 512."),
        };
        if (!IsAvailable(path))
        {
            throw new RecyclingException(
                $"{EnvironmentVariable}={forced}: this machine does not accelerate {path} " +
                $"(available: {string.Join(", ", Available)}).");
        }

        return path;
    }
}
