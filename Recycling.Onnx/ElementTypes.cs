using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Recycling.Onnx.Merging;

namespace Recycling.Onnx;

/// <summary>What an element type's values are.</summary>
internal enum ElementKind
{
    Undefined,
    Float,
    SignedInteger,
    UnsignedInteger,
    Bool,
    Complex,
    String,
}

/// <summary>Decodes little-endian elements to float32; <c>raw</c> holds at least the elements <c>destination</c> wants.</summary>
internal delegate void ElementDecoder(ReadOnlySpan<byte> raw, Span<float> destination);

/// <summary>Encodes float32 values as little-endian elements; returns how many finite values overflowed to ±infinity.</summary>
internal delegate long ElementEncoder(ReadOnlySpan<float> source, Span<byte> destination);

/// <summary>Decodes little-endian integer (or bool) elements to long.</summary>
internal delegate void IntegerDecoder(ReadOnlySpan<byte> raw, Span<long> destination);

/// <summary>
/// One ONNX element type and everything the toolkit knows about it: the reader (raw sizes, typed protobuf fields),
/// the writer and the merge kernels (fp32 decode and encode), .npy files (numpy code, CLR type) and the CLI (names).
/// </summary>
/// <param name="Type">The TensorProto.DataType value.</param>
/// <param name="Bits">Bits one element takes in raw_data; 0 for STRING (variable) and UNDEFINED.</param>
/// <param name="Kind">Float (real floating types only), integer, bool, complex or string.</param>
/// <param name="TypedField">The TensorProto field that holds its values when raw_data is not used (4 float_data,
/// 5 int32_data, 6 string_data, 7 int64_data, 10 double_data, 11 uint64_data); 0 for UNDEFINED.</param>
/// <param name="TypedValueBytes">Raw bytes one typed-field value fills (a complex element takes two values, a packed
/// sub-byte element shares one value per byte).</param>
/// <param name="NpyCode">numpy's dtype code without the byte order ("f4"), or null when .npy files of it are not read or written.</param>
/// <param name="Clr">The .NET type of one element, or null when there is none.</param>
/// <param name="Names">Names the CLI and merge configs accept for an output type, the first one shown in messages; empty
/// when merges cannot write it.</param>
/// <param name="Decode">To float32 (exact for every type narrower than double; integers above 2^24 round), or null.</param>
/// <param name="Encode">From float32, rounding to nearest even, or null when the merge kernels cannot write the type.</param>
/// <param name="DecodeInteger">To long, for integer and bool types.</param>
/// <param name="MaxFinite">The largest finite value (floating types).</param>
internal sealed record ElementType(
    OnnxDataType Type,
    int Bits,
    ElementKind Kind,
    int TypedField,
    int TypedValueBytes,
    string? NpyCode = null,
    Type? Clr = null,
    string[]? Names = null,
    ElementDecoder? Decode = null,
    ElementEncoder? Encode = null,
    IntegerDecoder? DecodeInteger = null,
    double MaxFinite = 0)
{
    public bool IsFloatingPoint => Kind == ElementKind.Float;

    /// <summary>Whole bytes per element; 0 for sub-byte and variable-size types.</summary>
    public int Size => Bits % 8 == 0 ? Bits / 8 : 0;

    /// <summary>Whether the merge kernels read and write it in place (float32, float16, bfloat16).</summary>
    public bool IsMergeable => Encode is not null;

    /// <summary>The name used in messages: the first CLI name, or the enum name.</summary>
    public string Name => Names is [var first, ..] ? first : Type.ToString();

    /// <summary>Bytes that <paramref name="elementCount"/> elements take in raw_data (sub-byte types packed, rounded up).</summary>
    public long RawByteLength(long elementCount) => Bits == 0 ? 0 : checked((elementCount * Bits) + 7) / 8;

    /// <summary>How many typed-field values hold <paramref name="elementCount"/> elements (two per complex, one per byte of sub-byte types).</summary>
    public long TypedValueCount(long elementCount) => Kind == ElementKind.String ? elementCount
        : Bits >= 8 ? elementCount * (Bits / 8 / TypedValueBytes)
        : RawByteLength(elementCount);
}

