namespace Recycling.Onnx.IO;

/// <summary>Protobuf wire types (the low three bits of a field tag).</summary>
internal enum WireType
{
    Varint = 0,
    Fixed64 = 1,
    LengthDelimited = 2,
    StartGroup = 3,
    EndGroup = 4,
    Fixed32 = 5,
}

/// <summary>
/// Reads protobuf wire format from a span, with every bound checked: a malformed input gives a
/// <see cref="WireFormatException"/>, which callers turn into an <see cref="OnnxFormatException"/> naming the file.
/// </summary>
internal ref struct WireReader(ReadOnlySpan<byte> buffer, long baseOffset = 0)
{
    private readonly ReadOnlySpan<byte> _buffer = buffer;

    public int Position { get; private set; }

    public readonly bool AtEnd => Position >= _buffer.Length;

    /// <summary>Offset of the current position in the file the buffer came from.</summary>
    public readonly long FileOffset => baseOffset + Position;

    public ulong ReadVarint()
    {
        ulong result = 0;
        for (var shift = 0; shift < 64; shift += 7)
        {
            if (Position >= _buffer.Length)
            {
                throw new WireFormatException($"truncated varint at byte {FileOffset}");
            }

            var b = _buffer[Position++];
            if (shift == 63 && b > 1)
            {
                throw new WireFormatException($"varint overflows 64 bits at byte {FileOffset - 1}");
            }

            result |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                return result;
            }
        }

        throw new WireFormatException($"varint longer than 10 bytes at byte {FileOffset}");
    }

    public (int Field, WireType Type) ReadTag()
    {
        var start = FileOffset;
        var tag = ReadVarint();
        var field = tag >> 3;
        var type = (WireType)(tag & 7);
        if (field is 0 or > 536_870_911)
        {
            throw new WireFormatException($"invalid field number {field} at byte {start}");
        }

        if (type is WireType.StartGroup or WireType.EndGroup || (int)type > 5)
        {
            throw new WireFormatException($"unsupported wire type {(int)type} for field {field} at byte {start}");
        }

        return ((int)field, type);
    }

    /// <summary>Reads a length prefix and returns the bounds of the payload that follows, advancing past it.</summary>
    public (int Start, int Length) ReadLengthDelimited()
    {
        var at = FileOffset;
        var length = ReadVarint();
        if (length > (ulong)(_buffer.Length - Position))
        {
            throw new WireFormatException($"length {length} at byte {at} runs past the end of its message ({_buffer.Length - Position} bytes left)");
        }

        var start = Position;
        Position += (int)length;
        return (start, (int)length);
    }

    public ReadOnlySpan<byte> ReadBytes(int count)
    {
        var start = Position;
        Advance(count);
        return _buffer.Slice(start, count);
    }

    public byte ReadByte()
    {
        if (Position >= _buffer.Length)
        {
            throw new WireFormatException($"truncated fixed-width value at byte {FileOffset}");
        }

        return _buffer[Position++];
    }

    public void Skip(WireType type)
    {
        switch (type)
        {
            case WireType.Varint:
                ReadVarint();
                break;
            case WireType.Fixed64:
                Advance(8);
                break;
            case WireType.Fixed32:
                Advance(4);
                break;
            case WireType.LengthDelimited:
                ReadLengthDelimited();
                break;
            default:
                throw new WireFormatException($"unsupported wire type {(int)type} at byte {FileOffset}");
        }
    }

    private void Advance(int count)
    {
        if (_buffer.Length - Position < count)
        {
            throw new WireFormatException($"truncated fixed-width field at byte {FileOffset}");
        }

        Position += count;
    }
}

internal sealed class WireFormatException(string message) : Exception(message);
