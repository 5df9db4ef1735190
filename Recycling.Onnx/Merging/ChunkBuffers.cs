namespace Recycling.Onnx.Merging;

/// <summary>Encodes merged fp32 chunks to the stored type and writes them to the writer's stream.</summary>
internal sealed class StreamSink(Stream stream, OnnxDataType type, ChunkBuffers buffers, Action<long> onOverflow) : TensorMerger.ITensorSink
{
    private readonly long _start = stream.Position;

    public void Write(long offset, ReadOnlySpan<float> values)
    {
        if (stream.Position != _start + OnnxDataTypes.RawByteLength(type, offset))
        {
            throw new InvalidOperationException($"chunk at element {offset} written out of order");
        }

        if (type == OnnxDataType.Float)
        {
            stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
            return;
        }

        var encoded = buffers.Encoded(OnnxDataTypes.RawByteLength(type, values.Length));
        var overflowed = ElementCodec.Encode(values, type, encoded);
        if (overflowed > 0)
        {
            onOverflow(overflowed);
        }

        stream.Write(encoded);
    }

    public void Patch(long index, float value)
    {
        var end = stream.Position;
        Span<byte> encoded = stackalloc byte[4];
        var size = (int)OnnxDataTypes.RawByteLength(type, 1);
        if (ElementCodec.Encode([value], type, encoded[..size]) > 0)
        {
            onOverflow(1);
        }

        stream.Position = _start + (index * size);
        stream.Write(encoded[..size]);
        stream.Position = end;
    }
}

/// <summary>
/// Buffers reused for every tensor of a merge: pinned read slots (one per input, base and Fisher tensor), the merged
/// fp32 chunk and its encoding. At most a chunk each, whatever the tensor sizes.
/// </summary>
internal sealed unsafe class ChunkBuffers
{
    private readonly List<byte[]> _slots = [];
    private float[] _values = [];
    private byte[] _encoded = [];

    /// <summary>A pinned buffer of at least <paramref name="bytes"/> bytes for slot <paramref name="index"/>, valid until that slot is asked again.</summary>
    public byte* Slot(int index, long bytes)
    {
        while (_slots.Count <= index)
        {
            _slots.Add([]);
        }

        if (_slots[index].Length < bytes)
        {
            _slots[index] = GC.AllocateUninitializedArray<byte>(checked((int)Math.Max(bytes, 4096)), pinned: true);
        }

        return (byte*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref _slots[index][0]);
    }

    /// <summary>Room for <paramref name="count"/> fp32 values (at most a chunk), valid until the next call.</summary>
    public Span<float> Values(long count)
    {
        if (_values.Length < count)
        {
            _values = GC.AllocateUninitializedArray<float>(checked((int)count));
        }

        return _values.AsSpan(0, (int)count);
    }

    public Span<byte> Encoded(long bytes)
    {
        if (_encoded.Length < bytes)
        {
            _encoded = GC.AllocateUninitializedArray<byte>(checked((int)bytes));
        }

        return _encoded.AsSpan(0, (int)bytes);
    }
}
