using System.Buffers.Binary;
using System.Text;

namespace Recycling.Tests.Economics;

/// <summary>Reads a PNG's header by the spec (signature, IHDR chunk and its CRC-32), independently of the encoder.</summary>
internal static class PngFile
{
    private static readonly byte[] Signature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    public static (int Width, int Height) ReadSize(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        Assert.IsTrue(bytes.Length > 8 + 25 + 12, $"{path}: too short for a PNG");
        CollectionAssert.AreEqual(Signature, bytes[..8], $"{path}: not a PNG signature");
        Assert.AreEqual(13u, BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(8)), "IHDR length");
        Assert.AreEqual("IHDR", Encoding.ASCII.GetString(bytes, 12, 4));
        uint crc = BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(29));
        Assert.AreEqual(Crc32(bytes.AsSpan(12, 17)), crc, "IHDR CRC");
        Assert.AreEqual("IEND", Encoding.ASCII.GetString(bytes, bytes.Length - 8, 4), "the file must end with IEND");
        return ((int)BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(16)), (int)BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(20)));
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
            {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
            }
        }
        return ~crc;
    }
}
