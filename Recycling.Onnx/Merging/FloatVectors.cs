using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Recycling.Onnx.Merging;

/// <summary>
/// One SIMD register of fp32 lanes, in the style of TensorPrimitives' operators: kernels are written once as
/// generic methods over <typeparamref name="TSelf"/> and the JIT specialises them per width (scalar, 128, 256, 512).
/// Comparisons return lane masks (all bits set where true). Arithmetic is never fused (no FMA), so every width
/// gives bit-identical elementwise results.
/// </summary>
internal unsafe interface IFloatVector<TSelf> where TSelf : unmanaged, IFloatVector<TSelf>
{
    static abstract int Count { get; }

    static abstract TSelf Create(float value);

    static abstract TSelf Load(float* source);

    static abstract void Store(TSelf value, float* destination);

    static abstract TSelf operator +(TSelf left, TSelf right);

    static abstract TSelf operator -(TSelf left, TSelf right);

    static abstract TSelf operator *(TSelf left, TSelf right);

    static abstract TSelf operator /(TSelf left, TSelf right);

    static abstract TSelf GreaterThan(TSelf left, TSelf right);

    static abstract TSelf LessThan(TSelf left, TSelf right);

    static abstract TSelf EqualsMask(TSelf left, TSelf right);

    /// <summary>Mask of lanes whose magnitude bit pattern (sign cleared) is ≥ <paramref name="thresholdBits"/>: NaN counts as the largest magnitude.</summary>
    static abstract TSelf MagnitudeAtLeast(TSelf value, uint thresholdBits);

    /// <summary>Mask of lanes whose magnitude bit pattern (sign cleared) is below <paramref name="bits"/> (unsigned).</summary>
    static abstract TSelf MagnitudeBelow(TSelf value, uint bits);

    /// <summary>Mask of lanes whose magnitude bit pattern (sign cleared) is in [start, start + <see cref="MagnitudeThreshold.FineBins"/>).</summary>
    static abstract TSelf MagnitudeInWindow(TSelf value, uint start);

    /// <summary>A mask's lanes as bits, lane i in bit i.</summary>
    static abstract uint MaskBits(TSelf mask);

    static abstract TSelf Select(TSelf mask, TSelf whenTrue, TSelf whenFalse);

    static abstract bool AnyTrue(TSelf mask);

    /// <summary>Converts <paramref name="count"/> IEEE half-precision bit patterns to fp32 (exact, NaN payloads kept).</summary>
    static abstract void DecodeFloat16(ushort* source, float* destination, int count);

    /// <summary>Converts <paramref name="count"/> bfloat16 bit patterns to fp32 (exact).</summary>
    static abstract void DecodeBFloat16(ushort* source, float* destination, int count);

    /// <summary>Σ left[i]·right[i] with every product and sum in fp64.</summary>
    static abstract double Dot(float* left, float* right, int count);

    /// <summary>DARE's factor for elements start..start+count of the mask keyed <paramref name="key"/>: <paramref name="scale"/> where kept, else 0 (see <see cref="DareMask"/>).</summary>
    static abstract void DareScales(ulong key, long start, int count, uint dropThreshold, float scale, float* destination);
}

/// <summary>Bit-level conversions shared by every width (and mirrored in the ILGPU kernels).</summary>
internal static class HalfBits
{
    public const uint MagnitudeMask = 0x7FFF_FFFFu;
    internal const uint ShiftedExponent = 0x7C00u << 13;
    internal const uint Rebias = (127 - 15) << 23;
    internal const uint SubnormalMagic = 113u << 23;

