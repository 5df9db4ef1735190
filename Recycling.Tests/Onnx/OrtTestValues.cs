using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.Onnx;

/// <summary>Bridges tensors read by our reader and ONNX Runtime values, for tests that run models.</summary>
internal static class OrtTestValues
{
    public static TensorElementType ToOrt(OnnxDataType type) => (TensorElementType)(int)type;

    /// <summary>An OrtValue over a copy of the tensor's values (pinned until the returned owner is disposed).</summary>
    public static (OrtValue Value, IDisposable Owner) Create(OnnxTensor tensor)
    {
        var shape = tensor.Shape.ToArray();
        if (tensor.DataType == OnnxDataType.String)
        {
            var value = OrtValue.CreateTensorWithEmptyStrings(OrtAllocator.DefaultInstance, shape);
            var strings = tensor.ReadStrings();
            for (var i = 0; i < strings.Count; i++)
            {
                value.StringTensorSetElementAt(System.Text.Encoding.UTF8.GetString(strings[i]).AsSpan(), i);
            }

            return (value, value);
        }

        var bytes = tensor.ReadRawBytes();
        var handle = GCHandle.Alloc(bytes, GCHandleType.Pinned);
        var ortValue = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, ToOrt(tensor.DataType), shape, handle.AddrOfPinnedObject(), bytes.Length);
        return (ortValue, new Pin(handle, ortValue));
    }

    /// <summary>Compares an ORT output with an expected tensor; null when equal within tolerance, else the difference.</summary>
    public static string? Compare(OrtValue actual, OnnxTensor expected, double rtol = 1e-3, double atol = 1e-5)
    {
        if (!actual.IsTensor)
        {
            return "output is not a tensor";
        }

        var info = actual.GetTensorTypeAndShape();
        if (!info.Shape.SequenceEqual(expected.Shape))
        {
            return $"shape [{string.Join(",", info.Shape)}] vs expected [{string.Join(",", expected.Shape)}]";
        }

        if ((int)info.ElementDataType != (int)expected.DataType)
        {
            return $"type {info.ElementDataType} vs expected {expected.DataType}";
        }

        if (expected.DataType == OnnxDataType.String)
        {
            var want = expected.ReadStrings();
            for (var i = 0; i < want.Count; i++)
            {
                if (actual.GetStringElement(i) != System.Text.Encoding.UTF8.GetString(want[i]))
                {
                    return $"string element {i} differs";
                }
            }

            return null;
        }

        var got = actual.GetTensorDataAsSpan<byte>().ToArray();
        var wantBytes = expected.ReadRawBytes();
        if (!OnnxDataTypes.IsFloatingPoint(expected.DataType) || expected.DataType == OnnxDataType.Double)
        {
            if (expected.DataType == OnnxDataType.Double)
            {
                var a = MemoryMarshal.Cast<byte, double>(got).ToArray();
                var b = MemoryMarshal.Cast<byte, double>(wantBytes).ToArray();
                return CompareFloats(a.Length, i => a[i], i => b[i], rtol, atol);
            }

            return got.AsSpan().SequenceEqual(wantBytes) ? null : "integer/bool values differ";
        }

        var count = (int)expected.ElementCount;
        var x = new float[count];
        var y = new float[count];
        OnnxDataTypes.ToFloat32(expected.DataType, got, x);
        OnnxDataTypes.ToFloat32(expected.DataType, wantBytes, y);
        return CompareFloats(count, i => x[i], i => y[i], rtol, atol);
    }

    /// <summary>Runs <paramref name="model"/> on one .npy input (float32 or int64) and returns every float output by name.</summary>
    public static Dictionary<string, float[]> RunOnNpy(string model, string inputNpy)
    {
        var input = NpyFile.Read(inputNpy);
        using var session = new InferenceSession(model);
        var type = input.DType == NpyDType.Int64 ? TensorElementType.Int64 : TensorElementType.Float;
        var handle = GCHandle.Alloc(input.Data, GCHandleType.Pinned);
        try
        {
            using var value = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, type, [.. input.Shape], handle.AddrOfPinnedObject(), input.Data.Length);
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, [session.InputNames[0]], [value], session.OutputNames);
            return session.OutputNames.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => results[p.i].GetTensorDataAsSpan<float>().ToArray());
        }
        finally
        {
            handle.Free();
        }
    }

    /// <summary>max |actual − expected| / max |expected|: the error measure of the merge fixtures' manifests.</summary>
    public static double MaxRelativeError(float[] actual, float[] expected)
    {
        Assert.HasCount(expected.Length, actual);
        double maxDiff = 0, maxRef = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs(actual[i] - (double)expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
        }

        return maxDiff / maxRef;
    }

    private static string? CompareFloats(int count, Func<int, double> actual, Func<int, double> expected, double rtol, double atol)
    {
        for (var i = 0; i < count; i++)
        {
            double a = actual(i), e = expected(i);
            if (double.IsNaN(a) && double.IsNaN(e))
            {
                continue;
            }

            if (a == e)
            {
                continue;
            }

            if (!(Math.Abs(a - e) <= atol + (rtol * Math.Abs(e))))
            {
                return $"element {i}: {a} vs expected {e}";
            }
        }

        return null;
    }

    private sealed class Pin(GCHandle handle, OrtValue value) : IDisposable
    {
        public void Dispose()
        {
            value.Dispose();
            handle.Free();
        }
    }
}