/// <summary>The table of element types: one row per ONNX element type; everything else reads it.</summary>
internal static class ElementTypes
{
    private static readonly ElementType Unknown = new(OnnxDataType.Undefined, 0, ElementKind.Undefined, 0, 1);

    private static readonly ElementType[] Rows =
    [
        Unknown,
        new(OnnxDataType.Float, 32, ElementKind.Float, 4, 4, "f4", typeof(float), ["fp32", "float32", "float"], FloatCodecs.DecodeFloat32, FloatCodecs.EncodeFloat32, MaxFinite: float.MaxValue),
        Integer<byte>(OnnxDataType.UInt8, ElementKind.UnsignedInteger, "u1"),
        Integer<sbyte>(OnnxDataType.Int8, ElementKind.SignedInteger, "i1"),
        Integer<ushort>(OnnxDataType.UInt16, ElementKind.UnsignedInteger, null),
        Integer<short>(OnnxDataType.Int16, ElementKind.SignedInteger, "i2"),
        Integer<int>(OnnxDataType.Int32, ElementKind.SignedInteger, "i4"),
        Integer<long>(OnnxDataType.Int64, ElementKind.SignedInteger, "i8", typedField: 7),
        new(OnnxDataType.String, 0, ElementKind.String, 6, 1),
        new(OnnxDataType.Bool, 8, ElementKind.Bool, 5, 1, "b1", typeof(bool), Decode: FloatCodecs.DecodeBool, DecodeInteger: DecodeIntegers<byte>),
        new(OnnxDataType.Float16, 16, ElementKind.Float, 5, 2, "f2", typeof(Half), ["fp16", "float16", "half"], FloatCodecs.DecodeFloat16, FloatCodecs.EncodeFloat16, MaxFinite: (double)Half.MaxValue),
        new(OnnxDataType.Double, 64, ElementKind.Float, 10, 8, "f8", typeof(double), Decode: FloatCodecs.DecodeDouble, MaxFinite: double.MaxValue),
        Integer<uint>(OnnxDataType.UInt32, ElementKind.UnsignedInteger, null, typedField: 11),
        Integer<ulong>(OnnxDataType.UInt64, ElementKind.UnsignedInteger, null, typedField: 11),
        new(OnnxDataType.Complex64, 64, ElementKind.Complex, 4, 4),
        new(OnnxDataType.Complex128, 128, ElementKind.Complex, 10, 8),
        new(OnnxDataType.BFloat16, 16, ElementKind.Float, 5, 2, Names: ["bf16", "bfloat16"], Decode: FloatCodecs.DecodeBFloat16, Encode: FloatCodecs.EncodeBFloat16, MaxFinite: FloatCodecs.BFloat16MaxValue),
        Float8(OnnxDataType.Float8E4M3FN, FloatCodecs.Float8E4M3FN),
        Float8(OnnxDataType.Float8E4M3FNUZ, FloatCodecs.Float8E4M3FNUZ),
        Float8(OnnxDataType.Float8E5M2, FloatCodecs.Float8E5M2),
        Float8(OnnxDataType.Float8E5M2FNUZ, FloatCodecs.Float8E5M2FNUZ),
        new(OnnxDataType.UInt4, 4, ElementKind.UnsignedInteger, 5, 1),
        new(OnnxDataType.Int4, 4, ElementKind.SignedInteger, 5, 1),
        new(OnnxDataType.Float4E2M1, 4, ElementKind.Float, 5, 1, Decode: FloatCodecs.DecodeFloat4E2M1, MaxFinite: 6),
        Float8(OnnxDataType.Float8E8M0, FloatCodecs.Float8E8M0),
        new(OnnxDataType.UInt2, 2, ElementKind.UnsignedInteger, 5, 1),
        new(OnnxDataType.Int2, 2, ElementKind.SignedInteger, 5, 1),
    ];

    /// <summary>Every defined element type (UNDEFINED excluded), in wire-value order.</summary>
    public static IEnumerable<ElementType> All => Rows.Skip(1);

    /// <summary>The row of <paramref name="type"/>; an undefined or unknown value gets a row that knows nothing (0 bits, no codec).</summary>
    public static ElementType Of(OnnxDataType type) => (uint)type < (uint)Rows.Length ? Rows[(int)type] : Unknown;

