using System.Runtime.InteropServices;
using Google.Protobuf;
using Recycling.Cli;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;
using Recycling.Tests.Cli;
using static Recycling.Tests.Reliability.WireBytes;

namespace Recycling.Tests.Onnx;

/// <summary>
/// Malformed and unsafe models, made from the real torch exports by mutating bytes or through the generated proto
/// classes: each must give exactly <see cref="OnnxFormatException"/> naming the model file and the problem, and
/// `recycle inspect` must print that one line on stderr and exit non-zero.
/// </summary>
[TestClass]
public sealed partial class BadInputTests
{
    private DirectoryInfo _scratch = null!;

    [TestInitialize]
    public void CreateScratch() => _scratch = Directory.CreateTempSubdirectory("recycling-bad-");

    [TestCleanup]
    public void DeleteScratch() => _scratch.Delete(recursive: true);

    [TestMethod]
    public void TruncatedFilesAreRejectedAtEveryOffsetInsideAField()
    {
        var bytes = File.ReadAllBytes(Fixtures.TorchIoFile("cnn_default.onnx"));
        var fields = TopLevelFields(bytes);
        Assert.IsGreaterThan(3, fields.Count);
        var offsets = new SortedSet<int>();
        foreach (var (start, end) in fields)
        {
            // Every offset strictly inside a top-level field (cutting between two fields leaves a shorter valid message).
            var step = Math.Max(1, (end - start) / 400);
            for (var offset = start + 1; offset < end; offset += step)
            {
                offsets.Add(offset);
            }

            offsets.Add(end - 1);
        }

        var path = Path.Combine(_scratch.FullName, "truncated.onnx");
        foreach (var offset in offsets)
        {
            File.WriteAllBytes(path, bytes[..offset]);
            var problem = AssertRejected(path, [], runCli: offset % 7 == 0);
            Assert.IsTrue(problem.Contains("truncated", StringComparison.Ordinal) || problem.Contains("runs past the end", StringComparison.Ordinal), $"cut at {offset}: {problem}");
        }

        File.WriteAllBytes(path, []);
        AssertRejected(path, "empty");
        Assert.IsGreaterThan(400, offsets.Count);

        // A nested length (a tensor's name) that runs past the end of its enclosing message.
        AssertRejected(Save("inner-length.onnx", WithTensorExtra("cnn_default.onnx", Concat(Tag(8, WireType.LengthDelimited), [100, 0x41, 0x42]))), "runs past the end of its message");
    }

    [TestMethod]
    public void CorruptedVarintsAreRejected()
    {
        var bytes = File.ReadAllBytes(Fixtures.TorchIoFile("cnn_default.onnx"));
        var ff = Enumerable.Repeat((byte)0xFF, 11).ToArray();
        var graph = TopLevelFields(bytes).Single(f => bytes[f.Start] == Tag(7, WireType.LengthDelimited)[0]);

        AssertRejected(Save("varint-tag.onnx", [.. ff, .. bytes]), "varint");
        AssertRejected(Save("varint-length.onnx", [.. bytes[..(graph.Start + 1)], .. ff, .. bytes[(graph.Start + 1)..]]), "varint");

        // Deep inside: a dims varint of the first initializer, its enclosing lengths kept consistent.
        AssertRejected(Save("varint-dims.onnx", WithTensorExtra("cnn_default.onnx", Concat(Tag(1, WireType.Varint), ff))), "varint");
    }

    [TestMethod]
    public void WrongWireTypesForKnownFieldsAreRejected()
    {
        var bytes = File.ReadAllBytes(Fixtures.TorchIoFile("cnn_default.onnx"));
        AssertRejected(Save("ir-version-as-bytes.onnx", [.. Tag(1, WireType.LengthDelimited), 1, 0, .. bytes]), "wire type");
        AssertRejected(Save("graph-as-varint.onnx", [.. Tag(7, WireType.Varint), 1, .. bytes]), "wire type");

        // Inside messages: appended to a tensor, or, for a node, kept by Google.Protobuf as an unknown field and written back.
        AssertRejected(Save("data-type-as-bytes.onnx", WithInitializerExtra(Concat(Tag(2, WireType.LengthDelimited), [1, 0]))), "wire type");
        AssertRejected(Save("raw-data-as-varint.onnx", WithInitializerExtra(Concat(Tag(9, WireType.Varint), [1]))), "wire type");
        AssertRejected(Save("float-data-as-fixed64.onnx", WithInitializerExtra(Concat(Tag(4, WireType.Fixed64), new byte[8]))), "wire type");
        var model = Parse("cnn_default.onnx");
        var node = model.Graph.Node[0];
        model.Graph.Node[0] = NodeProto.Parser.ParseFrom(Concat(node.ToByteArray(), Tag(5, WireType.Fixed32), new byte[4]));
        AssertRejected(Save("attribute-as-fixed32.onnx", model.ToByteArray()), "wire type");
    }

