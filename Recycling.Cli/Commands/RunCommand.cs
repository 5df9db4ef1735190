using System.CommandLine;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.Cli.Commands;

/// <summary>`recycle run`: run a model with ONNX Runtime on numpy inputs and write every output as .npy (a smoke test for merged models).</summary>
internal static class RunCommand
{
    internal static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The .onnx model to run." };
        var inputs = new Option<string[]>("--input", "-i")
        {
            Description = "NAME=FILE.npy for each graph input (FILE.npy alone when the model has one input); .npy.gz allowed.",
            AllowMultipleArgumentsPerToken = true,
            Required = true,
        };
        var outDir = new Option<string>("--out") { Description = "Folder for the outputs, one OUTPUT_NAME.npy each.", Required = true };
        var command = new Command("run", "Run a model with ONNX Runtime (CPU) on .npy inputs and write each output as OUT/OUTPUT_NAME.npy.")
        {
            Arguments = { model },
            Options = { inputs, outDir },
        };
        command.SetAction(parseResult =>
        {
            var path = parseResult.GetValue(model)!;
            if (!File.Exists(path))
            {
                throw new OnnxFormatException(path, "file not found");
            }

            Recycling.Onnx.IO.InputFile.RequireRegular(path);

            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
            InferenceSession session;
            try
            {
                session = new InferenceSession(path, options);
            }
            catch (OnnxRuntimeException e)
            {
                throw new OnnxFormatException(path, $"ONNX Runtime cannot load the model: {e.Message}", e);
            }

            using (session)
            {
                var feeds = ParseInputs(parseResult.GetValue(inputs)!, session);
                var pins = new List<GCHandle>();
                var values = new List<OrtValue>();
                try
                {
                    foreach (var (name, array) in feeds)
                    {
                        var handle = GCHandle.Alloc(array.Data, GCHandleType.Pinned);
                        pins.Add(handle);
                        values.Add(OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, (TensorElementType)(int)array.DType.ToOnnx(), [.. array.Shape], handle.AddrOfPinnedObject(), array.Data.Length));
                    }

                    using var runOptions = new RunOptions();
                    IDisposableReadOnlyCollection<OrtValue> results;
                    try
                    {
                        results = session.Run(runOptions, [.. feeds.Select(f => f.Name)], values, session.OutputNames);
                    }
                    catch (OnnxRuntimeException e)
                    {
                        throw new RecyclingException($"{path}: ONNX Runtime failed to run it on the given inputs: {e.Message}", e);
                    }

                    using (results)
                    {
                        var folder = parseResult.GetValue(outDir)!;
                        Directory.CreateDirectory(folder);
                        var stdout = parseResult.InvocationConfiguration.Output;
                        for (var i = 0; i < results.Count; i++)
                        {
                            var name = session.OutputNames[i];
                            var file = Path.Combine(folder, string.Concat(name.Select(c => char.IsLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_')) + ".npy");
                            var array = ToNpy(results[i], name);
                            NpyFile.Write(file, array);
                            stdout.WriteLine($"{name}: {array.DType} [{string.Join(",", array.Shape)}] -> {file}");
                        }
                    }
                }
                finally
                {
                    values.ForEach(v => v.Dispose());
                    pins.ForEach(p => p.Free());
                }
            }

            return 0;
        });
        return command;
    }

    private static List<(string Name, NpyArray Array)> ParseInputs(string[] specs, InferenceSession session)
    {
        var feeds = new List<(string, NpyArray)>();
        foreach (var spec in specs)
        {
            var split = spec.IndexOf('=', StringComparison.Ordinal);
            var (name, file) = split > 0 ? (spec[..split], spec[(split + 1)..]) : (session.InputNames.Count == 1 ? session.InputNames[0] : "", spec);
            if (name.Length == 0)
            {
                throw new RecyclingException($"--input {spec}: the model has {session.InputNames.Count} inputs ({string.Join(", ", session.InputNames)}); write NAME=FILE.npy");
            }

            if (!session.InputNames.Contains(name))
            {
                throw new RecyclingException($"--input {spec}: the model has no input '{name}' (inputs: {string.Join(", ", session.InputNames)})");
            }

            feeds.Add((name, NpyFile.Read(file)));
        }

        var missing = session.InputNames.Except(feeds.Select(f => f.Item1)).ToList();
        if (missing.Count > 0)
        {
            throw new RecyclingException($"no value given for input(s) {string.Join(", ", missing)}");
        }

        return feeds;
    }

    private static NpyArray ToNpy(OrtValue value, string name)
    {
        if (!value.IsTensor)
        {
            throw new RecyclingException($"output {name} is not a tensor (sequence or map): it cannot be written as .npy");
        }

        var info = value.GetTensorTypeAndShape();
        var type = NpyOnnxTypes.FromOnnx((OnnxDataType)(int)info.ElementDataType)
            ?? throw new RecyclingException($"output {name} has element type {info.ElementDataType}, which .npy cannot hold");
        return new NpyArray(type, info.Shape, value.GetTensorDataAsSpan<byte>().ToArray());
    }
}
