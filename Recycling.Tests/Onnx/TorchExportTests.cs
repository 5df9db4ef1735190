using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.Onnx;

/// <summary>
/// Real torch.onnx exports (scripts/fixtures/make_io_fixtures.py): every tensor's type, dims and values match what
/// the script recorded with numpy; every model, and every rewrite of it, reproduces the torch logits in ONNX Runtime.
/// </summary>
[TestClass]
public sealed class TorchExportTests
{
    private static readonly Lazy<JsonDocument> Manifest = new(() => JsonDocument.Parse(File.ReadAllText(Fixtures.TorchIoFile("manifest.json"))));

    public static IEnumerable<object[]> Models => ManifestModels().Select(m => new object[] { m.GetProperty("file").GetString()! });

    [TestMethod]
    public void ManifestCoversEveryFixtureModel()
    {
        var onDisk = Directory.GetFiles(Fixtures.TorchIo, "*.onnx").Select(Path.GetFileName).Order(StringComparer.Ordinal);
        var listed = Models.Select(m => (string)m[0]).Order(StringComparer.Ordinal);
        CollectionAssert.AreEqual(onDisk.ToList(), listed.ToList());
    }

    [TestMethod]
    [DynamicData(nameof(Models))]
    public void EveryTensorMatchesTheManifest(string file)
    {
        var entry = ModelEntry(file);
        using var model = OnnxModel.Open(Fixtures.TorchIoFile(file));
        var expectedTensors = entry.GetProperty("tensors").EnumerateArray().ToList();
        Assert.HasCount(expectedTensors.Count, model.Tensors, "tensors found vs tensors the script listed");
        Assert.AreEqual(entry.GetProperty("initializer_count").GetInt32(), model.Tensors.Count(t => t.Kind == TensorKind.Initializer));
        Assert.AreEqual(entry.GetProperty("opset").GetInt64(), model.Opsets.Single(o => o.Domain.Length == 0).Version);
        CollectionAssert.AreEquivalent(
            entry.GetProperty("external_files").EnumerateArray().Select(f => Path.GetFullPath(Fixtures.TorchIoFile(f.GetString()!))).ToList(),
            model.Files.Skip(1).ToList());

        foreach (var expected in expectedTensors)
        {
            var tensor = Find(model, expected);
            var label = $"{file} {tensor.Path}";
            Assert.AreEqual(expected.GetProperty("dtype").GetInt32(), (int)tensor.DataType, label);
            CollectionAssert.AreEqual(expected.GetProperty("dims").EnumerateArray().Select(d => d.GetInt64()).ToList(), tensor.Shape.ToList(), label);
            Assert.AreEqual(expected.GetProperty("elements").GetInt64(), tensor.ElementCount, label);
            Assert.AreEqual(StorageOf(expected.GetProperty("storage").GetString()!), tensor.Storage, label);

            var raw = tensor.ReadRawBytes();
            Assert.AreEqual(expected.GetProperty("sha256").GetString(), Convert.ToHexStringLower(SHA256.HashData(raw)), label);
            if (tensor.Storage is TensorStorage.Raw or TensorStorage.External)
            {
                Assert.IsTrue(tensor.GetRawSpan().SequenceEqual(raw), label);
            }

            if (OnnxDataTypes.IsFloatingPoint(tensor.DataType))
            {
                var values = tensor.ReadFloat32();
                double sum = 0, sumSquares = 0, sumAbs = 0;
                foreach (var v in values)
                {
                    sum += v;
                    sumSquares += (double)v * v;
                    sumAbs += Math.Abs(v);
                }

                // Exact float32 values summed in float64 in another order than numpy's pairwise sum: 1e-12 of the magnitude.
                Assert.AreEqual(expected.GetProperty("sum").GetDouble(), sum, 1e-12 * Math.Max(1, sumAbs), label);
                Assert.AreEqual(expected.GetProperty("sum_sq").GetDouble(), sumSquares, 1e-12 * Math.Max(1, sumSquares), label);
            }
        }
    }

    [TestMethod]
    [DynamicData(nameof(Models))]
    public void OnnxRuntimeReproducesTheTorchLogits(string file)
    {
        var entry = ModelEntry(file);
        AssertLogits(entry, RunModel(Fixtures.TorchIoFile(file), entry));
    }