    [TestMethod]
    public void ImpossibleDimsAreRejected()
    {
        AssertRejected(SaveWithFirstInitializer("dims-overflow.onnx", t => Reshape(t, 1L << 40, 1L << 40)), "overflows");
        AssertRejected(SaveWithFirstInitializer("bytes-overflow.onnx", t => Reshape(t, 1L << 62)), "overflows");
        AssertRejected(SaveWithFirstInitializer("negative-dim.onnx", t => Reshape(t, -1, 160)), "negative dimension");
        AssertRejected(SaveWithFirstInitializer("unknown-type.onnx", t => t.DataType = 99), "unknown data type 99");
    }

    [TestMethod]
    public void RawDataWhoseLengthDisagreesWithDimsIsRejected()
    {
        AssertRejected(SaveWithFirstInitializer("raw-short.onnx", t => t.RawData = ByteString.CopyFrom(t.RawData.Span[..^4])), "raw_data has 636 bytes", "[10, 16]", "need 640");
        AssertRejected(SaveWithFirstInitializer("raw-long.onnx", t => t.RawData = ByteString.CopyFrom([.. t.RawData.Span, 0])), "raw_data has 641 bytes");
        AssertRejected(SaveWithFirstInitializer("raw-and-typed.onnx", t => t.FloatData.Add(1f)), "both raw_data and typed");
        AssertRejected(SaveWithFirstInitializer("no-values.onnx", t => t.RawData = ByteString.Empty), "declares 160 elements but has no values");
    }

    [TestMethod]
    public void TypedFieldsThatDisagreeWithDimsOrTypeAreRejected()
    {
        AssertRejected(Save("typed-short.onnx", Mutate("cnn_typed.onnx", m => m.Graph.Initializer[0].FloatData.RemoveAt(0))), "typed fields hold 159 values", "need 160");
        AssertRejected(Save("typed-long.onnx", Mutate("cnn_typed.onnx", m => m.Graph.Initializer[0].FloatData.Add(1f))), "typed fields hold 161 values");
        AssertRejected(Save("typed-wrong-field.onnx", Mutate("cnn_typed.onnx", m =>
        {
            var tensor = m.Graph.Initializer[0];
            tensor.Int64Data.Add(tensor.FloatData.Select(v => (long)v));
            tensor.FloatData.Clear();
        })), "Float values found in field 7; expected field 4");
        AssertRejected(Save("fp16-in-float-data.onnx", Mutate("cnn_fp16_typed.onnx", m =>
        {
            var tensor = m.Graph.Initializer[0];
            tensor.FloatData.Add(tensor.Int32Data.Select(v => (float)v));
            tensor.Int32Data.Clear();
        })), "Float16 values found in field 4; expected field 5");
        AssertRejected(Save("packed-float-partial.onnx", WithTensorExtra("cnn_typed.onnx", Concat(Tag(4, WireType.LengthDelimited), [3, 0, 0, 0]))), "is not a whole number of floats");
        AssertRejected(Save("packed-varint-truncated.onnx", WithTensorExtra("cnn_fp16_typed.onnx", Concat(Tag(5, WireType.LengthDelimited), [2, 0x01, 0x80]))), "packed varints end inside a value");
    }

