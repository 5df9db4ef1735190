using System.IO.Compression;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Reliability;

/// <summary>
/// A one-node classifier written with the proto classes: logits = x + w, x of shape [batch, ...w's shape]. Options make
/// it invalid or odd the ways hostile files are: duplicate names, an IR-3 initializer listed as an input, a fixed batch.
/// </summary>
internal sealed record TinyModel
{
    public float[] Weight { get; init; } = [0.1f, 0.2f, 0.3f, 0.4f];

    public long[] Shape { get; init; } = [4];

    /// <summary>A fixed batch dimension (0: symbolic "N").</summary>
    public long Batch { get; init; }

    /// <summary>A second initializer named "w" (other values) after the first.</summary>
    public bool DuplicateInitializer { get; init; }

    /// <summary>The graph input "x" listed twice.</summary>
    public bool DuplicateInput { get; init; }

    /// <summary>IR version 3: "w" is listed among the graph inputs too, as that version requires.</summary>
    public bool Ir3 { get; init; }

    public string Write(string path)
    {
        var graph = new GraphProto { Name = "tiny" };
        graph.Input.Add(Value("x", Batch));
        if (DuplicateInput)
        {
            graph.Input.Add(Value("x", Batch));
        }

        graph.Initializer.Add(Tensor("w", Weight));
        if (DuplicateInitializer)
        {
            graph.Initializer.Add(Tensor("w", [.. Weight.Select(v => v + 1)]));
        }

        if (Ir3)
        {
            graph.Input.Add(new ValueInfoProto { Name = "w", Type = Type(Shape) });
        }

        graph.Node.Add(new NodeProto { OpType = "Add", Input = { "x", "w" }, Output = { "logits" } });
        graph.Output.Add(Value("logits", Batch));
        var model = new ModelProto
        {
            IrVersion = Ir3 ? 3 : 8,
            ProducerName = "tiny",
            OpsetImport = { new OperatorSetIdProto { Version = Ir3 ? 8 : 17 } },
            Graph = graph,
        };
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    /// <summary>An .npz archive (stored, as numpy.savez) of the given arrays, plus raw members given as bytes.</summary>
    public static string WriteNpz(string path, IReadOnlyDictionary<string, NpyArray> arrays, IReadOnlyDictionary<string, byte[]>? raw = null)
    {
        using var zip = new ZipArchive(File.Create(path), ZipArchiveMode.Create);
        foreach (var (name, array) in arrays)
        {
            var temp = Path.Combine(Path.GetDirectoryName(path)!, $"{name}.{Guid.NewGuid():N}.npy");
            NpyFile.Write(temp, array);
            zip.CreateEntryFromFile(temp, name + ".npy", CompressionLevel.NoCompression);
            File.Delete(temp);
        }

        foreach (var (name, bytes) in raw ?? new Dictionary<string, byte[]>())
        {
            using var entry = zip.CreateEntry(name + ".npy", CompressionLevel.Fastest).Open();
            entry.Write(bytes);
        }

        return path;
    }

    /// <summary>The first bytes of an .npy file (magic, version 1.0, header) whose header declares <paramref name="shape"/>.</summary>
    public static byte[] NpyHeader(string descr, string shape)
    {
        var dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";
        var header = dict.PadRight(((dict.Length + 11 + 63) / 64 * 64) - 11) + "\n";
        return [0x93, .. "NUMPY"u8, 1, 0, (byte)header.Length, (byte)(header.Length >> 8), .. System.Text.Encoding.Latin1.GetBytes(header)];
    }

    private TensorProto Tensor(string name, float[] values) => new()
    {
        Name = name,
        DataType = (int)OnnxDataType.Float,
        Dims = { Shape },
        RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())),
    };

    private ValueInfoProto Value(string name, long batch)
    {
        var type = Type(Shape);
        type.TensorType.Shape.Dim.Insert(0, batch > 0 ? new TensorShapeProto.Types.Dimension { DimValue = batch } : new TensorShapeProto.Types.Dimension { DimParam = "N" });
        return new ValueInfoProto { Name = name, Type = type };
    }

    private static TypeProto Type(long[] shape)
    {
        var tensorShape = new TensorShapeProto();
        foreach (var d in shape)
        {
            tensorShape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        }

        return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float, Shape = tensorShape } };
    }
}
