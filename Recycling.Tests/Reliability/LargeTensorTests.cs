using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Reliability;

/// <summary>
/// A tensor beyond 2^31 bytes, as a user with an LLM meets it: an fp32 embedding of 262,144 × 2,304 (603,979,776
/// elements, 2.4 GB) in external data, beside a small embedded bias. The inputs are sparse files (SetLength, then values
/// written at known places), so they take a few pages of disk; the merged output is real bytes and is deleted after.
/// Every command runs in the real CLI: inspect, align, merge (average, and TIES with a base, whose sign majority and
/// exact ties span chunks), and run on a row past byte 2^31.
/// </summary>
[TestClass]
public sealed class LargeTensorTests
{
    private const long Rows = 262_144;
    private const long Width = 2_304;
    private const long Elements = Rows * Width;

    /// <summary>The row `recycle run` gathers: its elements start past byte 2^31 of the tensor.</summary>
    private const long RunRow = 250_000;

    /// <summary>The exact-tie element (τ₁ = −τ₂): its TIES value depends on the whole tensor's elected-sign majority.</summary>
    private const long TieElement = 1L << 29;

    /// <summary>Places with planted values: both sides of the first chunk boundary, of byte 2^31 (element 2^29), the last element.</summary>
    private static readonly long[] Planted = [0, 1, (1 << 20) - 1, 1 << 20, (1 << 29) - 1, (1 << 29) + 1, 600_000_001, Elements - 1];

    private static string _root = null!;

    public TestContext TestContext { get; set; } = null!;

    [ClassInitialize]
    public static void CreateInputs(TestContext context)
    {
        _root = Directory.CreateTempSubdirectory("recycling-large-").FullName;
        foreach (var name in new[] { "base", "ft1", "ft2" })
        {
            Write(name);
        }
    }

    [ClassCleanup]
    public static void RemoveInputs() => Directory.Delete(_root, recursive: true);

    /// <summary>The default run's sample: reading past byte 2^31 through the handle, and inspect and align in the CLI.</summary>
    [TestMethod]
    public void TensorsOver2GiBAreReadInspectedAndAligned()
    {
        using (var model = OnnxModel.Open(Input("ft1")))
        {
            var embedding = model.Tensors.Single(t => t.Name == "embedding");
            Assert.AreEqual(Elements * 4, embedding.ByteLength);
            foreach (var e in Checked())
            {
                Assert.AreEqual(Value(1, e), Read(embedding, e), $"element {e}");
            }
        }

        var inspect = RecycleProcess.Run(["inspect", Input("ft1"), "--json"]);
        Assert.AreEqual(0, inspect.ExitCode, inspect.Stderr);
        StringAssert.Contains(inspect.Stdout, (Elements * 4).ToString(System.Globalization.CultureInfo.InvariantCulture));

        var align = RecycleProcess.Run(["align", Input("ft1"), Input("ft2"), "--base", Input("base")]);
        Assert.AreEqual(0, align.ExitCode, align.Stderr);
    }

