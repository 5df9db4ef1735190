using System.Buffers;

namespace Recycling.Onnx.Merging;

/// <summary>
/// A read-only view of one tensor's raw little-endian elements (float32, float16 or bfloat16) in memory the
/// caller keeps alive and pinned for the duration of a kernel call: a memory-mapped file view, a pinned buffer.
/// Kernels read it in place; nothing is copied whole.
/// </summary>
internal readonly unsafe struct TensorSource
{
    public TensorSource(void* data, long length, OnnxDataType dataType)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (!IsSupported(dataType))
        {
            throw new RecyclingException(
                $"merge kernels accept float32, float16 and bfloat16 tensors, not {dataType}.");
        }

        if (data == null && length > 0)
        {
            throw new ArgumentNullException(nameof(data));
        }

        Data = (byte*)data;
        Length = length;
        DataType = dataType;
    }

    public byte* Data { get; }

    /// <summary>
    /// True when <see cref="Data"/> points into a read-only file mapping: CPU kernels then release each chunk's pages
    /// from the resident set once they have read it (<see cref="IO.MappedFile.ReleaseResidentPages(byte*, long)"/>),
    /// so a merge holds the chunks in flight, not whole input tensors. Never set it for other memory.
    /// </summary>
    public bool IsMapped { get; init; }

    /// <summary>Number of elements (not bytes).</summary>
    public long Length { get; }

    public OnnxDataType DataType { get; }

    public static bool IsSupported(OnnxDataType dataType) =>
        dataType is OnnxDataType.Float or OnnxDataType.Float16 or OnnxDataType.BFloat16;

    public static int ElementSize(OnnxDataType dataType) => dataType switch
    {
        OnnxDataType.Float => 4,
        OnnxDataType.Float16 or OnnxDataType.BFloat16 => 2,
        _ => throw new RecyclingException($"merge kernels accept float32, float16 and bfloat16 tensors, not {dataType}."),
    };

    /// <summary>
    /// Pins <paramref name="bytes"/> (an array or a memory manager) and views it as elements of
    /// <paramref name="dataType"/>; dispose <paramref name="pin"/> after the kernel call.
    /// </summary>
    public static TensorSource Pin(ReadOnlyMemory<byte> bytes, OnnxDataType dataType, out MemoryHandle pin)
    {
        int size = ElementSize(dataType);
        if (bytes.Length % size != 0)
        {
            throw new RecyclingException($"{bytes.Length} bytes is not a whole number of {dataType} elements.");
        }

        pin = bytes.Pin();
        return new TensorSource(pin.Pointer, bytes.Length / size, dataType);
    }
}
