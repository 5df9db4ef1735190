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
            throw Unsupported(dataType);
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

    public static bool IsSupported(OnnxDataType dataType) => ElementTypes.Of(dataType).IsMergeable;

    public static int ElementSize(OnnxDataType dataType) => IsSupported(dataType)
        ? ElementTypes.Of(dataType).Size
        : throw Unsupported(dataType);

    private static RecyclingException Unsupported(OnnxDataType dataType) =>
        new($"merge kernels accept {ElementTypes.MergeableNames(row => row.Names![1], " and ")} tensors, not {dataType}.");

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

/// <summary>
/// One aligned parameter's tensors (inputs, base, Fisher tensors) read a chunk of elements at a time, so a tensor of any
/// size is merged through buffers of <see cref="ChunkElements"/> elements. <see cref="TensorMerger"/> calls
/// <see cref="Load"/> for consecutive chunks starting at multiples of <see cref="ChunkElements"/>.
/// </summary>
internal interface ITensorChunks
{
    /// <summary>Elements per tensor.</summary>
    long Length { get; }

    /// <summary>The largest chunk <see cref="Load"/> is asked for: a multiple of the TIES sample stride, or the whole tensor.</summary>
    int ChunkElements { get; }

    /// <summary>Views of the current chunk, valid until the next <see cref="Load"/>.</summary>
    ReadOnlySpan<TensorSource> Inputs { get; }

    TensorSource? Base { get; }

    ReadOnlySpan<TensorSource> Fishers { get; }

    /// <summary>
    /// Makes elements [offset, offset + count) current. With <paramref name="sampleOf"/> (a tensor id), only the runs the
    /// TIES sample reads (<see cref="MagnitudeThreshold.SampleBlocks"/>) need to be valid.
    /// </summary>
    void Load(long offset, int count, ulong? sampleOf = null);
}

/// <summary>Whole tensors already in memory, as one chunk.</summary>
internal sealed class WholeTensors(TensorSource[] inputs, TensorSource? baseline, TensorSource[] fishers) : ITensorChunks
{
    public long Length => inputs[0].Length;

    public int ChunkElements => (int)Math.Min(int.MaxValue, Math.Max(1, Length));

    public ReadOnlySpan<TensorSource> Inputs => inputs;

    public TensorSource? Base => baseline;

    public ReadOnlySpan<TensorSource> Fishers => fishers;

    public void Load(long offset, int count, ulong? sampleOf = null)
    {
        if (offset != 0 || count != Length)
        {
            throw new InvalidOperationException($"whole tensors are one chunk of {Length} elements, not [{offset}, +{count})");
        }
    }
}
