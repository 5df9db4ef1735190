using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Recycling.Onnx.Merging;

/// <summary>Writes fp32 merge results as the output dtype's little-endian bytes.</summary>
internal static class ElementCodec
{
    /// <summary>
    /// Encodes <paramref name="source"/> into <paramref name="destination"/> (exactly
    /// <c>source.Length × ElementSize(dataType)</c> bytes): float32 copies, float16 rounds to nearest even
    /// (TensorPrimitives.ConvertToHalf), bfloat16 rounds to nearest even and keeps NaN a NaN.
    /// </summary>
    public static void Encode(ReadOnlySpan<float> source, OnnxDataType dataType, Span<byte> destination)
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
                break;
            case OnnxDataType.Float16:
                TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<byte, Half>(destination));
                break;
            default:
                Span<ushort> bf16 = MemoryMarshal.Cast<byte, ushort>(destination);
                for (int i = 0; i < source.Length; i++)
                {
                    bf16[i] = HalfBits.SingleToBFloat16(source[i]);
                }

                break;
        }
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
