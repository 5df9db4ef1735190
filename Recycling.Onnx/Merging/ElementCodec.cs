namespace Recycling.Onnx.Merging;

/// <summary>The merge kernels' element codec: fp32 to and from the stored type, exact-size spans, through <see cref="ElementTypes"/>.</summary>
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

        return ElementTypes.Of(dataType).Encode!(source, destination);
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

        ElementTypes.Of(dataType).Decode!(source, destination);
    }
}
