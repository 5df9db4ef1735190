using System.Runtime.Intrinsics;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// An fp64 sum of |τ| over one tensor in 8 lanes: element e (its index in the whole tensor) adds to lane e mod 8, each
/// lane in index order, and <see cref="Total"/> adds the lanes in a fixed tree. So the sum does not depend on how the
/// tensor is chunked, on the machine's SIMD width, or on the path (whole tensor, chunked, before the kernels), and it
/// runs in SIMD. mergekit sums in fp32 in torch's order, so no order is part of the rule; the references compare at 1e-6.
/// </summary>
internal struct L1Lanes
{
    private const int Lanes = 8;

    private Vector256<double> _low;  // lanes 0–3
    private Vector256<double> _high; // lanes 4–7

    public readonly double Total
    {
        get
        {
            var pairs = _low + _high; // lane j + lane j + 4
            return (pairs[0] + pairs[1]) + (pairs[2] + pairs[3]);
        }
    }

    /// <summary>The sum of |v| over <paramref name="values"/>, element 0 being element 0 of the tensor.</summary>
    public static double Of(ReadOnlySpan<float> values)
    {
        var sum = default(L1Lanes);
        sum.Add(values, 0);
        return sum.Total;
    }

    /// <summary>Adds |v| of elements [<paramref name="offset"/>, offset + values.Length) of the tensor.</summary>
    public void Add(ReadOnlySpan<float> values, long offset)
    {
        int i = Head(offset, values.Length);
        for (int h = 0; h < i; h++)
        {
            AddOne(offset + h, values[h]);
        }

        var magnitude = Vector256.Create(HalfBits.MagnitudeMask);
        ref float first = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(values);
        for (; i <= values.Length - Lanes; i += Lanes)
        {
            var v = (Vector256.LoadUnsafe(ref first, (nuint)i).AsUInt32() & magnitude).AsSingle();
            var (low, high) = Vector256.Widen(v);
            _low += low;
            _high += high;
        }

        for (; i < values.Length; i++)
        {
            AddOne(offset + i, values[i]);
        }
    }

    /// <summary>
    /// DARE's L1 pass in one sweep: adds |τ| to <paramref name="before"/> and |τ| of the entries the counter-based mask of
    /// <paramref name="key"/> keeps (element e draws <see cref="DareMask.Keeps"/>(key, e), e its index in the tensor) to
    /// <paramref name="after"/>. With <paramref name="keptBits"/> (one bit per element of the tensor, bit e mod 8 of
    /// byte e / 8), records the mask so the merge need not draw it again.
    /// </summary>
    public static void AddDare(ref L1Lanes before, ref L1Lanes after, ReadOnlySpan<float> tau, long offset, ulong key, uint dropThreshold,
        Span<byte> keptBits) => AddDare(ref before, ref after, tau, default, offset, key, dropThreshold, keptBits);