    public static bool IsDefined(OnnxDataType type) => Of(type) is { Kind: not ElementKind.Undefined };

    /// <summary>The type a CLI or config name (fp32, float16, bf16 ...; any case) stands for, or null.</summary>
    public static ElementType? FromName(string name) =>
        All.FirstOrDefault(row => row.Names is not null && row.Names.Contains(name, StringComparer.OrdinalIgnoreCase));

    /// <summary>The types merges can write, named for messages: "fp32, fp16 or bf16".</summary>
    public static string MergeableNames(Func<ElementType, string> name, string lastSeparator)
    {
        var names = All.Where(row => row.IsMergeable).Select(name).ToArray();
        return names.Length < 2 ? string.Join("", names) : string.Join(", ", names[..^1]) + lastSeparator + names[^1];
    }

    /// <summary>The type with numpy dtype code <paramref name="code"/> ("f4"), or null.</summary>
    public static ElementType? FromNpyCode(string code) => All.FirstOrDefault(row => row.NpyCode == code);

    /// <summary>The .npy type whose elements are <typeparamref name="T"/>, or null.</summary>
    public static ElementType? FromClr<T>() => All.FirstOrDefault(row => row.NpyCode is not null && row.Clr == typeof(T));

    private static ElementType Integer<T>(OnnxDataType type, ElementKind kind, string? npyCode, int typedField = 5)
        where T : unmanaged, IBinaryInteger<T>
    {
        var size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        return new(type, size * 8, kind, typedField, size, npyCode, typeof(T), Decode: FloatCodecs.DecodeNumbers<T>, DecodeInteger: DecodeIntegers<T>);
    }

    private static ElementType Float8(OnnxDataType type, float[] values) =>
        new(type, 8, ElementKind.Float, 5, 1, Decode: (raw, destination) => FloatCodecs.Lookup(values, raw, destination),
            MaxFinite: values.Where(float.IsFinite).Max());

    private static void DecodeIntegers<T>(ReadOnlySpan<byte> raw, Span<long> destination)
        where T : unmanaged, IBinaryInteger<T>
    {
        var values = MemoryMarshal.Cast<byte, T>(raw);
        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = long.CreateTruncating(values[i]);
        }
    }
}

/// <summary>The fp32 decoders and encoders of <see cref="ElementTypes"/> (little-endian machines; the toolkit needs one).</summary>
internal static class FloatCodecs
{
    /// <summary>The largest finite bfloat16, 0x7F7F: (2 − 2⁻⁷) × 2¹²⁷.</summary>
    public const float BFloat16MaxValue = 3.3895314e38f;

    private const ushort HalfInfinity = 0x7C00;
    private const ushort BFloat16Infinity = 0x7F80;

    public static readonly float[] Float8E4M3FN = Build8(e4m3fn: true);
    public static readonly float[] Float8E4M3FNUZ = Build8(e4m3fnuz: true);
    public static readonly float[] Float8E5M2 = Build8(e5m2: true);
    public static readonly float[] Float8E5M2FNUZ = Build8(e5m2fnuz: true);
    public static readonly float[] Float8E8M0 = Build8(e8m0: true);
    private static readonly float[] Float4E2M1 = [0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f];

    public static void DecodeFloat32(ReadOnlySpan<byte> raw, Span<float> destination) =>
        MemoryMarshal.Cast<byte, float>(raw)[..destination.Length].CopyTo(destination);

