using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Recycling.Onnx.Merging;

/// <summary>Writes fp32 merge results as the output dtype's little-endian bytes.</summary>
internal static class ElementCodec
{
    /// <summary>
    /// Encodes <paramref name="source"/> into <paramref name="destination"/> (exactly
    /// <c>source.Length × ElementSize(dataType)</c> bytes): float32 copies, float16 rounds to nearest even
    /// (TensorPrimitives.ConvertToHalf), bfloat16 rounds to nearest even and keeps NaN a NaN. Returns how many finite
    /// values overflowed the narrower type's range and became ±infinity (0 for float32).
    /// </summary>
    public static long Encode(ReadOnlySpan<float> source, OnnxDataType dataType, Span<byte> destination)
    {
        int size = TensorSource.ElementSize(dataType);
        if (destination.Length != (long)source.Length * size)
        {
            throw new ArgumentException(
                $"destination holds {destination.Length} bytes; {source.Length} {dataType} elements need {(long)source.Length * size}.",
                nameof(destination));
        }

        switch (dataType)
        {
            case OnnxDataType.Float:
                MemoryMarshal.AsBytes(source).CopyTo(destination);
                return 0;
            case OnnxDataType.Float16:
                TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<byte, Half>(destination));
                return CountOverflows(source, MemoryMarshal.Cast<byte, ushort>(destination), (float)Half.MaxValue, HalfInfinity);
            default:
                Span<ushort> bf16 = MemoryMarshal.Cast<byte, ushort>(destination);
                for (int i = 0; i < source.Length; i++)
                {
                    bf16[i] = HalfBits.SingleToBFloat16(source[i]);
                }

                return CountOverflows(source, bf16, BFloat16MaxValue, BFloat16Infinity);
        }
    }

    /// <summary>The largest finite bfloat16, 0x7F7F: (2 − 2⁻⁷) × 2¹²⁷.</summary>
    internal const float BFloat16MaxValue = 3.3895314e38f;

    private const ushort HalfInfinity = 0x7C00;
    private const ushort BFloat16Infinity = 0x7F80;

    /// <summary>Finite source values whose encoding is ±infinity; one SIMD pass when every magnitude is below the type's maximum.</summary>
    private static long CountOverflows(ReadOnlySpan<float> source, ReadOnlySpan<ushort> encoded, float maxFinite, ushort infinity)
    {
        if (source.IsEmpty || float.Abs(TensorPrimitives.MaxMagnitude(source)) <= maxFinite)
        {
            return 0; // also false for NaN, which then takes the exact count below
        }

        long count = 0;
        for (int i = 0; i < source.Length; i++)
        {
            if ((encoded[i] & 0x7FFF) == infinity && float.IsFinite(source[i]))
            {
                count++;
            }
        }

        return count;
    }

    /// <summary>Decodes little-endian elements of <paramref name="dataType"/> to fp32 (exact for all three types).</summary>
    public static void Decode(ReadOnlySpan<byte> source, OnnxDataType dataType, Span<float> destination)
    {
        int size = TensorSource.ElementSize(dataType);
        if (source.Length != (long)destination.Length * size)
        {
            throw new ArgumentException(
                $"source holds {source.Length} bytes; {destination.Length} {dataType} elements need {(long)destination.Length * size}.",
                nameof(source));
        }

        switch (dataType)
        {
            case OnnxDataType.Float:
                MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
                break;
            case OnnxDataType.Float16:
                ReadOnlySpan<ushort> half = MemoryMarshal.Cast<byte, ushort>(source);
                for (int i = 0; i < half.Length; i++)
                {
                    destination[i] = HalfBits.HalfToSingle(half[i]);
                }

                break;
            default:
                ReadOnlySpan<ushort> bf16 = MemoryMarshal.Cast<byte, ushort>(source);
                for (int i = 0; i < bf16.Length; i++)
                {
                    destination[i] = HalfBits.BFloat16ToSingle(bf16[i]);
                }

                break;
        }
    }
}
