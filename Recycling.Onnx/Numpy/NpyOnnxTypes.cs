namespace Recycling.Onnx.Numpy;

/// <summary>The ONNX element type of each numpy dtype (ONNX Runtime's TensorElementType uses the same values).</summary>
internal static class NpyOnnxTypes
{
    public static OnnxDataType ToOnnx(this NpyDType type) => type switch
    {
        NpyDType.Bool => OnnxDataType.Bool,
        NpyDType.UInt8 => OnnxDataType.UInt8,
        NpyDType.Int8 => OnnxDataType.Int8,
        NpyDType.Int16 => OnnxDataType.Int16,
        NpyDType.Int32 => OnnxDataType.Int32,
        NpyDType.Int64 => OnnxDataType.Int64,
        NpyDType.Float16 => OnnxDataType.Float16,
        NpyDType.Float32 => OnnxDataType.Float,
        NpyDType.Float64 => OnnxDataType.Double,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    /// <summary>The numpy dtype of an ONNX element type, or null when .npy has none for it.</summary>
    public static NpyDType? FromOnnx(OnnxDataType type) => type switch
    {
        OnnxDataType.Bool => NpyDType.Bool,
        OnnxDataType.UInt8 => NpyDType.UInt8,
        OnnxDataType.Int8 => NpyDType.Int8,
        OnnxDataType.Int16 => NpyDType.Int16,
        OnnxDataType.Int32 => NpyDType.Int32,
        OnnxDataType.Int64 => NpyDType.Int64,
        OnnxDataType.Float16 => NpyDType.Float16,
        OnnxDataType.Float => NpyDType.Float32,
        OnnxDataType.Double => NpyDType.Float64,
        _ => null,
    };
}