    public static void DecodeFloat16(ReadOnlySpan<byte> raw, Span<float> destination) =>
        TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(raw)[..destination.Length], destination);

    public static void DecodeBFloat16(ReadOnlySpan<byte> raw, Span<float> destination)
    {
        var bits = MemoryMarshal.Cast<byte, ushort>(raw);
        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = HalfBits.BFloat16ToSingle(bits[i]);
        }
    }

    public static void DecodeDouble(ReadOnlySpan<byte> raw, Span<float> destination)
    {
        var values = MemoryMarshal.Cast<byte, double>(raw);
        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = (float)values[i];
        }
    }

    public static void DecodeFloat4E2M1(ReadOnlySpan<byte> raw, Span<float> destination)
    {
        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = Float4E2M1[(raw[i >> 1] >> ((i & 1) * 4)) & 0xF];
        }
    }

    public static void DecodeBool(ReadOnlySpan<byte> raw, Span<float> destination)
    {
        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = raw[i] != 0 ? 1f : 0f;
        }
    }

    public static void DecodeNumbers<T>(ReadOnlySpan<byte> raw, Span<float> destination)
        where T : unmanaged, INumberBase<T>
    {
        var values = MemoryMarshal.Cast<byte, T>(raw);
        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = float.CreateTruncating(values[i]);
        }
    }

    public static void Lookup(float[] table, ReadOnlySpan<byte> raw, Span<float> destination)
    {
        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = table[raw[i]];
        }
    }

    public static long EncodeFloat32(ReadOnlySpan<float> source, Span<byte> destination)
    {
        MemoryMarshal.AsBytes(source).CopyTo(destination);
        return 0;
    }

    /// <summary>Rounds to nearest even (TensorPrimitives.ConvertToHalf).</summary>
    public static long EncodeFloat16(ReadOnlySpan<float> source, Span<byte> destination)
    {
        TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<byte, Half>(destination));
        return CountOverflows(source, MemoryMarshal.Cast<byte, ushort>(destination), (float)Half.MaxValue, HalfInfinity);
    }

    /// <summary>Rounds to nearest even; NaN stays a NaN.</summary>
    public static long EncodeBFloat16(ReadOnlySpan<float> source, Span<byte> destination)
    {
        var bf16 = MemoryMarshal.Cast<byte, ushort>(destination);
        for (var i = 0; i < source.Length; i++)
        {
            bf16[i] = HalfBits.SingleToBFloat16(source[i]);
        }

        return CountOverflows(source, bf16, BFloat16MaxValue, BFloat16Infinity);
    }

    /// <summary>Finite source values whose encoding is ±infinity; one SIMD pass when every magnitude is below the type's maximum.</summary>
    private static long CountOverflows(ReadOnlySpan<float> source, ReadOnlySpan<ushort> encoded, float maxFinite, ushort infinity)
    {
        if (source.IsEmpty || float.Abs(TensorPrimitives.MaxMagnitude(source)) <= maxFinite)
        {
            return 0; // also false for NaN, which then takes the exact count below
        }

        long count = 0;
        for (var i = 0; i < source.Length; i++)
        {
            if ((encoded[i] & 0x7FFF) == infinity && float.IsFinite(source[i]))
            {
                count++;
            }
        }

        return count;
    }

    private static float[] Build8(bool e4m3fn = false, bool e4m3fnuz = false, bool e5m2 = false, bool e5m2fnuz = false, bool e8m0 = false)
    {
        var table = new float[256];
        for (var b = 0; b < 256; b++)
        {
            table[b] = e8m0 ? (b == 0xFF ? float.NaN : MathF.ScaleB(1f, b - 127))
                : e5m2 ? (float)BitConverter.UInt16BitsToHalf((ushort)(b << 8))
                : Decode8(b, exponentBits: e4m3fn || e4m3fnuz ? 4 : 5, bias: e4m3fn ? 7 : e4m3fnuz ? 8 : 16, fnuz: e4m3fnuz || e5m2fnuz);
        }

        return table;
    }

    /// <summary>Decodes the finite-only float8 formats: FN has no infinities and one NaN pattern per sign (all ones);
    /// FNUZ has no negative zero, 0x80 is its only NaN, and the all-ones exponent holds ordinary numbers.</summary>
    private static float Decode8(int b, int exponentBits, int bias, bool fnuz)
    {
        var mantissaBits = 7 - exponentBits;
        var sign = (b & 0x80) != 0 ? -1f : 1f;
        var exponent = (b >> mantissaBits) & ((1 << exponentBits) - 1);
        var mantissa = b & ((1 << mantissaBits) - 1);
        if (fnuz && b == 0x80)
        {
            return float.NaN;
        }

        if (!fnuz && (b & 0x7F) == 0x7F)
        {
            return float.NaN;
        }

        return exponent == 0
            ? sign * MathF.ScaleB(mantissa, 1 - bias - mantissaBits)
            : sign * MathF.ScaleB((1 << mantissaBits) + mantissa, exponent - bias - mantissaBits);
    }
}