    /// <summary>IEEE half bit pattern to fp32 bit pattern, exactly (F. Giesen's branch-light conversion).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint ToSingleBits(uint half)
    {
        uint sign = (half & 0x8000u) << 16;
        uint bits = (half & 0x7FFFu) << 13;
        uint exponent = bits & ShiftedExponent;
        bits += Rebias;
        if (exponent == ShiftedExponent)
        {
            bits += Rebias;
        }
        else if (exponent == 0)
        {
            bits = BitConverter.SingleToUInt32Bits(
                BitConverter.UInt32BitsToSingle(bits + (1u << 23)) - BitConverter.UInt32BitsToSingle(SubnormalMagic));
        }

        return bits | sign;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HalfToSingle(ushort half) => BitConverter.UInt32BitsToSingle(ToSingleBits(half));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float BFloat16ToSingle(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>fp32 to bfloat16 with round-to-nearest-even; NaN stays a (quiet) NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort SingleToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & MagnitudeMask) > 0x7F80_0000u)
        {
            return (ushort)((bits >> 16) | 0x0040u);
        }

        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
}

internal readonly unsafe struct ScalarVector : IFloatVector<ScalarVector>
{
    private readonly float _value;

    private ScalarVector(float value) => _value = value;

    public static int Count => 1;

    private static ScalarVector Mask(bool condition) => new(BitConverter.Int32BitsToSingle(condition ? -1 : 0));

    private static bool IsSet(ScalarVector mask) => BitConverter.SingleToInt32Bits(mask._value) != 0;

    public static ScalarVector Create(float value) => new(value);

    public static ScalarVector Load(float* source) => new(*source);

    public static void Store(ScalarVector value, float* destination) => *destination = value._value;

    public static ScalarVector operator +(ScalarVector left, ScalarVector right) => new(left._value + right._value);

    public static ScalarVector operator -(ScalarVector left, ScalarVector right) => new(left._value - right._value);

    public static ScalarVector operator *(ScalarVector left, ScalarVector right) => new(left._value * right._value);

    public static ScalarVector operator /(ScalarVector left, ScalarVector right) => new(left._value / right._value);

    public static ScalarVector GreaterThan(ScalarVector left, ScalarVector right) => Mask(left._value > right._value);

    public static ScalarVector LessThan(ScalarVector left, ScalarVector right) => Mask(left._value < right._value);

    public static ScalarVector EqualsMask(ScalarVector left, ScalarVector right) => Mask(left._value == right._value);

    public static ScalarVector MagnitudeAtLeast(ScalarVector value, uint thresholdBits) =>
        Mask((BitConverter.SingleToUInt32Bits(value._value) & HalfBits.MagnitudeMask) >= thresholdBits);

    public static ScalarVector MagnitudeBelow(ScalarVector value, uint bits) =>
        Mask((BitConverter.SingleToUInt32Bits(value._value) & HalfBits.MagnitudeMask) < bits);

    public static ScalarVector MagnitudeInWindow(ScalarVector value, uint start) =>
        Mask((BitConverter.SingleToUInt32Bits(value._value) & HalfBits.MagnitudeMask) - start < MagnitudeThreshold.FineBins);

    public static uint MaskBits(ScalarVector mask) => IsSet(mask) ? 1u : 0u;

    public static ScalarVector Select(ScalarVector mask, ScalarVector whenTrue, ScalarVector whenFalse) =>
        IsSet(mask) ? whenTrue : whenFalse;

    public static bool AnyTrue(ScalarVector mask) => IsSet(mask);

    public static void DecodeFloat16(ushort* source, float* destination, int count)
    {
        for (int i = 0; i < count; i++)
        {
            destination[i] = HalfBits.HalfToSingle(source[i]);
        }
    }

    public static void DecodeBFloat16(ushort* source, float* destination, int count)
    {
        for (int i = 0; i < count; i++)
        {
            destination[i] = HalfBits.BFloat16ToSingle(source[i]);
        }
    }

    public static double Dot(float* left, float* right, int count)
    {
        double sum = 0;
        for (int i = 0; i < count; i++)
        {
            sum += (double)left[i] * right[i];
        }

        return sum;
    }
    public static void DareScales(ulong key, long start, int count, uint dropThreshold, float scale, float* destination)
    {
        for (int i = 0; i < count; i++)
        {
            destination[i] = DareMask.Keeps(key, start + i, dropThreshold) ? scale : 0f;
        }
    }
}

