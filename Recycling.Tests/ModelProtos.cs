using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.Tests;

/// <summary>The protobuf pieces the tests' hand-built models share.</summary>
internal static class ModelProtos
{
    /// <summary>A float tensor in raw_data.</summary>
    public static TensorProto FloatTensor(string name, ReadOnlySpan<float> values, params long[] dims) => new()
    {
        Name = name,
        DataType = (int)OnnxDataType.Float,
        Dims = { dims },
        RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values)),
    };

    /// <summary>A float graph input or output of shape [1, width].</summary>
    public static ValueInfoProto FloatRow(string name, long width) => new()
    {
        Name = name,
        Type = new TypeProto
        {
            TensorType = new TypeProto.Types.Tensor
            {
                ElemType = (int)OnnxDataType.Float,
                Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = 1 }, new TensorShapeProto.Types.Dimension { DimValue = width } } },
            },
        },
    };
}
