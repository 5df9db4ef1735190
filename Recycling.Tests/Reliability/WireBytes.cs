using System.Collections;
using Google.Protobuf;
using Recycling.Onnx.IO;

namespace Recycling.Tests.Reliability;

/// <summary>Hand-made protobuf wire bytes, and splicing of raw (possibly malformed) bytes into any nested message of a model.</summary>
internal static class WireBytes
{
    public static byte[] Concat(params byte[][] parts) => [.. parts.SelectMany(p => p)];

    public static byte[] Tag(int field, WireType type) => Varint(((ulong)field << 3) | (uint)type);

    public static byte[] Field(int field, byte[] payload) => Concat(Tag(field, WireType.LengthDelimited), Varint((ulong)payload.Length), payload);

    public static byte[] Varint(ulong value)
    {
        var bytes = new List<byte>();
        while (value >= 0x80)
        {
            bytes.Add((byte)(value | 0x80));
            value >>= 7;
        }

        bytes.Add((byte)value);
        return [.. bytes];
    }

    /// <summary>A well-framed payload for a field of the given wire type (what follows the tag).</summary>
    public static byte[] Payload(WireType type) => type switch
    {
        WireType.Varint => [1],
        WireType.Fixed64 => [1, 2, 3, 4, 5, 6, 7, 8],
        WireType.Fixed32 => [1, 2, 3, 4],
        WireType.LengthDelimited => [0],
        _ => [],
    };

    /// <summary>
    /// The serialized <paramref name="message"/> with <paramref name="extra"/> appended to the nested message reached by
    /// <paramref name="path"/> (field number and index in the repeated field, or 0 for a singular field). Each message on
    /// the path is moved to the end of its parent and re-framed by hand, so <paramref name="extra"/> may be anything.
    /// </summary>
    public static byte[] Splice(IMessage message, ReadOnlySpan<(int Field, int Index)> path, byte[] extra)
    {
        if (path.IsEmpty)
        {
            return Concat(message.ToByteArray(), extra);
        }

        var (number, index) = path[0];
        var clone = message.Descriptor.Parser.ParseFrom(message.ToByteString());
        var field = clone.Descriptor.FindFieldByNumber(number) ?? throw new ArgumentException($"{clone.Descriptor.Name} has no field {number}");
        IMessage child;
        if (field.IsRepeated)
        {
            var list = (IList)field.Accessor.GetValue(clone);
            child = (IMessage)list[index]!;
            list.RemoveAt(index);
        }
        else
        {
            child = (IMessage)field.Accessor.GetValue(clone);
            field.Accessor.Clear(clone);
        }

        return Concat(clone.ToByteArray(), Field(number, Splice(child, path[1..], extra)));
    }
}