internal readonly unsafe struct Vector128F : IFloatVector<Vector128F>
{
    private readonly Vector128<float> _value;

    private Vector128F(Vector128<float> value) => _value = value;

    public static int Count => Vector128<float>.Count;

    public static Vector128F Create(float value) => new(Vector128.Create(value));

    public static Vector128F Load(float* source) => new(Vector128.Load(source));

    public static void Store(Vector128F value, float* destination) => value._value.Store(destination);

    public static Vector128F operator +(Vector128F left, Vector128F right) => new(left._value + right._value);

    public static Vector128F operator -(Vector128F left, Vector128F right) => new(left._value - right._value);

    public static Vector128F operator *(Vector128F left, Vector128F right) => new(left._value * right._value);

    public static Vector128F operator /(Vector128F left, Vector128F right) => new(left._value / right._value);

    public static Vector128F GreaterThan(Vector128F left, Vector128F right) => new(Vector128.GreaterThan(left._value, right._value));

    public static Vector128F LessThan(Vector128F left, Vector128F right) => new(Vector128.LessThan(left._value, right._value));

    public static Vector128F EqualsMask(Vector128F left, Vector128F right) => new(Vector128.Equals(left._value, right._value));

    public static Vector128F MagnitudeAtLeast(Vector128F value, uint thresholdBits) =>
        new(Vector128.GreaterThanOrEqual(value._value.AsUInt32() & Vector128.Create(HalfBits.MagnitudeMask), Vector128.Create(thresholdBits)).AsSingle());

    public static Vector128F MagnitudeBelow(Vector128F value, uint bits) =>
        new(Vector128.LessThan(value._value.AsUInt32() & Vector128.Create(HalfBits.MagnitudeMask), Vector128.Create(bits)).AsSingle());

    public static Vector128F MagnitudeInWindow(Vector128F value, uint start) =>
        new(Vector128.LessThan((value._value.AsUInt32() & Vector128.Create(HalfBits.MagnitudeMask)) - Vector128.Create(start),
            Vector128.Create((uint)MagnitudeThreshold.FineBins)).AsSingle());

    public static uint MaskBits(Vector128F mask) => (uint)mask._value.ExtractMostSignificantBits();

    public static Vector128F Select(Vector128F mask, Vector128F whenTrue, Vector128F whenFalse) =>
        new(Vector128.ConditionalSelect(mask._value, whenTrue._value, whenFalse._value));

    public static bool AnyTrue(Vector128F mask) => mask._value.ExtractMostSignificantBits() != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> HalfToSingle(Vector128<uint> half)
    {
        Vector128<uint> sign = (half & Vector128.Create(0x8000u)) << 16;
        Vector128<uint> bits = (half & Vector128.Create(0x7FFFu)) << 13;
        Vector128<uint> exponent = bits & Vector128.Create(HalfBits.ShiftedExponent);
        bits += Vector128.Create(HalfBits.Rebias);
        bits += Vector128.Equals(exponent, Vector128.Create(HalfBits.ShiftedExponent)) & Vector128.Create(HalfBits.Rebias);
        Vector128<uint> subnormal = (Vector128.AsSingle(bits + Vector128.Create(1u << 23))
            - Vector128.Create(HalfBits.SubnormalMagic).AsSingle()).AsUInt32();
        bits = Vector128.ConditionalSelect(Vector128.Equals(exponent, Vector128<uint>.Zero), subnormal, bits);
        return (bits | sign).AsSingle();
    }

    public static void DecodeFloat16(ushort* source, float* destination, int count)
    {
        int i = 0;
        for (; i <= count - Vector128<ushort>.Count; i += Vector128<ushort>.Count)
        {
            (Vector128<uint> lower, Vector128<uint> upper) = Vector128.Widen(Vector128.Load(source + i));
            HalfToSingle(lower).Store(destination + i);
            HalfToSingle(upper).Store(destination + i + Vector128<uint>.Count);
        }

        ScalarVector.DecodeFloat16(source + i, destination + i, count - i);
    }

    public static void DecodeBFloat16(ushort* source, float* destination, int count)
    {
        int i = 0;
        for (; i <= count - Vector128<ushort>.Count; i += Vector128<ushort>.Count)
        {
            (Vector128<uint> lower, Vector128<uint> upper) = Vector128.Widen(Vector128.Load(source + i));
            (lower << 16).AsSingle().Store(destination + i);
            (upper << 16).AsSingle().Store(destination + i + Vector128<uint>.Count);
        }

        ScalarVector.DecodeBFloat16(source + i, destination + i, count - i);
    }

    public static double Dot(float* left, float* right, int count)
    {
        Vector128<double> lowerSum = Vector128<double>.Zero, upperSum = Vector128<double>.Zero;
        int i = 0;
        for (; i <= count - Vector128<float>.Count; i += Vector128<float>.Count)
        {
            (Vector128<double> leftLower, Vector128<double> leftUpper) = Vector128.Widen(Vector128.Load(left + i));
            (Vector128<double> rightLower, Vector128<double> rightUpper) = Vector128.Widen(Vector128.Load(right + i));
            lowerSum += leftLower * rightLower;
            upperSum += leftUpper * rightUpper;
        }

        return Vector128.Sum(lowerSum + upperSum) + ScalarVector.Dot(left + i, right + i, count - i);
    }
    public static void DareScales(ulong key, long start, int count, uint dropThreshold, float scale, float* destination)
    {
        int lanes = Vector128<ulong>.Count;
        // key + e·φ for the lanes' elements, advanced by additions: the same 64-bit counters, without a multiply per draw.
        Vector128<ulong> counter = Vector128.Create(key) + ((Vector128.Create((ulong)start) + Vector128<ulong>.Indices) * Vector128.Create(DareMask.Golden));
        Vector128<ulong> step = Vector128.Create(unchecked((ulong)lanes * DareMask.Golden));
        Vector128<uint> threshold = Vector128.Create(dropThreshold);
        Vector128<float> kept = Vector128.Create(scale);
        int i = 0;
        for (; i <= count - 2 * lanes; i += 2 * lanes)
        {
            Vector128<ulong> lower = counter;
            Vector128<ulong> upper = counter + step;
            counter = upper + step;
            Vector128<uint> draws = Vector128.Narrow(Draw(lower), Draw(upper));
            (Vector128.GreaterThanOrEqual(draws, threshold).AsSingle() & kept).Store(destination + i);
        }

        ScalarVector.DareScales(key, start + i, count - i, dropThreshold, scale, destination + i);
    }

    /// <summary>The 24-bit draws of counters key + e·φ, as <see cref="DareMask.Draws"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<ulong> Draw(Vector128<ulong> z)
    {
        z = (z ^ (z >> 30)) * Vector128.Create(0xBF58_476D_1CE4_E5B9UL);
        z = (z ^ (z >> 27)) * Vector128.Create(0x94D0_49BB_1331_11EBUL);
        return z >> 40;
    }
}

