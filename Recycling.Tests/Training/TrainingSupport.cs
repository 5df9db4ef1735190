using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Training;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>Runs one model through ONNX Runtime and through the TorchSharp executor on the same inputs.</summary>
internal static class TrainingSupport
{
    /// <summary>Runs `recycle` in this process: its exit code and what it wrote.</summary>
    public static (int Code, string Stdout, string Stderr) Run(string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var code = Recycling.Cli.RecycleCli.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    public static Tensor ToTorch(NpyArray array) => array.DType switch
    {
        NpyDType.Int64 => tensor(array.ToInt64Array(), [.. array.Shape]),
        _ => tensor(array.ToSingleArray(), [.. array.Shape]),
    };

    public static Dictionary<string, float[]> RunOrt(string path, IReadOnlyDictionary<string, Tensor> feeds)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var session = new InferenceSession(path, options);
        var values = new List<OrtValue>();
        try
        {
            foreach (var name in session.InputNames)
            {
                var t = feeds[name];
                values.Add(t.dtype == ScalarType.Int64
                    ? OrtValue.CreateTensorValueFromMemory(t.data<long>().ToArray(), t.shape)
                    : OrtValue.CreateTensorValueFromMemory(t.data<float>().ToArray(), t.shape));
            }

            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, [.. session.InputNames], values, session.OutputNames);
            return session.OutputNames.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => results[p.i].GetTensorDataAsSpan<float>().ToArray());
        }
        finally
        {
            values.ForEach(v => v.Dispose());
        }
    }

    public static Dictionary<string, float[]> RunTorch(string path, IReadOnlyDictionary<string, Tensor> feeds)
    {
        using var model = OnnxModel.Open(path);
        using var program = OnnxProgram.Load(model);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return program.Forward(feeds, new OpContext()).ToDictionary(p => p.Key, p => p.Value.to(ScalarType.Float32).data<float>().ToArray());
    }

    /// <summary>max |a − b| / max(max |b|, 1e-12).</summary>
    public static double RelativeGap(float[] a, float[] b)
    {
        Assert.HasCount(b.Length, a);
        double gap = 0, scale = 1e-12;
        for (var i = 0; i < a.Length; i++)
        {
            gap = Math.Max(gap, Math.Abs(a[i] - (double)b[i]));
            scale = Math.Max(scale, Math.Abs((double)b[i]));
        }

        return gap / scale;
    }

    public static Tensor RandomImages(int batch, int seed)
    {
        var random = new Random(seed);
        var values = new float[batch * 28 * 28];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = random.NextSingle();
        }

        return tensor(values, [batch, 1, 28, 28]);
    }

    public static byte[] Bytes(float[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}

/// <summary>A temporary folder, deleted with everything in it.</summary>
internal sealed class Scratch : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("recycling-training-").FullName;

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