    [TestMethod]
    public void ExternalDataThatIsUnsafeOrOutOfRangeIsRejected()
    {
        var folder = _scratch.FullName;
        var dataFile = "transformer_external.onnx.data";
        Fixtures.CopyTorchIoModel("transformer_external.onnx", folder, [dataFile]);
        var dataLength = new FileInfo(Path.Combine(folder, dataFile)).Length;

        AssertRejected(SaveExternal("absolute.onnx", location: Path.Combine(folder, dataFile)), "is absolute");
        AssertRejected(SaveExternal("dotdot.onnx", location: $"../{_scratch.Name}/{dataFile}"), "contains '..'");
        AssertRejected(SaveExternal("dotdot-inside.onnx", location: $"sub/../{dataFile}"), "contains '..'");
        AssertRejected(SaveExternal("ort-marker.onnx", location: "*/_ORT_MEM_ADDR_/*"), "_ORT_MEM_ADDR_");
        AssertRejected(SaveExternal("empty-location.onnx", location: ""), "empty location");
        AssertRejected(SaveExternal("no-location.onnx", location: null), "no 'location'");
        AssertRejected(SaveExternal("missing.onnx", location: "missing.data"), "missing");

        File.WriteAllBytes(Path.Combine(folder, "empty.data"), []);
        AssertRejected(SaveExternal("empty-file.onnx", location: "empty.data"), "past the end of 'empty.data' (0 bytes)");

        Directory.CreateDirectory(Path.Combine(folder, "folder.data"));
        AssertRejected(SaveExternal("folder.onnx", location: "folder.data"), "is a folder");

        AssertRejected(SaveExternal("offset-past-end.onnx", offset: dataLength - 4), "past the end");
        AssertRejected(SaveExternal("offset-at-end.onnx", offset: dataLength), "past the end");
        AssertRejected(SaveExternal("offset-huge.onnx", offset: long.MaxValue), "past the end");
        AssertRejected(SaveExternal("offset-negative.onnx", offsetText: "-8"), "offset '-8' is not a non-negative integer");
        AssertRejected(SaveExternal("length-wrong.onnx", length: 6148), "external length 6148 disagrees");

        File.CreateSymbolicLink(Path.Combine(folder, "link.data"), Path.Combine(folder, dataFile));
        AssertRejected(SaveExternal("symlink-file.onnx", location: "link.data"), "symbolic link");

        var real = Directory.CreateDirectory(Path.Combine(folder, "real"));
        File.Copy(Path.Combine(folder, dataFile), Path.Combine(real.FullName, dataFile));
        Directory.CreateSymbolicLink(Path.Combine(folder, "linked"), real.FullName);
        AssertRejected(SaveExternal("symlink-folder.onnx", location: $"linked/{dataFile}"), "symbolic link");

        var outside = Directory.CreateTempSubdirectory("recycling-outside-");
        try
        {
            File.Copy(Path.Combine(folder, dataFile), Path.Combine(outside.FullName, "secret.data"));
            File.CreateSymbolicLink(Path.Combine(folder, "escape.data"), Path.Combine(outside.FullName, "secret.data"));
            AssertRejected(SaveExternal("symlink-outside.onnx", location: "escape.data"), "symbolic link");
        }
        finally
        {
            outside.Delete(recursive: true);
        }

        Assert.AreEqual(0, MakeFifo(Path.Combine(folder, "fifo.data"), 0x1B6), "mkfifo(3) failed");
        AssertRejected(SaveExternal("fifo.onnx", location: "fifo.data"), "not a regular file");

        Assert.AreEqual(0, Link(Path.Combine(real.FullName, dataFile), Path.Combine(folder, "hard.data")), "link(2) failed");
        AssertRejected(SaveExternal("hard-link.onnx", location: "hard.data"), "2 hard links");

        AssertRejected(Save("external-and-raw.onnx", Mutate("transformer_external.onnx", m => m.Graph.Initializer[0].RawData = ByteString.CopyFrom(new byte[6144]))), "EXTERNAL but also carries values");
        AssertRejected(Save("external-entries-not-external.onnx", Mutate("transformer_external.onnx", m => m.Graph.Initializer[0].DataLocation = TensorProto.Types.DataLocation.Default)), "data_location is not EXTERNAL");
    }