internal readonly unsafe struct Vector256F : IFloatVector<Vector256F>
{
    private readonly Vector256<float> _value;

    private Vector256F(Vector256<float> value) => _value = value;

    public static int Count => Vector256<float>.Count;

    public static Vector256F Create(float value) => new(Vector256.Create(value));

    public static Vector256F Load(float* source) => new(Vector256.Load(source));

    public static void Store(Vector256F value, float* destination) => value._value.Store(destination);

    public static Vector256F operator +(Vector256F left, Vector256F right) => new(left._value + right._value);

    public static Vector256F operator -(Vector256F left, Vector256F right) => new(left._value - right._value);

    public static Vector256F operator *(Vector256F left, Vector256F right) => new(left._value * right._value);

    public static Vector256F operator /(Vector256F left, Vector256F right) => new(left._value / right._value);

    public static Vector256F GreaterThan(Vector256F left, Vector256F right) => new(Vector256.GreaterThan(left._value, right._value));

    public static Vector256F LessThan(Vector256F left, Vector256F right) => new(Vector256.LessThan(left._value, right._value));

    public static Vector256F EqualsMask(Vector256F left, Vector256F right) => new(Vector256.Equals(left._value, right._value));

    public static Vector256F MagnitudeAtLeast(Vector256F value, uint thresholdBits) =>
        new(Vector256.GreaterThanOrEqual(value._value.AsUInt32() & Vector256.Create(HalfBits.MagnitudeMask), Vector256.Create(thresholdBits)).AsSingle());

    public static Vector256F MagnitudeBelow(Vector256F value, uint bits) =>
        new(Vector256.LessThan(value._value.AsUInt32() & Vector256.Create(HalfBits.MagnitudeMask), Vector256.Create(bits)).AsSingle());

    public static Vector256F MagnitudeInWindow(Vector256F value, uint start) =>
        new(Vector256.LessThan((value._value.AsUInt32() & Vector256.Create(HalfBits.MagnitudeMask)) - Vector256.Create(start),
            Vector256.Create((uint)MagnitudeThreshold.FineBins)).AsSingle());

    public static uint MaskBits(Vector256F mask) => (uint)mask._value.ExtractMostSignificantBits();

    public static Vector256F Select(Vector256F mask, Vector256F whenTrue, Vector256F whenFalse) =>
        new(Vector256.ConditionalSelect(mask._value, whenTrue._value, whenFalse._value));

    public static bool AnyTrue(Vector256F mask) => mask._value.ExtractMostSignificantBits() != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> HalfToSingle(Vector256<uint> half)
    {
        Vector256<uint> sign = (half & Vector256.Create(0x8000u)) << 16;
        Vector256<uint> bits = (half & Vector256.Create(0x7FFFu)) << 13;
        Vector256<uint> exponent = bits & Vector256.Create(HalfBits.ShiftedExponent);
        bits += Vector256.Create(HalfBits.Rebias);
        bits += Vector256.Equals(exponent, Vector256.Create(HalfBits.ShiftedExponent)) & Vector256.Create(HalfBits.Rebias);
        Vector256<uint> subnormal = (Vector256.AsSingle(bits + Vector256.Create(1u << 23))
            - Vector256.Create(HalfBits.SubnormalMagic).AsSingle()).AsUInt32();
        bits = Vector256.ConditionalSelect(Vector256.Equals(exponent, Vector256<uint>.Zero), subnormal, bits);
        return (bits | sign).AsSingle();
    }

    public static void DecodeFloat16(ushort* source, float* destination, int count)
    {
        int i = 0;
        for (; i <= count - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
        {
            (Vector256<uint> lower, Vector256<uint> upper) = Vector256.Widen(Vector256.Load(source + i));
            HalfToSingle(lower).Store(destination + i);
            HalfToSingle(upper).Store(destination + i + Vector256<uint>.Count);
        }

        ScalarVector.DecodeFloat16(source + i, destination + i, count - i);
    }

    public static void DecodeBFloat16(ushort* source, float* destination, int count)
    {
        int i = 0;
        for (; i <= count - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
        {
            (Vector256<uint> lower, Vector256<uint> upper) = Vector256.Widen(Vector256.Load(source + i));
            (lower << 16).AsSingle().Store(destination + i);
            (upper << 16).AsSingle().Store(destination + i + Vector256<uint>.Count);
        }

        ScalarVector.DecodeBFloat16(source + i, destination + i, count - i);
    }

    public static double Dot(float* left, float* right, int count)
    {
        Vector256<double> lowerSum = Vector256<double>.Zero, upperSum = Vector256<double>.Zero;
        int i = 0;
        for (; i <= count - Vector256<float>.Count; i += Vector256<float>.Count)
        {
            (Vector256<double> leftLower, Vector256<double> leftUpper) = Vector256.Widen(Vector256.Load(left + i));
            (Vector256<double> rightLower, Vector256<double> rightUpper) = Vector256.Widen(Vector256.Load(right + i));
            lowerSum += leftLower * rightLower;
            upperSum += leftUpper * rightUpper;
        }

        return Vector256.Sum(lowerSum + upperSum) + ScalarVector.Dot(left + i, right + i, count - i);
    }
    public static void DareScales(ulong key, long start, int count, uint dropThreshold, float scale, float* destination)
    {
        int lanes = Vector256<ulong>.Count;
        // key + e·φ for the lanes' elements, advanced by additions: the same 64-bit counters, without a multiply per draw.
        Vector256<ulong> counter = Vector256.Create(key) + ((Vector256.Create((ulong)start) + Vector256<ulong>.Indices) * Vector256.Create(DareMask.Golden));
        Vector256<ulong> step = Vector256.Create(unchecked((ulong)lanes * DareMask.Golden));
        Vector256<uint> threshold = Vector256.Create(dropThreshold);
        Vector256<float> kept = Vector256.Create(scale);
        int i = 0;
        for (; i <= count - 2 * lanes; i += 2 * lanes)
        {
            Vector256<ulong> lower = counter;
            Vector256<ulong> upper = counter + step;
            counter = upper + step;
            Vector256<uint> draws = DareMask.Draws(lower, upper);
            (Vector256.GreaterThanOrEqual(draws, threshold).AsSingle() & kept).Store(destination + i);
        }

        ScalarVector.DareScales(key, start + i, count - i, dropThreshold, scale, destination + i);
    }
}

internal readonly unsafe struct Vector512F : IFloatVector<Vector512F>
{
    private readonly Vector512<float> _value;

    private Vector512F(Vector512<float> value) => _value = value;

    public static int Count => Vector512<float>.Count;

    public static Vector512F Create(float value) => new(Vector512.Create(value));

    public static Vector512F Load(float* source) => new(Vector512.Load(source));

    public static void Store(Vector512F value, float* destination) => value._value.Store(destination);

    public static Vector512F operator +(Vector512F left, Vector512F right) => new(left._value + right._value);

    public static Vector512F operator -(Vector512F left, Vector512F right) => new(left._value - right._value);

    public static Vector512F operator *(Vector512F left, Vector512F right) => new(left._value * right._value);

    public static Vector512F operator /(Vector512F left, Vector512F right) => new(left._value / right._value);

    public static Vector512F GreaterThan(Vector512F left, Vector512F right) => new(Vector512.GreaterThan(left._value, right._value));

    public static Vector512F LessThan(Vector512F left, Vector512F right) => new(Vector512.LessThan(left._value, right._value));

    public static Vector512F EqualsMask(Vector512F left, Vector512F right) => new(Vector512.Equals(left._value, right._value));

    public static Vector512F MagnitudeAtLeast(Vector512F value, uint thresholdBits) =>
        new(Vector512.GreaterThanOrEqual(value._value.AsUInt32() & Vector512.Create(HalfBits.MagnitudeMask), Vector512.Create(thresholdBits)).AsSingle());

    public static Vector512F MagnitudeBelow(Vector512F value, uint bits) =>
        new(Vector512.LessThan(value._value.AsUInt32() & Vector512.Create(HalfBits.MagnitudeMask), Vector512.Create(bits)).AsSingle());

    public static Vector512F MagnitudeInWindow(Vector512F value, uint start) =>
        new(Vector512.LessThan((value._value.AsUInt32() & Vector512.Create(HalfBits.MagnitudeMask)) - Vector512.Create(start),
            Vector512.Create((uint)MagnitudeThreshold.FineBins)).AsSingle());

    public static uint MaskBits(Vector512F mask) => (uint)mask._value.ExtractMostSignificantBits();

    public static Vector512F Select(Vector512F mask, Vector512F whenTrue, Vector512F whenFalse) =>
        new(Vector512.ConditionalSelect(mask._value, whenTrue._value, whenFalse._value));

    public static bool AnyTrue(Vector512F mask) => mask._value.ExtractMostSignificantBits() != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> HalfToSingle(Vector512<uint> half)
    {
        Vector512<uint> sign = (half & Vector512.Create(0x8000u)) << 16;
        Vector512<uint> bits = (half & Vector512.Create(0x7FFFu)) << 13;
        Vector512<uint> exponent = bits & Vector512.Create(HalfBits.ShiftedExponent);
        bits += Vector512.Create(HalfBits.Rebias);
        bits += Vector512.Equals(exponent, Vector512.Create(HalfBits.ShiftedExponent)) & Vector512.Create(HalfBits.Rebias);
        Vector512<uint> subnormal = (Vector512.AsSingle(bits + Vector512.Create(1u << 23))
            - Vector512.Create(HalfBits.SubnormalMagic).AsSingle()).AsUInt32();
        bits = Vector512.ConditionalSelect(Vector512.Equals(exponent, Vector512<uint>.Zero), subnormal, bits);
        return (bits | sign).AsSingle();
    }

    public static void DecodeFloat16(ushort* source, float* destination, int count)
    {
        int i = 0;
        for (; i <= count - Vector512<ushort>.Count; i += Vector512<ushort>.Count)
        {
            (Vector512<uint> lower, Vector512<uint> upper) = Vector512.Widen(Vector512.Load(source + i));
            HalfToSingle(lower).Store(destination + i);
            HalfToSingle(upper).Store(destination + i + Vector512<uint>.Count);
        }

        ScalarVector.DecodeFloat16(source + i, destination + i, count - i);
    }

    public static void DecodeBFloat16(ushort* source, float* destination, int count)
    {
        int i = 0;
        for (; i <= count - Vector512<ushort>.Count; i += Vector512<ushort>.Count)
        {
            (Vector512<uint> lower, Vector512<uint> upper) = Vector512.Widen(Vector512.Load(source + i));
            (lower << 16).AsSingle().Store(destination + i);
            (upper << 16).AsSingle().Store(destination + i + Vector512<uint>.Count);
        }

        ScalarVector.DecodeBFloat16(source + i, destination + i, count - i);
    }

    public static double Dot(float* left, float* right, int count)
    {
        Vector512<double> lowerSum = Vector512<double>.Zero, upperSum = Vector512<double>.Zero;
        int i = 0;
        for (; i <= count - Vector512<float>.Count; i += Vector512<float>.Count)
        {
            (Vector512<double> leftLower, Vector512<double> leftUpper) = Vector512.Widen(Vector512.Load(left + i));
            (Vector512<double> rightLower, Vector512<double> rightUpper) = Vector512.Widen(Vector512.Load(right + i));
            lowerSum += leftLower * rightLower;
            upperSum += leftUpper * rightUpper;
        }

        return Vector512.Sum(lowerSum + upperSum) + ScalarVector.Dot(left + i, right + i, count - i);
    }
    public static void DareScales(ulong key, long start, int count, uint dropThreshold, float scale, float* destination)
    {
        int lanes = Vector512<ulong>.Count;
        // key + e·φ for the lanes' elements, advanced by additions: the same 64-bit counters, without a multiply per draw.
        Vector512<ulong> counter = Vector512.Create(key) + ((Vector512.Create((ulong)start) + Vector512<ulong>.Indices) * Vector512.Create(DareMask.Golden));
        Vector512<ulong> step = Vector512.Create(unchecked((ulong)lanes * DareMask.Golden));
        Vector512<uint> threshold = Vector512.Create(dropThreshold);
        Vector512<float> kept = Vector512.Create(scale);
        int i = 0;
        for (; i <= count - 2 * lanes; i += 2 * lanes)
        {
            Vector512<ulong> lower = counter;
            Vector512<ulong> upper = counter + step;
            counter = upper + step;
            Vector512<uint> draws = Vector512.Narrow(Draw(lower), Draw(upper));
            (Vector512.GreaterThanOrEqual(draws, threshold).AsSingle() & kept).Store(destination + i);
        }

        ScalarVector.DareScales(key, start + i, count - i, dropThreshold, scale, destination + i);
    }

    /// <summary>The 24-bit draws of counters key + e·φ, as <see cref="DareMask.Draws"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<ulong> Draw(Vector512<ulong> z)
    {
        z = (z ^ (z >> 30)) * Vector512.Create(0xBF58_476D_1CE4_E5B9UL);
        z = (z ^ (z >> 27)) * Vector512.Create(0x94D0_49BB_1331_11EBUL);
        return z >> 40;
    }
}
