using System.Runtime.InteropServices;
using Recycling.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>ONNX tensors to TorchSharp tensors and back.</summary>
internal static class TensorConversion
{
    /// <summary>The tensor's values on <paramref name="device"/> (read into host memory first, then copied there).</summary>
    public static Tensor ToTorch(OnnxTensor source, Device device)
    {
        return MovedTo(ToHost(source), device);
    }

    private static Tensor ToHost(OnnxTensor source)
    {
        var shape = source.Shape.ToArray();
        if (source.DataType == OnnxDataType.Float && source.ElementCount <= int.MaxValue / sizeof(float))
        {
            // Straight into LibTorch's own (aligned) storage: no managed copy that lives on as garbage, none pinned.
            var values = torch.empty(shape, ScalarType.Float32, device: CPU);
            source.ReadFloat32(MemoryMarshal.Cast<byte, float>(values.bytes));
            return values;
        }

        if (OnnxDataTypes.IsFloatingPoint(source.DataType))
        {
            var values = torch.tensor(source.ReadFloat32(), shape, device: CPU);
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
            OnnxDataType.Int64 => torch.tensor(MemoryMarshal.Cast<byte, long>(raw).ToArray(), shape, device: CPU),
            OnnxDataType.Int32 => torch.tensor(MemoryMarshal.Cast<byte, int>(raw).ToArray(), shape, device: CPU),
            OnnxDataType.Int16 => torch.tensor(MemoryMarshal.Cast<byte, short>(raw).ToArray(), shape, device: CPU),
            OnnxDataType.Int8 => torch.tensor(MemoryMarshal.Cast<byte, sbyte>(raw).ToArray(), shape, device: CPU),
            OnnxDataType.UInt8 => torch.tensor(raw, shape, device: CPU),
            OnnxDataType.Bool => torch.tensor(raw.Select(b => b != 0).ToArray(), shape, device: CPU),
            _ => throw new UnsupportedTensorException($"{source.Path}: element type {source.DataType} has no TorchSharp equivalent"),
        };
    }

    /// <summary><paramref name="host"/> on <paramref name="device"/>: itself when it is there already, else a copy there (and <paramref name="host"/> disposed).</summary>
    public static Tensor MovedTo(Tensor host, Device device)
    {
        if (host.device_type == device.type && (device.index < 0 || host.device_index == device.index))
        {
            return host;
        }

        using (host)
        {
            return host.to(device);
        }
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
