using System.Runtime.InteropServices;
using Recycling.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>ONNX tensors to TorchSharp tensors and back.</summary>
internal static class TensorConversion
{
    public static Tensor ToTorch(OnnxTensor source)
    {
        var shape = source.Shape.ToArray();
        if (source.DataType == OnnxDataType.Float && source.ElementCount <= int.MaxValue / sizeof(float))
        {
            // Straight into LibTorch's own (aligned) storage: no managed copy that lives on as garbage, none pinned.
            var values = torch.empty(shape, ScalarType.Float32);
            source.ReadFloat32(MemoryMarshal.Cast<byte, float>(values.bytes));
            return values;
        }

        if (OnnxDataTypes.IsFloatingPoint(source.DataType))
        {
            var values = torch.tensor(source.ReadFloat32(), shape);
            return source.DataType switch
            {
                OnnxDataType.Float => values,
                OnnxDataType.Double => values.to(ScalarType.Float64),
                OnnxDataType.Float16 => values.to(ScalarType.Float16),
                OnnxDataType.BFloat16 => values.to(ScalarType.BFloat16),
                _ => throw new UnsupportedTensorException($"{source.Path}: element type {source.DataType} has no TorchSharp equivalent"),
            };
        }

        var raw = source.ReadRawBytes();
        return source.DataType switch
        {
            OnnxDataType.Int64 => torch.tensor(MemoryMarshal.Cast<byte, long>(raw).ToArray(), shape),
            OnnxDataType.Int32 => torch.tensor(MemoryMarshal.Cast<byte, int>(raw).ToArray(), shape),
            OnnxDataType.Int16 => torch.tensor(MemoryMarshal.Cast<byte, short>(raw).ToArray(), shape),
            OnnxDataType.Int8 => torch.tensor(MemoryMarshal.Cast<byte, sbyte>(raw).ToArray(), shape),
            OnnxDataType.UInt8 => torch.tensor(raw, shape),
            OnnxDataType.Bool => torch.tensor(raw.Select(b => b != 0).ToArray(), shape),
            _ => throw new UnsupportedTensorException($"{source.Path}: element type {source.DataType} has no TorchSharp equivalent"),
        };
    }

    /// <summary>A float32 tensor's values as little-endian bytes.</summary>
    public static byte[] Float32Bytes(Tensor t)
    {
        using var cpu = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return MemoryMarshal.AsBytes(cpu.data<float>().ToArray().AsSpan()).ToArray();
    }

    public static float[] Floats(Tensor t)
    {
        using var cpu = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return cpu.data<float>().ToArray();
    }
}

/// <summary>A tensor the executor cannot represent.</summary>
internal sealed class UnsupportedTensorException(string message) : Exception(message);
