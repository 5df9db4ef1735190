using System.Buffers;

namespace Recycling.Onnx.IO;

/// <summary>Where a tensor's values sit in the mapped file, as found by <see cref="ProtoScanner"/>.</summary>
internal sealed record TensorPayloadRecord(
    long MessageOffset,
    int MessageLength,
    long RawOffset,
    int RawLength,
    bool HasRaw,
    bool HasTyped);

/// <summary>
/// Walks the wire format of an ONNX file without materialising tensor values. It emits a copy of the
/// message with every tensor's value fields (raw_data, float_data, int32_data, string_data, int64_data,
/// double_data, uint64_data) removed and replaced by <c>recycling_data_ref</c>, the 1-based index of a
/// <see cref="TensorPayloadRecord"/> that says where the values are. The copy is small (graph structure only)
/// and is parsed with the generated classes; the values stay in the memory mapping.
/// </summary>
internal sealed class ProtoScanner
{
    /// <summary>Deepest message nesting accepted (Google.Protobuf's own parser stops at 100).</summary>
    public const int MaxDepth = 90;

    private const int DataRefField = 536_870_000;

    private readonly List<TensorPayloadRecord> _payloads = [];

    internal enum Message
    {
        Model,
        Graph,
        Node,
        Attribute,
        Function,
        TrainingInfo,
        SparseTensor,
        Tensor,
        Other,
    }

    public static (byte[] Stripped, IReadOnlyList<TensorPayloadRecord> Payloads) Scan(ReadOnlySpan<byte> content, Message root)
    {
        var scanner = new ProtoScanner();
        var output = new ArrayBufferWriter<byte>(Math.Max(256, Math.Min(content.Length, 1 << 20)));
        scanner.ScanMessage(content, 0, root, 0, output);
        return (output.WrittenSpan.ToArray(), scanner._payloads);
    }

    private void ScanMessage(ReadOnlySpan<byte> message, long messageOffset, Message kind, int depth, IBufferWriter<byte> output)
    {
        if (depth > MaxDepth)
        {
            throw new WireFormatException($"messages nested deeper than {MaxDepth} levels at byte {messageOffset} (recursive subgraphs?)");
        }

        var reader = new WireReader(message, messageOffset);
        long rawOffset = -1;
        var rawLength = 0;
        var hasTyped = false;
        while (!reader.AtEnd)
        {
            var fieldStart = reader.Position;
            var (field, type) = reader.ReadTag();
            CheckWireType(kind, field, type, reader.FileOffset);
            var child = Child(kind, field);
            if (child is not null && type == WireType.LengthDelimited)
            {
                var (start, length) = reader.ReadLengthDelimited();
                var childOutput = new ArrayBufferWriter<byte>(Math.Max(16, Math.Min(length, 1 << 16)));
                ScanMessage(message.Slice(start, length), messageOffset + start, child.Value, depth + 1, childOutput);
                WriteTag(output, field, WireType.LengthDelimited);
                WriteVarint(output, (ulong)childOutput.WrittenCount);
                output.Write(childOutput.WrittenSpan);
                continue;
            }

            if (kind == Message.Tensor && IsTensorValueField(field))
            {
                if (field == 9)
                {
                    var (start, length) = reader.ReadLengthDelimited();
                    if (rawOffset >= 0)
                    {
                        throw new WireFormatException($"tensor at byte {messageOffset} has raw_data twice");
                    }

                    rawOffset = messageOffset + start;
                    rawLength = length;
                }
                else
                {
                    reader.Skip(type);
                    hasTyped = true;
                }

                continue;
            }

            if (field == DataRefField)
            {
                throw new WireFormatException($"field number {DataRefField} at byte {messageOffset + fieldStart} is reserved by this toolkit");
            }

            reader.Skip(type);
            output.Write(message[fieldStart..reader.Position]);
        }

        if (kind == Message.Tensor && (rawOffset >= 0 || hasTyped))
        {
            _payloads.Add(new TensorPayloadRecord(messageOffset, message.Length, rawOffset, rawLength, rawOffset >= 0, hasTyped));
            WriteTag(output, DataRefField, WireType.Varint);
            WriteVarint(output, (ulong)_payloads.Count);
        }
    }

