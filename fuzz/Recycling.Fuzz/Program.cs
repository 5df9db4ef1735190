using Recycling.Onnx;
using SharpFuzz;

namespace Recycling.Fuzz;

/// <summary>
/// The fuzzing harness. Without arguments it serves AFL++ through SharpFuzz: each input arrives on stdin, is written to a
/// model file in a private work folder (beside an external-data file that inputs may name) and read like a real model.
/// With <c>--replay PATH...</c> it runs files or folders of inputs once each (seed smoke run, crash triage) and exits
/// non-zero on the first crash.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "--replay")
        {
            return Replay(args[1..]);
        }

        if (args.Length > 0)
        {
            Console.Error.WriteLine("usage: Recycling.Fuzz              (under afl-fuzz, input on stdin)");
            Console.Error.WriteLine("       Recycling.Fuzz --replay PATH...  (files or folders of inputs)");
            return 2;
        }

        var target = OnnxFuzzTarget.Create();
        Fuzzer.OutOfProcess.Run(input => target.Run(input));
        return 0;
    }

    private static int Replay(string[] paths)
    {
        var target = OnnxFuzzTarget.Create();
        int accepted = 0, rejected = 0;
        foreach (var file in paths.SelectMany(p => Directory.Exists(p) ? Directory.EnumerateFiles(p, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal) : (IEnumerable<string>)[p]))
        {
            using var input = File.OpenRead(file);
            try
            {
                if (target.Run(input))
                {
                    accepted++;
                }
                else
                {
                    rejected++;
                }
            }
            catch (Exception e)
            {
                Console.Error.WriteLine($"crash on {file}: {e}");
                return 1;
            }
        }

        Console.WriteLine($"{accepted + rejected} inputs: {accepted} read, {rejected} rejected with OnnxFormatException, 0 crashes");
        return 0;
    }
}

/// <summary>Reads one input as an ONNX model with every tensor's values; an <see cref="OnnxFormatException"/> is the expected outcome of bad input, anything else escapes.</summary>
public sealed class OnnxFuzzTarget
{
    /// <summary>The external-data file beside every input, so that inputs naming it reach the external-data paths.</summary>
    public const string DataFileName = "weights.bin";

    private readonly string _modelPath;

    private OnnxFuzzTarget(string folder) => _modelPath = Path.Combine(folder, "input.onnx");

    public static OnnxFuzzTarget Create()
    {
        var folder = Directory.CreateTempSubdirectory("recycling-fuzz-").FullName;
        var data = new byte[4096];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(i * 31);
        }

        File.WriteAllBytes(Path.Combine(folder, DataFileName), data);
        return new OnnxFuzzTarget(folder);
    }

    /// <summary>True when the input was read as a valid model; false when it was rejected with <see cref="OnnxFormatException"/>.</summary>
    public bool Run(Stream input)
    {
        using (var file = new FileStream(_modelPath, FileMode.Create, FileAccess.Write, FileShare.Read))
        {
            input.CopyTo(file);
        }

        try
        {
            using var model = OnnxModel.Open(_modelPath);
            foreach (var tensor in model.Tensors)
            {
                _ = tensor.DataType == OnnxDataType.String ? tensor.ReadStrings().Count : tensor.ReadRawBytes().Length;
            }

            return true;
        }
        catch (OnnxFormatException)
        {
            return false;
        }
    }
}
