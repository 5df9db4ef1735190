namespace Recycling.Onnx;

/// <summary>Sizes of ONNX element types and conversions of every floating type to float32.</summary>
public static class OnnxDataTypes
{
    /// <summary>Bits one element takes in raw_data; 0 for STRING (variable) and UNDEFINED.</summary>
    public static int BitsPerElement(OnnxDataType type) => ElementTypes.Of(type).Bits;

    public static bool IsDefined(OnnxDataType type) => ElementTypes.IsDefined(type);

    /// <summary>Real floating types (complex types excluded): the ones a weight average applies to.</summary>
    public static bool IsFloatingPoint(OnnxDataType type) => ElementTypes.Of(type).IsFloatingPoint;

    /// <summary>Bytes that <paramref name="elementCount"/> elements take in raw_data (sub-byte types packed, rounded up).</summary>
    public static long RawByteLength(OnnxDataType type, long elementCount) => ElementTypes.Of(type).RawByteLength(elementCount);

    /// <summary>Converts little-endian raw elements of a floating type to float32 (exact for every type narrower than double).</summary>
    public static void ToFloat32(OnnxDataType type, ReadOnlySpan<byte> raw, Span<float> destination)
    {
        var row = ElementTypes.Of(type);
        var count = destination.Length;
        if (raw.Length < row.RawByteLength(count))
        {
            throw new ArgumentException($"{raw.Length} bytes hold fewer than {count} {type} elements", nameof(raw));
        }

        if (!row.IsFloatingPoint)
        {
            throw new ArgumentException($"{type} is not a floating-point type", nameof(type));
        }

        row.Decode!(raw, destination);
    }
}