    [TestMethod]
    public void DeeplyNestedSubgraphsAreRejected()
    {
        var model = Parse("cnn_default.onnx");
        var graph = new GraphProto { Name = "innermost" };
        for (var i = 0; i < 200; i++)
        {
            var node = new NodeProto { OpType = "If", Name = $"if{i}", Input = { "cond" }, Output = { $"y{i}" } };
            node.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = graph });
            graph = new GraphProto { Name = $"level{i}", Node = { node } };
        }

        model.Graph.Node.Add(graph.Node[0]);
        AssertRejected(Save("if-bomb.onnx", model.ToByteArray()), $"nested deeper than {ProtoScanner.MaxDepth} levels");
    }

    [TestMethod]
    public void ModelFileOverTwoGibibytesIsRejectedWithoutReadingIt()
    {
        var path = Path.Combine(_scratch.FullName, "huge.onnx");
        using (var stream = new FileStream(path, FileMode.CreateNew))
        {
            stream.Write(File.ReadAllBytes(Fixtures.TorchIoFile("cnn_default.onnx")));
            stream.SetLength((2L << 30) + 4096); // sparse: no real data written
        }

        AssertRejected(path, "2 GiB", "external data");
    }

    [TestMethod]
    public void FilesThatAreNotOnnxAreRejected()
    {
        AssertRejected(Save("manifest.onnx", File.ReadAllBytes(Fixtures.TorchIoFile("manifest.json"))), "not a valid ONNX protobuf");
        AssertRejected(Save("no-graph.onnx", Mutate("cnn_default.onnx", m => m.Graph = null)), "no graph");
        AssertRejected(Path.Combine(_scratch.FullName, "absent.onnx"), "file not found");
        var folder = Directory.CreateDirectory(Path.Combine(_scratch.FullName, "folder.onnx")).FullName;
        AssertRejected(folder, ["cannot be read"], runCli: false);
        Assert.AreEqual($"error: {folder}: is a folder, not a model file{Environment.NewLine}", InspectCommandTests.Run("inspect", folder).Item3, "the CLI names a folder as such");
        var fifo = Path.Combine(_scratch.FullName, "fifo.onnx");
        Assert.AreEqual(0, MakeFifo(fifo, 0x1B6), "mkfifo(3) failed");
        AssertRejected(fifo, "not a regular file");
        AssertRejected(Save("reserved-field.onnx", Concat(File.ReadAllBytes(Fixtures.TorchIoFile("cnn_default.onnx")), Tag(536_870_000, WireType.Varint), [1])), "reserved");
    }

    /// <summary>Opening must throw exactly OnnxFormatException naming the file and the problem; `recycle inspect` prints it as one line and exits 1.</summary>
    private static void AssertRejected(string path, params string[] problemWords) => AssertRejected(path, problemWords, runCli: true);

    private static string AssertRejected(string path, string[] problemWords, bool runCli)
    {
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => OnnxModel.Open(path).Dispose(), path);
        Assert.AreEqual(Path.GetFullPath(path), e.File);
        Assert.AreEqual($"{MessageText.Path(e.File)}: {e.Problem}", e.Message);
        foreach (var word in problemWords)
        {
            StringAssert.Contains(e.Problem, word, $"{path}: the problem should say '{word}'");
        }

        Assert.DoesNotContain('\n', e.Message);
        if (runCli)
        {
            var (code, stdout, stderr) = InspectCommandTests.Run("inspect", path);
            Assert.AreEqual(RecycleCli.ErrorExitCode, code);
            Assert.AreEqual("", stdout);
            Assert.AreEqual($"error: {e.Message}{Environment.NewLine}", stderr);
        }

        return e.Problem;
    }

    /// <summary>(start, end) of each top-level field of a serialized message.</summary>
    private static List<(int Start, int End)> TopLevelFields(byte[] bytes)
    {
        var fields = new List<(int, int)>();
        var reader = new WireReader(bytes);
        while (!reader.AtEnd)
        {
            var start = reader.Position;
            var (_, type) = reader.ReadTag();
            reader.Skip(type);
            fields.Add((start, reader.Position));
        }

        return fields;
    }

    private string Save(string name, byte[] bytes)
    {
        var path = Path.Combine(_scratch.FullName, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static ModelProto Parse(string fixture) => ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.TorchIoFile(fixture)));

    private static byte[] Mutate(string fixture, Action<ModelProto> change)
    {
        var model = Parse(fixture);
        change(model);
        return model.ToByteArray();
    }

    private string SaveWithFirstInitializer(string name, Action<TensorProto> change) => Save(name, Mutate("cnn_default.onnx", m => change(m.Graph.Initializer[0])));

    /// <summary>cnn_default with extra raw bytes appended to its first initializer (fc.weight).</summary>
    private static byte[] WithInitializerExtra(byte[] extra) => WithTensorExtra("cnn_default.onnx", extra);

    /// <summary>A fixture with extra raw bytes appended to its first initializer; the enclosing lengths are re-encoded.</summary>
    private static byte[] WithTensorExtra(string fixture, byte[] extra)
    {
        var model = Parse(fixture);
        var tensor = model.Graph.Initializer[0];
        model.Graph.Initializer.RemoveAt(0);
        var graph = Concat(model.Graph.ToByteArray(), Field(5, Concat(tensor.ToByteArray(), extra)));
        model.Graph = null;
        return Concat(model.ToByteArray(), Field(7, graph));
    }

    private static void Reshape(TensorProto tensor, params long[] dims)
    {
        tensor.Dims.Clear();
        tensor.Dims.Add(dims);
        tensor.RawData = ByteString.Empty;
    }

    /// <summary>transformer_external.onnx with the external_data of tok.weight (its first initializer) changed.</summary>
    private string SaveExternal(string name, string? location = "transformer_external.onnx.data", long? offset = null, string? offsetText = null, long? length = null) =>
        Save(name, Mutate("transformer_external.onnx", m =>
        {
            var entries = m.Graph.Initializer[0].ExternalData;
            Assert.AreEqual("tok.weight", m.Graph.Initializer[0].Name);
            entries.Clear();
            if (location is not null)
            {
                entries.Add(new StringStringEntryProto { Key = "location", Value = location });
            }

            if (offset is not null || offsetText is not null)
            {
                entries.Add(new StringStringEntryProto { Key = "offset", Value = offsetText ?? offset!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            }

            if (length is not null)
            {
                entries.Add(new StringStringEntryProto { Key = "length", Value = length.Value.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            }
        }));

    [LibraryImport("libc", EntryPoint = "mkfifo", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MakeFifo(string path, uint mode);

    [LibraryImport("libc", EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Link(string existing, string created);
}
