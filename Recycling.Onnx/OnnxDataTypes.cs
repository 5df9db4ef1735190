using System.Buffers.Binary;
using System.Numerics.Tensors;

namespace Recycling.Onnx;

/// <summary>Sizes of ONNX element types and conversions of every floating type to float32.</summary>
public static class OnnxDataTypes
{
    private static readonly float[] Float8E4M3FN = Build8(e4m3fn: true);
    private static readonly float[] Float8E4M3FNUZ = Build8(e4m3fnuz: true);
    private static readonly float[] Float8E5M2 = Build8(e5m2: true);
    private static readonly float[] Float8E5M2FNUZ = Build8(e5m2fnuz: true);
    private static readonly float[] Float8E8M0 = Build8(e8m0: true);
    private static readonly float[] Float4E2M1 = [0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f];

    /// <summary>Bits one element takes in raw_data; 0 for STRING (variable) and UNDEFINED.</summary>
    public static int BitsPerElement(OnnxDataType type) => type switch
    {
        OnnxDataType.Float or OnnxDataType.Int32 or OnnxDataType.UInt32 => 32,
        OnnxDataType.UInt8 or OnnxDataType.Int8 or OnnxDataType.Bool => 8,
        OnnxDataType.Float8E4M3FN or OnnxDataType.Float8E4M3FNUZ or OnnxDataType.Float8E5M2 or OnnxDataType.Float8E5M2FNUZ or OnnxDataType.Float8E8M0 => 8,
        OnnxDataType.UInt16 or OnnxDataType.Int16 or OnnxDataType.Float16 or OnnxDataType.BFloat16 => 16,
        OnnxDataType.Int64 or OnnxDataType.UInt64 or OnnxDataType.Double or OnnxDataType.Complex64 => 64,
        OnnxDataType.Complex128 => 128,
        OnnxDataType.UInt4 or OnnxDataType.Int4 or OnnxDataType.Float4E2M1 => 4,
        OnnxDataType.UInt2 or OnnxDataType.Int2 => 2,
        _ => 0,
    };

    public static bool IsDefined(OnnxDataType type) => type != OnnxDataType.Undefined && Enum.IsDefined(type);

    /// <summary>Real floating types (complex types excluded): the ones a weight average applies to.</summary>
    public static bool IsFloatingPoint(OnnxDataType type) => type is OnnxDataType.Float or OnnxDataType.Float16 or OnnxDataType.BFloat16
        or OnnxDataType.Double or OnnxDataType.Float8E4M3FN or OnnxDataType.Float8E4M3FNUZ or OnnxDataType.Float8E5M2
        or OnnxDataType.Float8E5M2FNUZ or OnnxDataType.Float8E8M0 or OnnxDataType.Float4E2M1;

    /// <summary>Bytes that <paramref name="elementCount"/> elements take in raw_data (sub-byte types packed, rounded up).</summary>
    public static long RawByteLength(OnnxDataType type, long elementCount)
    {
        var bits = BitsPerElement(type);
        return bits == 0 ? 0 : checked((elementCount * bits) + 7) / 8;
    }

    /// <summary>Converts little-endian raw elements of a floating type to float32 (exact for every type narrower than double).</summary>
    public static void ToFloat32(OnnxDataType type, ReadOnlySpan<byte> raw, Span<float> destination)
    {
        var count = destination.Length;
        if (raw.Length < RawByteLength(type, count))
        {
            throw new ArgumentException($"{raw.Length} bytes hold fewer than {count} {type} elements", nameof(raw));
        }

        switch (type)
        {
            case OnnxDataType.Float:
                if (BitConverter.IsLittleEndian)
                {
                    raw[..(count * 4)].CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(destination));
                }
                else
                {
                    for (var i = 0; i < count; i++)
                    {
                        destination[i] = BinaryPrimitives.ReadSingleLittleEndian(raw[(i * 4)..]);
                    }
                }

                break;
            case OnnxDataType.Float16:
                TensorPrimitives.ConvertToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(raw[..(count * 2)]), destination);
                break;
            case OnnxDataType.BFloat16:
                for (var i = 0; i < count; i++)
                {
                    destination[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(raw[(i * 2)..]) << 16);
                }

                break;
            case OnnxDataType.Double:
                for (var i = 0; i < count; i++)
                {
                    destination[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(raw[(i * 8)..]);
                }

                break;
            case OnnxDataType.Float8E4M3FN:
                Lookup(Float8E4M3FN, raw, destination);
                break;
            case OnnxDataType.Float8E4M3FNUZ:
                Lookup(Float8E4M3FNUZ, raw, destination);
                break;
            case OnnxDataType.Float8E5M2:
                Lookup(Float8E5M2, raw, destination);
                break;
            case OnnxDataType.Float8E5M2FNUZ:
                Lookup(Float8E5M2FNUZ, raw, destination);
                break;
            case OnnxDataType.Float8E8M0:
                Lookup(Float8E8M0, raw, destination);
                break;
            case OnnxDataType.Float4E2M1:
                for (var i = 0; i < count; i++)
                {
                    destination[i] = Float4E2M1[(raw[i >> 1] >> ((i & 1) * 4)) & 0xF];
                }

                break;
            default:
                throw new ArgumentException($"{type} is not a floating-point type", nameof(type));
        }
    }

    private static void Lookup(float[] table, ReadOnlySpan<byte> raw, Span<float> destination)
    {
        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = table[raw[i]];
        }
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
