using System.Buffers;

namespace Recycling.Onnx.IO;

/// <summary>Exposes mapped bytes as <see cref="Memory{T}"/> so protobuf can write them without a copy (UnsafeByteOperations.UnsafeWrap).</summary>
internal sealed unsafe class UnmanagedMemory(byte* pointer, int length) : MemoryManager<byte>
{
    public override Span<byte> GetSpan() => new(pointer, length);

    public override MemoryHandle Pin(int elementIndex = 0) => new(pointer + elementIndex);

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
    }
}
