using System.CommandLine;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Recycling.Onnx;
using Recycling.Onnx.IO;
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
        var outDir = new Option<string>("--output", "-o") { Description = "Folder for the outputs, one OUTPUT_NAME.npy each." };
        var oldOutDir = CommandSupport.Legacy<string>("--out");
        var command = new Command("run", "Run a model with ONNX Runtime (CPU) on .npy inputs and write each output as OUTPUT/OUTPUT_NAME.npy.")
        {
            Arguments = { model },
            Options = { inputs, outDir, oldOutDir },
        };
        command.SetAction(parseResult =>
        {
            var path = CommandSupport.Model(parseResult.GetValue(model)!);
            var folder = CommandSupport.Value(parseResult, outDir, oldOutDir, required: true)!;
            if (!File.Exists(path))
            {
                throw new OnnxFormatException(path, "file not found");
            }

            // The reader's rules for the model and its external data (regular files, no symbolic links, one hard link),
            // checked before ONNX Runtime reads them, so run accepts what inspect and merge accept and nothing more.
            using (OnnxModel.Open(path))
            {
            }

            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
            InferenceSession session;
            try
            {
                session = new InferenceSession(path, options);
            }
            catch (OnnxRuntimeException e)
            {
                throw new OnnxFormatException(path, $"ONNX Runtime cannot load the model: {MessageText.Joined(e.Message)}", e);
            }

            using (session)
            {
                var inputSpecs = parseResult.GetValue(inputs)!;
                var feeds = ParseInputs(inputSpecs, session);
                var outputs = OutputFiles(session.OutputNames, folder, outDir.Name,
                    InputFiles.Of([path], inputSpecs.Select(spec => spec[(spec.IndexOf('=', StringComparison.Ordinal) + 1)..])));
                var stdout = parseResult.InvocationConfiguration.Output;
                var arrays = FixedBatchOf(session, feeds, inputSpecs) is { } samples ? RunInBatches(session, feeds, samples, path) : Run(session, feeds, path);
                for (var i = 0; i < arrays.Count; i++)
                {
                    NpyFile.Write(outputs[i], arrays[i]);
                    stdout.WriteLine($"{session.OutputNames[i]}: {arrays[i].DType} [{string.Join(",", arrays[i].Shape)}] -> {outputs[i].Path}");
                }
            }

            return 0;
        });
        return command;
    }

    /// <summary>
    /// One file per output, FOLDER/NAME.npy, checked before the model runs. Names map to file names one to one: bytes
    /// other than letters, digits, '.', '-' and '_' are written %XX (so "y/1" and "y:1" stay apart and no name leaves
    /// the folder); a name too long for a file name is cut and given a hash of the whole name.
    /// </summary>
    internal static List<OutputFile> OutputFiles(IReadOnlyList<string> names, string folder, string option, InputFiles inputs)
    {
        var full = CommandSupport.OutputFolder(folder, option);
        var comparison = OperatingSystem.IsLinux() ? StringComparer.Ordinal : StringComparer.OrdinalIgnoreCase;
        var seen = new Dictionary<string, string>(comparison);
        var files = new List<OutputFile>();
        foreach (var name in names)
        {
            var fileName = FileName(name);
            if (!seen.TryAdd(fileName, name))
            {
                throw new RecyclingException($"{option} {folder}: outputs '{seen[fileName]}' and '{name}' would both be written to {fileName} (this file system ignores case)");
            }

            files.Add(OutputFile.Prepare(Path.Combine(full, fileName), inputs, option, createFolder: true));
        }

        return files;
    }

    internal static string FileName(string outputName)
    {
        var encoded = new StringBuilder();
        foreach (var b in Encoding.UTF8.GetBytes(outputName))
        {
            var c = (char)b;
            encoded.Append(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' ? c.ToString() : $"%{b:X2}");
        }

        var name = encoded.ToString();
        if (name.Length + ".npy".Length > OutputFile.NameMax)
        {
            var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(outputName)))[..16];
            name = $"{name[..(OutputFile.NameMax - ".npy".Length - hash.Length - 1)]}~{hash}";
        }

        return name + ".npy";
    }

    /// <summary>One ONNX Runtime call on the whole inputs; every output as an array.</summary>
    private static List<NpyArray> Run(InferenceSession session, IReadOnlyList<(string Name, NpyArray Array)> feeds, string path)
    {
        var pins = new List<GCHandle>();
        var values = new List<OrtValue>();
        try
        {
            foreach (var (_, array) in feeds)
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
                throw new RecyclingException($"{MessageText.Path(path)}: ONNX Runtime failed to run it on the given inputs: {MessageText.Joined(e.Message)}", e);
            }

            using (results)
            {
                return [.. results.Select((r, i) => ToNpy(r, session.OutputNames[i]))];
            }
        }
        finally
        {
            values.ForEach(v => v.Dispose());
            pins.ForEach(p => p.Free());
        }
    }

    /// <summary>
    /// The batch every input of the model declares (an export with a fixed batch, e.g. CNTK's [1,3,224,224]) when the
    /// inputs hold a multiple of it other than itself; null when the inputs are run as they are.
    /// </summary>
    private static long? FixedBatchOf(InferenceSession session, IReadOnlyList<(string Name, NpyArray Array)> feeds, string[] specs)
    {
        var declared = session.InputMetadata.Values.Select(m => m.IsTensor && m.Dimensions.Length > 0 ? m.Dimensions[0] : -1).Distinct().ToList();
        var given = feeds.Select(f => f.Array.Shape.Count > 0 ? f.Array.Shape[0] : -1).Distinct().ToList();
        if (declared is not [> 0 and var batch] || given.SequenceEqual([(long)batch]))
        {
            return null;
        }

        return given is [> 0 and var samples]
            ? samples
            : throw new RecyclingException($"--input {MessageText.OneLine(string.Join(" ", specs))}: the model takes a fixed batch of {batch} in every input; the files hold {string.Join(", ", given)} samples");
    }

    /// <summary>Runs an export with a fixed batch on the inputs' samples, that many per call, and joins each output's batches.</summary>
    private static List<NpyArray> RunInBatches(InferenceSession session, IReadOnlyList<(string Name, NpyArray Array)> feeds, long samples, string path)
    {
        var batch = session.InputMetadata.Values.First().Dimensions[0];
        var parts = new List<List<NpyArray>>();
        for (long start = 0; start < samples; start += batch)
        {
            var slice = feeds.Select(f =>
            {
                var bytesPerSample = f.Array.Data.Length / samples;
                var shape = f.Array.Shape.ToArray();
                shape[0] = batch;
                return (f.Name, new NpyArray(f.Array.DType, shape, f.Array.Data.AsSpan((int)(start * bytesPerSample), (int)(batch * bytesPerSample)).ToArray()));
            }).ToList();
            var outputs = Run(session, slice, path);
            for (var i = 0; i < outputs.Count; i++)
            {
                if (outputs[i].Shape.Count == 0 || outputs[i].Shape[0] != batch)
                {
                    throw new RecyclingException($"{MessageText.Path(path)}: output '{session.OutputNames[i]}' has shape [{string.Join(",", outputs[i].Shape)}] for the model's fixed batch of {batch}: its samples cannot be joined; feed exactly {batch} samples");
                }
            }

            parts.Add(outputs);
        }

        return [.. Enumerable.Range(0, parts[0].Count).Select(i =>
        {
            var shape = parts[0][i].Shape.ToArray();
            shape[0] = samples;
            return new NpyArray(parts[0][i].DType, shape, [.. parts.SelectMany(p => p[i].Data)]);
        })];
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

            var array = NpyFile.Read(file);
            CheckFits(spec, session.InputMetadata[name], array);
            feeds.Add((name, array));
        }

        var missing = session.InputNames.Except(feeds.Select(f => f.Item1)).ToList();
        if (missing.Count > 0)
        {
            throw new RecyclingException($"no value given for input(s) {string.Join(", ", missing)}");
        }

        return feeds;
    }

    /// <summary>Refuses an array whose element type or shape the graph input cannot take, in one line (ONNX Runtime's own message spans three).</summary>
    private static void CheckFits(string spec, NodeMetadata input, NpyArray array)
    {
        if (!input.IsTensor)
        {
            return;
        }

        var wanted = (OnnxDataType)(int)input.ElementDataType;
        var shape = string.Join(",", input.Dimensions.Select((d, i) => d >= 0 ? d.ToString(System.Globalization.CultureInfo.InvariantCulture) : input.SymbolicDimensions[i] is { Length: > 0 } s ? s : "?"));
        var given = $"{array.DType.ToOnnx()} [{string.Join(",", array.Shape)}]";
        // A fixed batch may be given any multiple of its size: the model then runs that many samples per call.
        bool fits = array.DType.ToOnnx() == wanted && array.Shape.Count == input.Dimensions.Length
            && input.Dimensions.Zip(array.Shape).Select((p, i) => p.First < 0 || p.First == p.Second || (i == 0 && p.Second > 0 && p.Second % p.First == 0)).All(f => f);
        if (!fits)
        {
            throw new RecyclingException($"--input {MessageText.OneLine(spec)}: the model's input wants {wanted} [{shape}], the file holds {given}");
        }
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
