using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using Recycling.Onnx;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>One ONNX Runtime run of a model file on named TorchSharp feeds (float32, float64, float16, bfloat16, int64 or int32), single-threaded.</summary>
internal static class OnnxRuntimeRun
{
    /// <summary>The output's values as float32 (float64, float16 and bfloat16 outputs converted).</summary>
    public static float[] Output(string path, IReadOnlyDictionary<string, Tensor> feeds, string output)
    {
        try
        {
            return Run(path, feeds, output);
        }
        catch (OnnxRuntimeException e)
        {
            var message = $"{MessageText.Path(path)}: ONNX Runtime cannot run it ({e.Message.Split('\n')[0].Trim()})";
            throw e.Message.Contains("[ErrorCode:NotImplemented]", StringComparison.Ordinal) ? new NoKernelException(message, e) : new RecyclingException(message, e);
        }
    }

    /// <summary>Whether ONNX Runtime can load <paramref name="path"/> (has a kernel for every node).</summary>
    public static bool Loads(string path)
    {
        try
        {
            using var options = new SessionOptions { IntraOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
            using var session = new InferenceSession(path, options);
            return true;
        }
        catch (OnnxRuntimeException)
        {
            return false;
        }
    }

    /// <summary>ONNX Runtime has no kernel for a node of the model (a float64 Conv on the CPU, say).</summary>
    internal sealed class NoKernelException(string message, Exception inner) : RecyclingException(message, inner);

    private static float[] Run(string path, IReadOnlyDictionary<string, Tensor> feeds, string output)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var session = new InferenceSession(path, options);
        var names = new List<string>();
        var values = new List<OrtValue>();
        try
        {
            foreach (var (name, feed) in feeds)
            {
                using var t = feed.detach().cpu().contiguous();
                names.Add(name);
                values.Add(t.dtype switch
                {
                    ScalarType.Float32 => OrtValue.CreateTensorValueFromMemory(t.data<float>().ToArray(), t.shape),
                    ScalarType.Float64 => OrtValue.CreateTensorValueFromMemory(t.data<double>().ToArray(), t.shape),
                    ScalarType.Float16 => OrtValue.CreateTensorValueFromMemory(Bits(t).Select(b => new Float16(b)).ToArray(), t.shape),
                    ScalarType.BFloat16 => OrtValue.CreateTensorValueFromMemory(Bits(t).Select(b => new BFloat16(b)).ToArray(), t.shape),
                    ScalarType.Int64 => OrtValue.CreateTensorValueFromMemory(t.data<long>().ToArray(), t.shape),
                    ScalarType.Int32 => OrtValue.CreateTensorValueFromMemory(t.data<int>().ToArray(), t.shape),
                    var other => throw new RecyclingException($"{MessageText.Path(path)}: input '{name}' is {other}; ONNX Runtime is fed float or integer (int64, int32) tensors here"),
                });
            }

            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, names, values, [output]);
            var info = results[0].GetTensorTypeAndShape();
            return info.ElementDataType switch
            {
                TensorElementType.Float => results[0].GetTensorDataAsSpan<float>().ToArray(),
                TensorElementType.Double => [.. results[0].GetTensorDataAsSpan<double>().ToArray().Select(v => (float)v)],
                TensorElementType.Float16 => [.. results[0].GetTensorDataAsSpan<Float16>().ToArray().Select(v => v.ToFloat())],
                TensorElementType.BFloat16 => [.. results[0].GetTensorDataAsSpan<BFloat16>().ToArray().Select(v => v.ToFloat())],
                var other => throw new RecyclingException($"{MessageText.Path(path)}: output '{output}' is {other}, not a float type"),
            };
        }
        finally
        {
            values.ForEach(v => v.Dispose());
        }
    }

    /// <summary>The bit patterns of a 16-bit float tensor's values.</summary>
    private static ushort[] Bits(Tensor t) => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(t.bytes).ToArray();
}