    /// <summary>
    /// The merges write 2.4 GB each (about 30 s at this machine's 80 MB/s with fsync, minutes under load) and read the
    /// sparse inputs several times: in the larger run.
    /// </summary>
    [TestMethod]
    [TestCategory("Exhaustive")]
    public void TensorsOver2GiBAreMergedAndRun()
    {
        var (inputs, baseModel) = (new[] { Input("ft1"), Input("ft2") }, Input("base"));

        // Average: the default output mode switches to external data, and a notice says so.
        var averaged = Path.Combine(_root, "out", "average.onnx");
        var embedded = RecycleProcess.Run(["merge", .. inputs, "-o", averaged, "--dtype", "fp32", "--method", "average", "--json"], minutes: 15);
        Assert.AreEqual(0, embedded.ExitCode, embedded.Stderr);
        StringAssert.Contains(embedded.Stdout, "external data");
        using (var model = OnnxModel.Open(averaged))
        {
            var embedding = model.Tensors.Single(t => t.Name == "embedding");
            Assert.AreEqual(TensorStorage.External, embedding.Storage);
            foreach (var e in Checked())
            {
                Assert.AreEqual((Value(1, e) + Value(2, e)) / 2, Read(embedding, e), $"element {e}");
            }

            var bias = model.Tensors.Single(t => t.Name == "bias").ReadFloat32();
            Assert.AreEqual((Bias(1, 7) + Bias(2, 7)) / 2, bias[7]);
        }

        File.Delete(averaged);
        File.Delete(averaged + ".data");

        // TIES with a base, λ = 1 (mergekit's rules, density 1: nothing trimmed): at the exact tie the task vectors sum
        // to zero, which elects + as mergekit does, so the merge takes the positive entry.
        var ties = Path.Combine(_root, "out", "ties.onnx");
        var merged = RecycleProcess.Run(["merge", .. inputs, "--base", baseModel, "--method", "ties", "--lambda", "1", "--external-data", "-o", ties], minutes: 15);
        Assert.AreEqual(0, merged.ExitCode, merged.Stderr);
        using (var model = OnnxModel.Open(ties))
        {
            var embedding = model.Tensors.Single(t => t.Name == "embedding");
            foreach (var e in Checked().Append(TieElement))
            {
                Assert.AreEqual(Ties(e), Read(embedding, e), $"element {e}");
            }

            Assert.AreEqual(Value(0, TieElement) + 0.5f, Read(embedding, TieElement));
            Assert.IsTrue(model.Metadata["recycling.ingredients"].Contains("ft1.onnx", StringComparison.Ordinal));
        }

        // ONNX Runtime reads the 2.4 GB external tensor; our side validates the model and writes the gathered row.
        var ids = Path.Combine(_root, "ids.npy");
        WriteInt64Npy(ids, RunRow);
        var outputs = Path.Combine(_root, "run");
        var run = RecycleProcess.Run(["run", ties, "--input", $"ids={ids}", "-o", outputs], minutes: 15);
        Assert.AreEqual(0, run.ExitCode, run.Stderr);
        var row = Recycling.Onnx.Numpy.NpyFile.Read(Path.Combine(outputs, "y.npy"));
        var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(row.Data);
        for (var c = 0; c < Width; c += 97)
        {
            Assert.AreEqual(Ties((RunRow * Width) + c) + Ties(-1 - c), values[c], 1e-6f, $"column {c}");
        }

        File.Delete(ties);
        File.Delete(ties + ".data");
    }

    /// <summary>The planted places, and some of the run row.</summary>
    private static IEnumerable<long> Checked() =>
        Planted.Concat([RunRow * Width, (RunRow * Width) + 1000, ((RunRow + 1) * Width) - 1, 12_345]);

    /// <summary>
    /// Planted values: model 0 is the base, 1 and 2 the fine-tunings. In the run row the task vectors are negative
    /// (the majority), at the tie element they are +0.5 and −0.5, elsewhere (and at unplanted places, all 0) mixed.
    /// </summary>
    private static float Value(int model, long element)
    {
        if (!IsPlanted(element))
        {
            return 0;
        }

        if (element == TieElement)
        {
            return model == 0 ? 1f : model == 1 ? 1.5f : 0.5f; // exact in fp32: τ = +0.5 and −0.5
        }

        var baseValue = 0.25f + (element % 1000 / 1000f);
        if (model == 0)
        {
            return baseValue;
        }

        var inRunRow = element / Width == RunRow;
        var delta = inRunRow ? -(0.01f * model) - (element % 7 / 100f) : (model == 1 ? 0.3f : -0.1f) + (element % 5 / 10f);
        return baseValue + delta;
    }

    private static bool IsPlanted(long element) => Planted.Contains(element) || element == TieElement || element / Width == RunRow;

    /// <summary>Index −1 − c is column c of the bias.</summary>
    private static float Bias(int model, long column) => (0.001f * model) + (column * 1e-4f);

