using Recycling.MLNet.Certificates;
using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.Fuzz;

/// <summary>
/// One reader under fuzzing: each input is written to a file in a private work folder and read like a user's file.
/// The reader's own error (<see cref="Expected"/>) is the expected outcome of bad input; anything else escapes as a crash.
/// </summary>
public abstract class FuzzTarget
{
    protected FuzzTarget(string name) => (Name, Folder) = (name, Directory.CreateTempSubdirectory($"recycling-fuzz-{name}-").FullName);

    public string Name { get; }

    public virtual string Expected => nameof(RecyclingException);

    protected string Folder { get; }

    public static FuzzTarget? Create(string name) => name switch
    {
        "onnx" => new OnnxFuzzTarget(),
        "npy" => new Reader("npy", ["input.npy"], path => NpyFile.Read(path).Data.Length),
        "npz" => new Reader("npz", ["input.npz"], path => NpyFile.ReadNpz(path).Sum(a => a.Value.Data.Length) + DatasetLoader.Load(path).Count),
        "csv" => new Reader("csv", ["input.csv", "input.tsv"], path => DatasetLoader.Load(path).Count),
        "json" => new Reader("json", ["certificates.json", "zoo.json"], path => path.EndsWith("zoo.json", StringComparison.Ordinal)
            ? ModelZoo.Open(path).Models.Count
            : CertificateSet.Load(path).Certificates.Count),
        _ => null,
    };

    /// <summary>True when the input was read (by any of the target's readers); false when refused with the reader's own error.</summary>
    public abstract bool Run(Stream input);

    protected string Write(Stream input, string fileName)
    {
        var path = Path.Combine(Folder, fileName);
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read);
        input.CopyTo(file);
        return path;
    }

    /// <summary>Reads each input under every one of <paramref name="fileNames"/> (e.g. as .csv and as .tsv).</summary>
    private sealed class Reader(string name, string[] fileNames, Func<string, long> read) : FuzzTarget(name)
    {
        public override bool Run(Stream input)
        {
            var bytes = new MemoryStream();
            input.CopyTo(bytes);
            bool any = false;
            foreach (var fileName in fileNames)
            {
                bytes.Position = 0;
                var path = Write(bytes, fileName);
                try
                {
                    _ = read(path);
                    any = true;
                }
                catch (RecyclingException)
                {
                }
            }

            return any;
        }
    }
}

/// <summary>Reads one input as an ONNX model with every tensor's values; an <see cref="OnnxFormatException"/> is the expected outcome of bad input.</summary>
public sealed class OnnxFuzzTarget : FuzzTarget
{
    /// <summary>The external-data file beside every input, so that inputs naming it reach the external-data paths.</summary>
    public const string DataFileName = "weights.bin";

    public OnnxFuzzTarget()
        : base("onnx")
    {
        var data = new byte[4096];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(i * 31);
        }

        File.WriteAllBytes(Path.Combine(Folder, DataFileName), data);
    }

    public override string Expected => nameof(OnnxFormatException);

    public override bool Run(Stream input)
    {
        var path = Write(input, "input.onnx");
        try
        {
            using var model = OnnxModel.Open(path);
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