    /// <summary>
    /// <see cref="AddDare(ref L1Lanes, ref L1Lanes, ReadOnlySpan{float}, long, ulong, uint, Span{byte})"/> of τ = values − baseline
    /// (fp32, as a separate subtraction would give), without writing τ anywhere; an empty baseline means τ = values.
    /// </summary>
    public static void AddDare(ref L1Lanes before, ref L1Lanes after, ReadOnlySpan<float> values, ReadOnlySpan<float> baseline, long offset, ulong key,
        uint dropThreshold, Span<byte> keptBits)
    {
        bool hasBase = !baseline.IsEmpty;
        if (hasBase && baseline.Length != values.Length)
        {
            throw new ArgumentException($"{baseline.Length} base values for {values.Length} values", nameof(baseline));
        }

        int i = Head(offset, values.Length);
        for (int h = 0; h < i; h++)
        {
            DareOne(ref before, ref after, hasBase ? values[h] - baseline[h] : values[h], offset + h, key, dropThreshold, keptBits);
        }

        var magnitude = Vector256.Create(HalfBits.MagnitudeMask);
        var threshold = Vector256.Create(dropThreshold);
        var golden = Vector256.Create(DareMask.Golden);
        var step = Vector256.Create(unchecked(4 * DareMask.Golden));
        // key + e·φ for the lanes' elements, advanced by additions: the same 64-bit values, without a multiply per draw.
        var counter = Vector256.Create(key) + ((Vector256.Create((ulong)(offset + i)) + Vector256<ulong>.Indices) * golden);
        ref float first = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(values);
        ref float firstBase = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(baseline);
        bool record = !keptBits.IsEmpty;
        for (; i <= values.Length - Lanes; i += Lanes)
        {
            var lower = counter;
            var upper = counter + step;
            counter = upper + step;
            var keeps = Vector256.GreaterThanOrEqual(DareMask.Draws(lower, upper), threshold);
            var x = Vector256.LoadUnsafe(ref first, (nuint)i);
            var v = (hasBase ? x - Vector256.LoadUnsafe(ref firstBase, (nuint)i) : x).AsUInt32() & magnitude;
            var (low, high) = Vector256.Widen(v.AsSingle());
            before._low += low;
            before._high += high;
            (low, high) = Vector256.Widen((v & keeps).AsSingle());
            after._low += low;
            after._high += high;
            if (record)
            {
                keptBits[(int)((offset + i) >> 3)] = (byte)keeps.ExtractMostSignificantBits();
            }
        }

        for (; i < values.Length; i++)
        {
            DareOne(ref before, ref after, hasBase ? values[i] - baseline[i] : values[i], offset + i, key, dropThreshold, keptBits);
        }
    }

    /// <summary>Zeroes (+0) the entries of elements [offset, offset + tau.Length) whose bit in <paramref name="keptBits"/> (recorded by AddDare) is clear.</summary>
    public static void ZeroDropped(Span<float> tau, long offset, ReadOnlySpan<byte> keptBits)
    {
        int i = Head(offset, tau.Length);
        for (int h = 0; h < i; h++)
        {
            tau[h] = Kept(keptBits, offset + h) ? tau[h] : 0;
        }

        var laneBits = Vector256.Create(1u, 2, 4, 8, 16, 32, 64, 128);
        ref float first = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(tau);
        for (; i <= tau.Length - Lanes; i += Lanes)
        {
            var stays = ~Vector256.Equals(Vector256.Create((uint)keptBits[(int)((offset + i) >> 3)]) & laneBits, Vector256<uint>.Zero);
            (Vector256.LoadUnsafe(ref first, (nuint)i).AsUInt32() & stays).AsSingle().StoreUnsafe(ref first, (nuint)i);
        }

        for (; i < tau.Length; i++)
        {
            tau[i] = Kept(keptBits, offset + i) ? tau[i] : 0;
        }
    }

    /// <summary>Elements to take one by one until the tensor index is a multiple of 8 (the lanes line up from there).</summary>
    private static int Head(long offset, int length) => (int)Math.Min(length, (Lanes - (offset % Lanes)) % Lanes);

    private static bool Kept(ReadOnlySpan<byte> bits, long e) => (bits[(int)(e >> 3)] & (1 << (int)(e & 7))) != 0;

    private static void DareOne(ref L1Lanes before, ref L1Lanes after, float value, long e, ulong key, uint dropThreshold, Span<byte> keptBits)
    {
        before.AddOne(e, value);
        bool keeps = DareMask.Keeps(key, e, dropThreshold);
        after.AddOne(e, keeps ? value : 0);
        if (!keptBits.IsEmpty)
        {
            int bit = 1 << (int)(e & 7);
            keptBits[(int)(e >> 3)] = (byte)(keeps ? keptBits[(int)(e >> 3)] | bit : keptBits[(int)(e >> 3)] & ~bit);
        }
    }

    private void AddOne(long e, float value)
    {
        int lane = (int)(e & 7);
        double magnitude = Math.Abs(value);
        if (lane < 4)
        {
            _low = _low.WithElement(lane, _low[lane] + magnitude);
        }
        else
        {
            _high = _high.WithElement(lane - 4, _high[lane - 4] + magnitude);
        }
    }
}
