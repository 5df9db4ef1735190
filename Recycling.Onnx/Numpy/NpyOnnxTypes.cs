namespace Recycling.Onnx.Numpy;

/// <summary>numpy dtypes are ONNX element types (the enum values are the same); <see cref="ElementTypes"/> says which have a .npy code.</summary>
internal static class NpyOnnxTypes
{
    public static OnnxDataType ToOnnx(this NpyDType type) => ElementTypes.Of((OnnxDataType)type).NpyCode is not null
        ? (OnnxDataType)type
        : throw new ArgumentOutOfRangeException(nameof(type), type, null);

    /// <summary>The numpy dtype of an ONNX element type, or null when .npy has none for it.</summary>
    public static NpyDType? FromOnnx(OnnxDataType type) => ElementTypes.Of(type).NpyCode is not null ? (NpyDType)type : null;

    /// <summary>The table row of a numpy dtype.</summary>
    public static ElementType Row(this NpyDType type) => ElementTypes.Of(type.ToOnnx());
}
