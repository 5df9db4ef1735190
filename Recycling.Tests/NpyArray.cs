using System.Text;
using System.Text.RegularExpressions;
using Recycling.Onnx;

namespace Recycling.Tests;

/// <summary>A numpy .npy array (format 1.0-3.0, little-endian, C order) as its ONNX element type, shape and raw bytes.</summary>
internal sealed partial record NpyArray(OnnxDataType DataType, long[] Shape, byte[] Data)
{
    public static NpyArray Load(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 10 || bytes[0] != 0x93 || Encoding.ASCII.GetString(bytes, 1, 5) != "NUMPY")
        {
            throw new InvalidDataException($"{path}: not a .npy file");
        }

        var major = bytes[6];
        var headerLength = major == 1 ? BitConverter.ToUInt16(bytes, 8) : (int)BitConverter.ToUInt32(bytes, 8);
        var headerStart = major == 1 ? 10 : 12;
        var header = Encoding.ASCII.GetString(bytes, headerStart, headerLength);
        var descr = Descr().Match(header).Groups[1].Value;
        if (FortranOrder().IsMatch(header))
        {
            throw new InvalidDataException($"{path}: Fortran order is not supported");
        }

        var shape = ShapeRegex().Match(header).Groups[1].Value
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(d => long.Parse(d, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        var type = descr switch
        {
            "<f4" => OnnxDataType.Float,
            "<f2" => OnnxDataType.Float16,
            "<f8" => OnnxDataType.Double,
            "<i8" => OnnxDataType.Int64,
            "<i4" => OnnxDataType.Int32,
            "|u1" => OnnxDataType.UInt8,
            "|b1" => OnnxDataType.Bool,
            _ => throw new InvalidDataException($"{path}: dtype {descr} is not supported"),
        };
        var data = bytes.AsSpan(headerStart + headerLength).ToArray();
        var expected = OnnxDataTypes.RawByteLength(type, shape.Aggregate(1L, (a, b) => a * b));
        return data.Length == expected ? new NpyArray(type, shape, data) : throw new InvalidDataException($"{path}: {data.Length} data bytes, shape needs {expected}");
    }

    public float[] ToFloat32()
    {
        var result = new float[Shape.Aggregate(1L, (a, b) => a * b)];
        OnnxDataTypes.ToFloat32(DataType, Data, result);
        return result;
    }

    [GeneratedRegex(@"'descr':\s*'([^']+)'")]
    private static partial Regex Descr();

    [GeneratedRegex(@"'fortran_order':\s*True")]
    private static partial Regex FortranOrder();

    [GeneratedRegex(@"'shape':\s*\(([^)]*)\)")]
    private static partial Regex ShapeRegex();
}
