using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Recycling.Onnx.Merging;

/// <summary>
/// DARE's per-element drop decision (Yu et al. 2023): task-vector entry <c>e</c> of model <c>i</c> in tensor
/// <c>t</c> is dropped with probability p and otherwise rescaled by 1/(1−p). The decision is a pure function of
/// (seed, tensor id, model index, element index) — a counter-based generator (SplitMix64's finaliser over a keyed
/// counter) — so any order of evaluation, any chunking, the CPU and the GPU all draw the same mask.
/// Element e is kept iff the top 24 bits of <c>Mix(key + e·φ)</c> are ≥ round(p·2^24); the comparison is integer,
/// so no float rounding can make two devices disagree.
/// </summary>
internal readonly record struct DareMask
{
    public const ulong Golden = 0x9E37_79B9_7F4A_7C15UL;

    public DareMask(ulong seed, ulong tensorId, double dropRate)
    {
        if (!(dropRate >= 0 && dropRate < 1))
        {
            throw new RecyclingException($"DARE drop rate must be in [0, 1), not {dropRate}.");
        }

        Seed = seed;
        TensorId = tensorId;
        DropRate = dropRate;
        DropThreshold = (uint)Math.Round(dropRate * (1 << 24));
        Scale = (float)(1.0 / (1.0 - dropRate));
    }

    public ulong Seed { get; }

    public ulong TensorId { get; }

    public double DropRate { get; }

    /// <summary>round(p·2^24): a 24-bit draw below this drops the element.</summary>
    public uint DropThreshold { get; }

    /// <summary>1/(1−p) in fp32: the factor applied to kept entries.</summary>
    public float Scale { get; }

    /// <summary>The counter key of model <paramref name="modelIndex"/>'s mask in this tensor.</summary>
    public ulong KeyFor(int modelIndex) =>
        Mix(Mix(Mix(Seed ^ 0x5DA7_E5EE_D000_0000UL) ^ TensorId) + ((ulong)(uint)modelIndex + 1) * Golden);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Keeps(ulong key, long element, uint dropThreshold) =>
        (uint)(Mix(key + (ulong)element * Golden) >> 40) >= dropThreshold;

    /// <summary>
    /// row[j] = <paramref name="scale"/> where the mask keyed <paramref name="key"/> keeps element start + j, else 0, for
    /// j in [0, row.Length): <see cref="Keeps"/> 16 elements at a time with Vector512 or Vector256 where accelerated. The
    /// arithmetic is the same 64-bit integer arithmetic in every path, so every path draws the same mask.
    /// </summary>
    public static void FillScales(ulong key, long start, uint dropThreshold, float scale, Span<float> row)
    {
        int done = Vector512.IsHardwareAccelerated ? FillScales512(key, start, dropThreshold, scale, row)
            : Vector256.IsHardwareAccelerated ? FillScales256(key, start, dropThreshold, scale, row)
            : 0;
        FillScalesScalar(key, start + done, dropThreshold, scale, row[done..]);
    }

    internal static void FillScalesScalar(ulong key, long start, uint dropThreshold, float scale, Span<float> row)
    {
        for (int j = 0; j < row.Length; j++)
        {
            row[j] = Keeps(key, start + j, dropThreshold) ? scale : 0f;
        }
    }

    /// <summary>Fills whole groups of 16 elements; returns how many it filled.</summary>
    internal static int FillScales512(ulong key, long start, uint dropThreshold, float scale, Span<float> row)
    {
        var keys = Vector512.Create(key);
        var golden = Vector512.Create(Golden);
        var threshold = Vector512.Create((ulong)dropThreshold);
        var kept = Vector512.Create(BitConverter.SingleToUInt32Bits(scale));
        var lanes = Vector512.Create(0UL, 1, 2, 3, 4, 5, 6, 7);
        int j = 0;
        for (; j + 16 <= row.Length; j += 16)
        {
            var first = Vector512.Create((ulong)(start + j)) + lanes;
            var low = Vector512.GreaterThanOrEqual(Mix(keys + (first * golden)) >>> 40, threshold);
            var high = Vector512.GreaterThanOrEqual(Mix(keys + ((first + Vector512.Create(8UL)) * golden)) >>> 40, threshold);
            (Vector512.Narrow(low, high) & kept).AsSingle().StoreUnsafe(ref row[j]);
        }

        return j;
    }

    /// <summary>Fills whole groups of 8 elements; returns how many it filled.</summary>
    internal static int FillScales256(ulong key, long start, uint dropThreshold, float scale, Span<float> row)
    {
        var keys = Vector256.Create(key);
        var golden = Vector256.Create(Golden);
        var threshold = Vector256.Create((ulong)dropThreshold);
        var kept = Vector256.Create(BitConverter.SingleToUInt32Bits(scale));
        var lanes = Vector256.Create(0UL, 1, 2, 3);
        int j = 0;
        for (; j + 8 <= row.Length; j += 8)
        {
            var first = Vector256.Create((ulong)(start + j)) + lanes;
            var low = Vector256.GreaterThanOrEqual(Mix(keys + (first * golden)) >>> 40, threshold);
            var high = Vector256.GreaterThanOrEqual(Mix(keys + ((first + Vector256.Create(4UL)) * golden)) >>> 40, threshold);
            (Vector256.Narrow(low, high) & kept).AsSingle().StoreUnsafe(ref row[j]);
        }

        return j;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<ulong> Mix(Vector512<ulong> z)
    {
        z = (z ^ (z >>> 30)) * Vector512.Create(0xBF58_476D_1CE4_E5B9UL);
        z = (z ^ (z >>> 27)) * Vector512.Create(0x94D0_49BB_1331_11EBUL);
        return z ^ (z >>> 31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<ulong> Mix(Vector256<ulong> z)
    {
        z = (z ^ (z >>> 30)) * Vector256.Create(0xBF58_476D_1CE4_E5B9UL);
        z = (z ^ (z >>> 27)) * Vector256.Create(0x94D0_49BB_1331_11EBUL);
        return z ^ (z >>> 31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
        return z ^ (z >> 31);
    }
}