    private static bool IsTensorValueField(int field) => field is 4 or 5 or 6 or 7 or 9 or 10 or 11;

    private static Message? Child(Message kind, int field) => (kind, field) switch
    {
        (Message.Model, 7) => Message.Graph,
        (Message.Model, 20) => Message.TrainingInfo,
        (Message.Model, 25) => Message.Function,
        (Message.TrainingInfo, 1 or 2) => Message.Graph,
        (Message.Graph, 1) => Message.Node,
        (Message.Graph, 5) => Message.Tensor,
        (Message.Graph, 15) => Message.SparseTensor,
        (Message.Node, 5) => Message.Attribute,
        (Message.Attribute, 5 or 10) => Message.Tensor,
        (Message.Attribute, 6 or 11) => Message.Graph,
        (Message.Attribute, 22 or 23) => Message.SparseTensor,
        (Message.Function, 7) => Message.Node,
        (Message.Function, 11) => Message.Attribute,
        (Message.SparseTensor, 1 or 2) => Message.Tensor,
        _ => null,
    };

    /// <summary>The wire type each known field of the scanned messages must have (packed repeated scalars may be length-delimited).</summary>
    private static void CheckWireType(Message kind, int field, WireType type, long at)
    {
        WireType? expected = (kind, field) switch
        {
            (Message.Model, 1 or 5) => WireType.Varint,
            (Message.Model, 2 or 3 or 4 or 6 or 7 or 8 or 14 or 20 or 25 or 26) => WireType.LengthDelimited,
            (Message.Graph, 1 or 2 or 5 or 10 or 11 or 12 or 13 or 14 or 15 or 16) => WireType.LengthDelimited,
            (Message.Node, >= 1 and <= 10) => WireType.LengthDelimited,
            (Message.Attribute, 2) => WireType.Fixed32,
            (Message.Attribute, 3 or 20) => WireType.Varint,
            (Message.Attribute, 1 or 4 or 5 or 6 or 9 or 10 or 11 or 13 or 14 or 15 or 21 or 22 or 23) => WireType.LengthDelimited,
            (Message.Attribute, 7) => PackedOr(WireType.Fixed32, type),
            (Message.Attribute, 8) => PackedOr(WireType.Varint, type),
            (Message.Function, 1 or (>= 4 and <= 14)) => WireType.LengthDelimited,
            (Message.TrainingInfo, >= 1 and <= 4) => WireType.LengthDelimited,
            (Message.SparseTensor, 1 or 2) => WireType.LengthDelimited,
            (Message.SparseTensor, 3) => PackedOr(WireType.Varint, type),
            (Message.Tensor, 1 or 5 or 7 or 11) => PackedOr(WireType.Varint, type),
            (Message.Tensor, 2 or 14) => WireType.Varint,
            (Message.Tensor, 4) => PackedOr(WireType.Fixed32, type),
            (Message.Tensor, 10) => PackedOr(WireType.Fixed64, type),
            (Message.Tensor, 3 or 6 or 8 or 9 or 12 or 13 or 16) => WireType.LengthDelimited,
            _ => null,
        };
        if (expected is not null && expected != type)
        {
            throw new WireFormatException($"{kind} field {field} has wire type {type} at byte {at}, expected {expected}");
        }
    }

    private static WireType PackedOr(WireType scalar, WireType actual) => actual == WireType.LengthDelimited ? actual : scalar;

    private static void WriteTag(IBufferWriter<byte> output, int field, WireType type) => WriteVarint(output, ((ulong)field << 3) | (uint)type);

    private static void WriteVarint(IBufferWriter<byte> output, ulong value)
    {
        var span = output.GetSpan(10);
        var n = 0;
        while (value >= 0x80)
        {
            span[n++] = (byte)(value | 0x80);
            value >>= 7;
        }

        span[n++] = (byte)value;
        output.Advance(n);
    }
}
