using System.Buffers.Binary;

namespace Recycling.Onnx.IO;

/// <summary>
/// Decodes a tensor's typed fields (float_data, int32_data, int64_data, double_data, uint64_data) into little-endian
/// raw bytes, forward, in bounded memory: the TensorProto message is read through the file's handle a window at a time
/// (a file shortened meanwhile is an <see cref="OnnxFormatException"/>, not a crash), and values before the asked
/// offset are skipped (fixed-width runs by arithmetic, varint runs byte by byte). Reads at increasing offsets cost one
/// pass over the message in all; a read before the last one starts again from the message's first byte.
/// </summary>
internal sealed class TypedFieldCursor
{
    private const int WindowBytes = 64 << 10;

    private readonly MappedFile _file;
    private readonly long _messageOffset;
    private readonly int _messageLength;
    private readonly string _tensorPath;
    private readonly ElementType _type;
    private readonly byte[] _window = new byte[WindowBytes];
    private int _windowStart;
    private int _windowLength;
    private int _position;     // the next unread byte of the message
    private int _runEnd = -1;  // the end of the packed run being read; -1 between fields
    private long _values;      // values decoded or skipped so far

    internal TypedFieldCursor(MappedFile file, long messageOffset, int messageLength, OnnxDataType type, string tensorPath)
    {
        _file = file;
        _messageOffset = messageOffset;
        _messageLength = messageLength;
        _type = ElementTypes.Of(type);
        _tensorPath = tensorPath;
    }

    /// <summary>Copies raw bytes [offset, offset + destination.Length) of the decoded values.</summary>
    public void Read(long offset, Span<byte> destination)
    {
        var valueBytes = _type.TypedValueBytes;
        var first = offset / valueBytes;
        if (first < _values)
        {
            (_position, _runEnd, _values, _windowLength) = (0, -1, 0, 0);
        }

        try
        {
            Skip(first - _values);
            var within = (int)(offset - (first * valueBytes));
            Span<byte> one = stackalloc byte[8];
            for (var written = 0; written < destination.Length;)
            {
                if (within == 0 && destination.Length - written >= valueBytes)
                {
                    Next(destination.Slice(written, valueBytes));
                    written += valueBytes;
                    continue;
                }

                Next(one[..valueBytes]); // a value cut by the window's edge
                var n = Math.Min(valueBytes - within, destination.Length - written);
                one.Slice(within, n).CopyTo(destination[written..]);
                (written, within) = (written + n, 0);
            }
        }
        catch (WireFormatException e)
        {
            throw new OnnxFormatException(_file.Path, $"tensor {_tensorPath}: {e.Message}");
        }
    }

    /// <summary>Decodes the next value into <paramref name="slot"/> (TypedValueBytes wide).</summary>
    private void Next(Span<byte> slot)
    {
        EnterRun();
        var reader = Reader(Math.Min(10, _runEnd - _position), _runEnd);
        WriteValue(ref reader, slot);
        _position += reader.Position;
        _values++;
    }

    private void WriteValue(ref WireReader reader, Span<byte> slot)
    {
        switch (_type.TypedField)
        {
            case 4:
                BinaryPrimitives.WriteUInt32LittleEndian(slot, BinaryPrimitives.ReadUInt32LittleEndian(reader.ReadBytes(4)));
                break;
            case 10:
                BinaryPrimitives.WriteUInt64LittleEndian(slot, BinaryPrimitives.ReadUInt64LittleEndian(reader.ReadBytes(8)));
                break;
            default:
                var value = reader.ReadVarint();
                for (var i = 0; i < slot.Length; i++)
                {
                    slot[i] = (byte)(value >> (8 * i));
                }

                break;
        }
    }

    private void Skip(long count)
    {
        var fixedWidth = FixedWidth;
        while (count > 0)
        {
            EnterRun();
            if (fixedWidth > 0)
            {
                var n = Math.Min(count, (_runEnd - _position) / fixedWidth);
                if (n == 0)
                {
                    throw new WireFormatException($"truncated fixed-width value at byte {_messageOffset + _position}");
                }

                (_position, _values, count) = (_position + (int)(n * fixedWidth), _values + n, count - n);
                continue;
            }

            // varints: a value ends at each byte below 0x80
            var bytes = Bytes(_runEnd - _position, _runEnd);
            var at = 0;
            while (at < bytes.Length && count > 0)
            {
                if (bytes[at++] < 0x80)
                {
                    (_values, count) = (_values + 1, count - 1);
                }
            }

            _position += at;
            if (_position == _runEnd && (bytes[at - 1] & 0x80) != 0)
            {
                throw new WireFormatException($"packed varints end inside a value at byte {_messageOffset + _position}");
            }
        }
    }

    /// <summary>The bytes of one float_data or double_data value; 0 for varints.</summary>
    private int FixedWidth => _type.TypedField switch { 4 => 4, 10 => 8, _ => 0 };

    /// <summary>
    /// Moves to the next value's bytes, past fields that hold none. An unpacked value (a field of its own) is read as a
    /// packed run of one, so decoding and skipping have one path.
    /// </summary>
    private void EnterRun()
    {
        while (_runEnd < 0 || _position >= _runEnd)
        {
            _runEnd = -1;
            if (_position >= _messageLength)
            {
                throw new WireFormatException($"typed fields end after {_values} values, dims and type {_type.Type} need more");
            }

            var reader = Reader(20);
            var (field, wire) = reader.ReadTag();
            if (wire == WireType.LengthDelimited)
            {
                var length = reader.ReadVarint();
                var start = _position + reader.Position;
                if (length > (ulong)(_messageLength - start))
                {
                    throw new WireFormatException($"length {length} at byte {_messageOffset + _position} runs past the end of its message");
                }

                var end = start + (int)length;
                (_position, _runEnd) = field == _type.TypedField ? (start, end) : (end, -1);
                continue;
            }

            if (field != _type.TypedField)
            {
                reader.Skip(wire);
                _position += reader.Position;
                continue;
            }

            var expected = FixedWidth switch { 4 => WireType.Fixed32, 8 => WireType.Fixed64, _ => WireType.Varint };
            if (wire != expected)
            {
                throw new WireFormatException($"field {field} value at byte {_messageOffset + _position} has wire type {(int)wire}, expected {(int)expected}");
            }

            _position += reader.Position;
            var value = Reader(10);
            value.Skip(wire);
            _runEnd = _position + value.Position;
        }
    }

    /// <summary>A reader over at least <paramref name="need"/> bytes from the position (fewer at the end), ending at <paramref name="end"/>.</summary>
    private WireReader Reader(int need, int end = -1) =>
        new(Bytes(need, end), _messageOffset + _position);

    /// <summary>The window's bytes from the position: at least <paramref name="need"/> of them, or all that are left before the end.</summary>
    private ReadOnlySpan<byte> Bytes(int need, int end = -1)
    {
        end = end < 0 ? _messageLength : end;
        need = Math.Min(need, end - _position);
        if (_position < _windowStart || _position + need > _windowStart + _windowLength)
        {
            _windowStart = _position;
            _windowLength = Math.Min(WindowBytes, _messageLength - _position);
            _file.Read(_messageOffset + _windowStart, _window.AsSpan(0, _windowLength));
        }

        var from = _position - _windowStart;
        return _window.AsSpan(from, Math.Min(_windowLength - from, end - _position));
    }
}