    /// <summary>TIES with every entry kept and λ = 1, in fp32 as the kernel computes it; negative majority for exact ties.</summary>
    private static float Ties(long element)
    {
        float Get(int model) => element < 0 ? Bias(model, -1 - element) : Value(model, element);
        float b = Get(0), t1 = Get(1) - b, t2 = Get(2) - b, sum = t1 + t2;
        float positive = (t1 > 0 ? t1 : 0) + (t2 > 0 ? t2 : 0), negative = (t1 < 0 ? t1 : 0) + (t2 < 0 ? t2 : 0);
        int positives = (t1 > 0 ? 1 : 0) + (t2 > 0 ? 1 : 0), negatives = (t1 < 0 ? 1 : 0) + (t2 < 0 ? 1 : 0);
        float positiveMean = positive / Math.Max(positives, 1), negativeMean = negative / Math.Max(negatives, 1);
        return b + (1f * (sum >= 0 ? positiveMean : negativeMean)); // mergekit: a zero sum elects +
    }

    private static float Read(OnnxTensor tensor, long element) =>
        BitConverter.ToSingle(tensor.GetRawSpan(element * 4, 4));

    private static string Input(string name) => Path.Combine(_root, name + ".onnx");

    /// <summary>Writes NAME.onnx (embedding in NAME.onnx.data, sparse, and an embedded bias) for model index by name.</summary>
    private static void Write(string name)
    {
        var model = name == "base" ? 0 : name[^1] - '0';
        var dataName = name + ".onnx.data";
        using (var data = new FileStream(Path.Combine(_root, dataName), FileMode.CreateNew, FileAccess.Write))
        {
            data.SetLength(Elements * 4);
            foreach (var e in Enumerable.Range(0, (int)Width).Select(c => (RunRow * Width) + c).Concat(Planted).Append(TieElement))
            {
                data.Position = e * 4;
                data.Write(BitConverter.GetBytes(Value(model, e)));
            }
        }

        var embedding = new TensorProto { Name = "embedding", DataType = (int)OnnxDataType.Float, Dims = { Rows, Width }, DataLocation = TensorProto.Types.DataLocation.External };
        embedding.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
        embedding.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "0" });
        embedding.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = (Elements * 4).ToString(System.Globalization.CultureInfo.InvariantCulture) });
        var bias = new TensorProto { Name = "bias", DataType = (int)OnnxDataType.Float, Dims = { Width } };
        bias.FloatData.AddRange(Enumerable.Range(0, (int)Width).Select(c => Bias(model, c)));
        var graph = new GraphProto
        {
            Name = "embedding",
            Initializer = { embedding, bias },
            Node =
            {
                new NodeProto { OpType = "Gather", Name = "lookup", Input = { "embedding", "ids" }, Output = { "rows" } },
                new NodeProto { OpType = "Add", Name = "shift", Input = { "rows", "bias" }, Output = { "y" } },
            },
        };
        graph.Input.Add(ValueInfo("ids", OnnxDataType.Int64, 1));
        graph.Output.Add(ValueInfo("y", OnnxDataType.Float, 1, Width));
        var proto = new ModelProto { IrVersion = 8, ProducerName = "large-tensor-test", OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
        File.WriteAllBytes(Path.Combine(_root, name + ".onnx"), proto.ToByteArray());
    }

    private static ValueInfoProto ValueInfo(string name, OnnxDataType type, params long[] dims)
    {
        var shape = new TensorShapeProto();
        shape.Dim.AddRange(dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
    }

    private static void WriteInt64Npy(string path, long value)
    {
        var header = "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }";
        header = header.PadRight(64 - 10 - 1) + "\n";
        using var file = File.Create(path);
        file.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        file.Write(BitConverter.GetBytes((ushort)header.Length));
        file.Write(System.Text.Encoding.ASCII.GetBytes(header));
        file.Write(BitConverter.GetBytes(value));
    }

}
