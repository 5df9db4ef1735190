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

    /// <summary>
    /// Index in the tensor of element 0 of the sources a kernel is given (a tensor merged in chunks): the keys are
    /// shifted by it, so element e of a chunk draws what element ElementOffset + e of the whole tensor draws.
    /// </summary>
    public long ElementOffset { get; init; }

    /// <summary>
    /// The mask as an earlier pass over the same tensor drew it (<see cref="Methods.L1Lanes"/>), or null: per
    /// model, one bit per element of the WHOLE tensor (bit e mod 8 of byte e / 8, set where kept; element e is
    /// <see cref="ElementOffset"/> + the index in a call). These are the same decisions the draws make, so a kernel may
    /// read them instead of drawing again (the CPU kernels do: a bit costs less than a hash); the ILGPU kernels draw
    /// on the device, where that costs less than an upload.
    /// </summary>
    public IReadOnlyList<byte[]>? Recorded { get; init; }

    /// <summary>The counter key of model <paramref name="modelIndex"/>'s mask in this tensor (shifted by <see cref="ElementOffset"/>).</summary>
    public ulong KeyFor(int modelIndex) =>
        Mix(Mix(Mix(Seed ^ 0x5DA7_E5EE_D000_0000UL) ^ TensorId) + ((ulong)(uint)modelIndex + 1) * Golden) + ((ulong)ElementOffset * Golden);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Keeps(ulong key, long element, uint dropThreshold) =>
        (uint)(Mix(key + (ulong)element * Golden) >> 40) >= dropThreshold;

    /// <summary>
    /// <paramref name="destination"/>[i] = <paramref name="scale"/> where <paramref name="bits"/> (see <see cref="Recorded"/>)
    /// keeps element <paramref name="element"/> + i, else 0: what the draws' scales would be.
    /// </summary>
    public static unsafe void ScalesFromBits(byte* bits, long element, int count, float scale, float* destination)
    {
        int i = 0;
        for (; i < count && ((element + i) & 7) != 0; i++)
        {
            destination[i] = KeptBit(bits, element + i) ? scale : 0f;
        }

        var laneBits = Vector256.Create(1u, 2, 4, 8, 16, 32, 64, 128);
        var kept = Vector256.Create(scale);
        for (; i <= count - 8; i += 8)
        {
            var set = ~Vector256.Equals(Vector256.Create((uint)bits[(element + i) >> 3]) & laneBits, Vector256<uint>.Zero);
            (set.AsSingle() & kept).Store(destination + i);
        }

        for (; i < count; i++)
        {
            destination[i] = KeptBit(bits, element + i) ? scale : 0f;
        }
    }

    /// <summary>
    /// The 24-bit draws <see cref="Keeps"/> compares, of 8 elements whose counters key + e·φ are in
    /// <paramref name="lower"/> (the first 4) and <paramref name="upper"/>: Mix without its last step, since
    /// z ^ (z &gt;&gt; 31) has the same bits 40–63 as z (z &gt;&gt; 31 has only 33 bits).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Draws(Vector256<ulong> lower, Vector256<ulong> upper) =>
        Vector256.Narrow(Top(lower), Top(upper));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<ulong> Top(Vector256<ulong> z)
    {
        z = (z ^ (z >> 30)) * Vector256.Create(0xBF58_476D_1CE4_E5B9UL);
        z = (z ^ (z >> 27)) * Vector256.Create(0x94D0_49BB_1331_11EBUL);
        return z >> 40;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe bool KeptBit(byte* bits, long e) => (bits[e >> 3] & (1 << (int)(e & 7))) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
        return z ^ (z >> 31);
    }
}
