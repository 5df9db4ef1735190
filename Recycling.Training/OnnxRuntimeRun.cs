using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using Recycling.Onnx;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>One ONNX Runtime run of a model file on named TorchSharp feeds (float32, int64 or int32), single-threaded.</summary>
internal static class OnnxRuntimeRun
{
    public static float[] Output(string path, IReadOnlyDictionary<string, Tensor> feeds, string output)
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
                    ScalarType.Int64 => OrtValue.CreateTensorValueFromMemory(t.data<long>().ToArray(), t.shape),
                    ScalarType.Int32 => OrtValue.CreateTensorValueFromMemory(t.data<int>().ToArray(), t.shape),
                    var other => throw new RecyclingException($"{MessageText.Path(path)}: input '{name}' is {other}; ONNX Runtime is fed float32, int64 or int32 here"),
                });
            }

            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, names, values, [output]);
            var info = results[0].GetTensorTypeAndShape();
            return info.ElementDataType == TensorElementType.Float
                ? results[0].GetTensorDataAsSpan<float>().ToArray()
                : throw new RecyclingException($"{MessageText.Path(path)}: output '{output}' is {info.ElementDataType}, not float");
        }
        finally
        {
            values.ForEach(v => v.Dispose());
        }
    }
}