    [TestMethod]
    [DynamicData(nameof(Models))]
    public void RewritesEmbeddedAndExternalKeepEveryTensorAndRun(string file)
    {
        var entry = ModelEntry(file);
        var scratch = Directory.CreateTempSubdirectory("recycling-torch-");
        try
        {
            using var source = OnnxModel.Open(Fixtures.TorchIoFile(file));
            var metadata = new Dictionary<string, string> { ["recycling.lineage"] = "{\"sources\":[\"" + file + "\"]}", ["recycling.test"] = "ü ok" };
            var embedded = Path.Combine(scratch.FullName, "embedded.onnx");
            var external = Path.Combine(scratch.FullName, "external.onnx");
            OnnxWriter.Write(source, embedded, new OnnxWriteOptions { ExternalData = ExternalDataMode.Embedded, Metadata = metadata });
            OnnxWriter.Write(source, external, new OnnxWriteOptions { ExternalData = ExternalDataMode.External, ExternalThreshold = 0, Metadata = metadata });
            CollectionAssert.AreEquivalent(new[] { "embedded.onnx", "external.onnx", "external.onnx.data" }, Directory.GetFiles(scratch.FullName).Select(Path.GetFileName).ToList(), "no temporary file is left");

            foreach (var path in new[] { embedded, external })
            {
                using var again = OnnxModel.Open(path);
                Assert.IsNull(ModelComparer.Difference(source, again, ignoreMetadata: true), path);
                foreach (var (key, value) in metadata)
                {
                    Assert.AreEqual(value, again.Metadata[key]);
                }

                foreach (var (key, value) in source.Metadata)
                {
                    Assert.AreEqual(value, again.Metadata[key], "source metadata is kept");
                }

                var expectExternal = path == external;
                foreach (var tensor in again.Tensors.Where(t => t.Storage != TensorStorage.Empty))
                {
                    var shouldBeExternal = expectExternal && tensor.Kind == TensorKind.Initializer;
                    Assert.AreEqual(shouldBeExternal ? TensorStorage.External : TensorStorage.Raw, tensor.Storage, tensor.Path);
                    if (shouldBeExternal)
                    {
                        Assert.AreEqual(0, tensor.DataOffset % 65536, $"{tensor.Path} offset {tensor.DataOffset}");
                        Assert.AreEqual("external.onnx.data", tensor.ExternalLocation);
                    }
                }

                AssertLogits(entry, RunModel(path, entry));
            }
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    [TestMethod]
    [DynamicData(nameof(Models))]
    public void ReplacedTensorIsWrittenExactlyAndRuns(string file)
    {
        var entry = ModelEntry(file);
        var scratch = Directory.CreateTempSubdirectory("recycling-torch-");
        try
        {
            using var source = OnnxModel.Open(Fixtures.TorchIoFile(file));
            // The output layer's weight and bias, doubled, double the logits exactly (scaling by 2 is exact in float arithmetic).
            var targets = OutputLayerInitializers(source);
            Assert.IsNotEmpty(targets);
            var doubled = targets.ToDictionary(t => t, Doubled);
            var expectedLogits = ExpectedLogits(entry).Select(v => 2 * v).ToArray();
            foreach (var mode in new[] { ExternalDataMode.Embedded, ExternalDataMode.External })
            {
                var path = Path.Combine(scratch.FullName, $"replaced-{mode}.onnx");
                var calls = 0;
                OnnxWriter.Write(source, path, new OnnxWriteOptions { ExternalData = mode, ExternalThreshold = 256 }, tensor =>
                {
                    calls++;
                    return doubled.TryGetValue(tensor, out var values) ? new TensorReplacement(tensor.DataType, values) : null;
                });
                Assert.AreEqual(source.Tensors.Count, calls, "replace is asked once per tensor");

                using (var again = OnnxModel.Open(path))
                {
                    for (var i = 0; i < source.Tensors.Count; i++)
                    {
                        var expected = doubled.GetValueOrDefault(source.Tensors[i]) ?? source.Tensors[i].ReadRawBytes();
                        CollectionAssert.AreEqual(expected, again.Tensors[i].ReadRawBytes(), again.Tensors[i].Path);
                    }
                }

                var logits = RunModel(path, entry);
                var tolerance = entry.GetProperty("output_tolerance").GetDouble() * expectedLogits.Max(Math.Abs);
                Assert.IsLessThanOrEqualTo(tolerance, MaxDifference(logits, expectedLogits), $"{file} {mode}: logits of the doubled output layer");
            }
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    [TestMethod]
    public void WriterRefusesToWriteOverItsInputsAndLeavesThemIntact()
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-torch-");
        try
        {
            var single = ModelEntry("transformer_external.onnx");
            var multi = ModelEntry("transformer_multi.onnx");
            var singlePath = Fixtures.CopyTorchIoModel("transformer_external.onnx", scratch.FullName, ExternalFiles(single));
            var multiPath = Fixtures.CopyTorchIoModel("transformer_multi.onnx", scratch.FullName, ExternalFiles(multi));

            // A copy of the single-file model under another name still reads transformer_external.onnx.data.
            var renamed = Path.Combine(scratch.FullName, "renamed.onnx");
            File.Copy(singlePath, renamed);
            var link = Path.Combine(scratch.FullName, "link.onnx");
            File.CreateSymbolicLink(link, multiPath);

            var before = Snapshot(scratch.FullName);
            var cases = new (string Source, string Output)[]
            {
                (singlePath, singlePath),
                (singlePath, Path.Combine(scratch.FullName, ".", "transformer_external.onnx")),
                (renamed, singlePath), // the output's data file transformer_external.onnx.data is the source's external file
                (multiPath, Path.Combine(scratch.FullName, "transformer_multi_data", "matrices.bin")),
                (multiPath, link),
            };
            foreach (var (sourcePath, output) in cases)
            {
                using var source = OnnxModel.Open(sourcePath);
                foreach (var mode in new[] { ExternalDataMode.Embedded, ExternalDataMode.External })
                {
                    var e = Assert.ThrowsExactly<RecyclingException>(() => OnnxWriter.Write(source, output, new OnnxWriteOptions { ExternalData = mode }));
                    StringAssert.Contains(e.Message, "refusing to write over an input", $"{sourcePath} -> {output}");
                }
            }

            CollectionAssert.AreEquivalent(before, Snapshot(scratch.FullName), "inputs unchanged and no temporary file left");
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    [TestMethod]
    public void FailedWriteLeavesNothingBehind()
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-torch-");
        try
        {
            using var source = OnnxModel.Open(Fixtures.TorchIoFile("transformer_external.onnx"));
            var output = Path.Combine(scratch.FullName, "failed.onnx");
            foreach (var mode in new[] { ExternalDataMode.Embedded, ExternalDataMode.External })
            {
                // The last initializer gets one byte too many, after the others were already streamed to the temporary files.
                var last = source.Tensors.Last(t => t.Kind == TensorKind.Initializer);
                var e = Assert.ThrowsExactly<RecyclingException>(() => OnnxWriter.Write(source, output, new OnnxWriteOptions { ExternalData = mode, ExternalThreshold = 0 },
                    t => t == last ? new TensorReplacement(t.DataType, new byte[t.ByteLength + 1]) : null));
                StringAssert.Contains(e.Message, last.Path);
                Assert.IsEmpty(Directory.GetFileSystemEntries(scratch.FullName), mode.ToString());
            }
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    internal static IEnumerable<JsonElement> ManifestModels() => Manifest.Value.RootElement.GetProperty("models").EnumerateArray();

    internal static JsonElement ModelEntry(string file) => ManifestModels().Single(m => m.GetProperty("file").GetString() == file);

    internal static IEnumerable<string> ExternalFiles(JsonElement entry) => entry.GetProperty("external_files").EnumerateArray().Select(f => f.GetString()!);

    /// <summary>Runs <paramref name="path"/> in ONNX Runtime on the manifest's stored input and returns the logits.</summary>
    internal static float[] RunModel(string path, JsonElement entry)
    {
        var (inputName, inputFile) = entry.GetProperty("inputs").EnumerateObject().Select(p => (p.Name, p.Value.GetString()!)).Single();
        var outputName = entry.GetProperty("outputs").EnumerateObject().Single().Name;
        var input = NpyFile.Read(Fixtures.TorchIoFile(inputFile));
        var handles = new List<GCHandle>();
        try
        {
            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
            using var session = new InferenceSession(path, options);
            using var inputValue = CreateValue(input.DType.ToOnnx(), [.. input.Shape], input.Data, handles);
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, [inputName], [inputValue], [outputName]);
            return results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            handles.ForEach(h => h.Free());
        }
    }

    internal static float[] ExpectedLogits(JsonElement entry) =>
        NpyFile.Read(Fixtures.TorchIoFile(entry.GetProperty("outputs").EnumerateObject().Single().Value.GetString()!)).ToSingleArray();

    /// <summary>The manifest's rule: max |ort - expected| &lt;= output_tolerance * max |expected|.</summary>
    internal static void AssertLogits(JsonElement entry, float[] actual)
    {
        var expected = ExpectedLogits(entry);
        Assert.HasCount(expected.Length, actual);
        var tolerance = entry.GetProperty("output_tolerance").GetDouble() * expected.Max(Math.Abs);
        Assert.IsLessThanOrEqualTo(tolerance, MaxDifference(actual, expected), entry.GetProperty("file").GetString());
    }

    private static double MaxDifference(float[] a, float[] b) => a.Zip(b).Max(p => Math.Abs((double)p.First - p.Second));

    private static OrtValue CreateValue(OnnxDataType type, long[] shape, byte[] data, List<GCHandle> handles)
    {
        var handle = GCHandle.Alloc(data, GCHandleType.Pinned);
        handles.Add(handle);
        return OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, OrtTestValues.ToOrt(type), shape, handle.AddrOfPinnedObject(), data.Length);
    }

    private static byte[] Doubled(OnnxTensor tensor)
    {
        var raw = tensor.ReadRawBytes();
        if (tensor.DataType == OnnxDataType.Float)
        {
            var values = MemoryMarshal.Cast<byte, float>(raw.AsSpan());
            for (var i = 0; i < values.Length; i++)
            {
                values[i] *= 2;
            }
        }
        else
        {
            var values = MemoryMarshal.Cast<byte, Half>(raw.AsSpan());
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = (Half)((float)values[i] * 2); // exact: one more in the exponent, far from overflow
            }
        }

        return raw;
    }

    /// <summary>The initializers of the Gemm or MatMul that produces the first graph output (through Cast/Identity nodes).</summary>
    private static List<OnnxTensor> OutputLayerInitializers(OnnxModel model)
    {
        var graph = model.Proto.Graph;
        var producers = graph.Node.SelectMany(n => n.Output.Select(o => (Output: o, Node: n))).ToDictionary(p => p.Output, p => p.Node);
        var layer = producers[graph.Output[0].Name];
        Assert.IsTrue(layer.OpType is "Gemm" or "MatMul", $"output produced by {layer.OpType}");
        var result = new List<OnnxTensor>();
        foreach (var input in layer.Input.Skip(1))
        {
            var name = input;
            while (producers.TryGetValue(name, out var node) && node.OpType is "Cast" or "Identity")
            {
                name = node.Input[0];
            }

            result.Add(model.Tensors.Single(t => t.Kind == TensorKind.Initializer && t.Name == name));
        }

        return result;
    }

    private static OnnxTensor Find(OnnxModel model, JsonElement expected)
    {
        var path = expected.GetProperty("path").GetString()!;
        if (expected.GetProperty("kind").GetString() == "initializer")
        {
            return model.Tensors.Single(t => t.Kind == TensorKind.Initializer && t.Path == $"graph/initializer[{path}]");
        }

        // Constant tensors: "node[i]:OUTPUT/value".
        var index = int.Parse(path[5..path.IndexOf(']', StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture);
        var node = model.Proto.Graph.Node[index];
        Assert.AreEqual(path[(path.IndexOf(':', StringComparison.Ordinal) + 1)..path.LastIndexOf('/')], node.Output[0]);
        var attribute = node.Attribute.Single(a => a.Name == path[(path.LastIndexOf('/') + 1)..]);
        var tensor = model.Tensors.Single(t => ReferenceEquals(t.Proto, attribute.T));
        Assert.AreEqual(TensorKind.Constant, tensor.Kind);
        StringAssert.EndsWith(tensor.Path, "/attribute[value]");
        return tensor;
    }

    private static TensorStorage StorageOf(string storage) => storage switch
    {
        "raw_data" => TensorStorage.Raw,
        "external" => TensorStorage.External,
        "float_data" or "int32_data" or "int64_data" or "double_data" or "uint64_data" => TensorStorage.Typed,
        _ => throw new InvalidDataException($"unknown storage '{storage}' in the manifest"),
    };

    private static List<string> Snapshot(string folder) =>
        [.. Directory.GetFiles(folder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
            .Select(f => $"{Path.GetRelativePath(folder, f)} {(new FileInfo(f).LinkTarget is null ? Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(f))) : "link")}")];
}
