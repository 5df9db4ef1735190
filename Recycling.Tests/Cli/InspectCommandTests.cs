using Google.Protobuf;
using System.Text.Json;
using Recycling.Cli;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Cli;

/// <summary>`recycle inspect` run in-process on the real torch exports.</summary>
[TestClass]
public sealed class InspectCommandTests
{
    [TestMethod]
    public void HelpListsInspect()
    {
        var (code, stdout, _) = Run("--help");
        Assert.AreEqual(0, code);
        StringAssert.Contains(stdout, "inspect");
    }

    [TestMethod]
    public void PlainTextShowsHeaderValuesAndEveryTensor()
    {
        var path = Fixtures.TorchIoFile("transformer_multi.onnx");
        var (code, stdout, stderr) = Run("inspect", path);
        Assert.AreEqual(0, code, stderr);
        Assert.AreEqual("", stderr);
        var lines = stdout.Split('\n', StringSplitOptions.TrimEntries);
        CollectionAssert.Contains(lines, "producer: pytorch 1.13.0");
        CollectionAssert.Contains(lines, "ir_version: 7");
        CollectionAssert.Contains(lines, "opsets: ai.onnx 14");
        CollectionAssert.Contains(lines, "input  INT64 [2, 8]");
        CollectionAssert.Contains(lines, "logits  FLOAT [2, 8, 48]");

        using var model = OnnxModel.Open(path);
        foreach (var tensor in model.Tensors)
        {
            var where = tensor.Storage == TensorStorage.External ? $"{tensor.ExternalLocation}@{tensor.DataOffset}" : tensor.Storage.ToString().ToLowerInvariant();
            var row = lines.Single(l => l.StartsWith(tensor.Path + " ", StringComparison.Ordinal));
            CollectionAssert.AreEqual(
                new[] { tensor.Path, InspectName(tensor.DataType), $"[{string.Join(", ", tensor.Shape)}]", tensor.ByteLength.ToString(System.Globalization.CultureInfo.InvariantCulture), where },
                System.Text.RegularExpressions.Regex.Split(row, @"\s{2,}"),
                row);
        }

        var total = model.Tensors.Sum(t => t.ByteLength);
        var external = model.Tensors.Where(t => t.Storage == TensorStorage.External).Sum(t => t.ByteLength);
        Assert.IsTrue(lines.Any(l => l.StartsWith($"total: {model.Tensors.Count} tensors", StringComparison.Ordinal) && l.Contains($"{total:N0} bytes", StringComparison.Ordinal) && l.EndsWith($"external {external:N0}", StringComparison.Ordinal)), stdout);
    }

    [TestMethod]
    public void JsonHasStableFieldsSymbolicDimsAndMetadata()
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-inspect-");
        try
        {
            // A typed-field export with a symbolic batch dim and metadata written by OnnxWriter.
            var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.TorchIoFile("cnn_typed.onnx")));
            proto.Graph.Input[0].Type.TensorType.Shape.Dim[0] = new TensorShapeProto.Types.Dimension { DimParam = "batch" };
            proto.Graph.Output[0].Type.TensorType.Shape.Dim[0] = new TensorShapeProto.Types.Dimension();
            var symbolic = Path.Combine(scratch.FullName, "symbolic.onnx");
            File.WriteAllBytes(symbolic, proto.ToByteArray());
            var path = Path.Combine(scratch.FullName, "inspected.onnx");
            using (var source = OnnxModel.Open(symbolic))
            {
                OnnxWriter.Write(source, path, new OnnxWriteOptions
                {
                    ExternalData = ExternalDataMode.External,
                    ExternalThreshold = 1000,
                    Metadata = new Dictionary<string, string> { ["recycling.source"] = "cnn_typed" },
                });
            }

            var (code, stdout, stderr) = Run("inspect", path, "--json");
            Assert.AreEqual(0, code, stderr);
            using var json = JsonDocument.Parse(stdout);
            var root = json.RootElement;
            CollectionAssert.AreEqual(
                new[] { "file", "irVersion", "producerName", "producerVersion", "domain", "modelVersion", "opsets", "inputs", "outputs", "metadata", "tensors", "totals" },
                root.EnumerateObject().Select(p => p.Name).ToList());
            Assert.AreEqual(path, root.GetProperty("file").GetString());
            Assert.AreEqual("pytorch", root.GetProperty("producerName").GetString());
            Assert.AreEqual(14, root.GetProperty("opsets")[0].GetProperty("version").GetInt64());
            CollectionAssert.AreEqual(new[] { "batch", "3", "16", "16" }, root.GetProperty("inputs")[0].GetProperty("shape").EnumerateArray().Select(d => d.GetString()).ToList());
            CollectionAssert.AreEqual(new[] { "?", "10" }, root.GetProperty("outputs")[0].GetProperty("shape").EnumerateArray().Select(d => d.GetString()).ToList());
            Assert.AreEqual("cnn_typed", root.GetProperty("metadata").GetProperty("recycling.source").GetString());

            using var model = OnnxModel.Open(path);
            var tensors = root.GetProperty("tensors").EnumerateArray().ToList();
            Assert.HasCount(model.Tensors.Count, tensors);
            foreach (var (tensor, entry) in model.Tensors.Zip(tensors))
            {
                CollectionAssert.AreEqual(
                    new[] { "path", "name", "kind", "dtype", "shape", "elements", "bytes", "storage", "location", "offset" },
                    entry.EnumerateObject().Select(p => p.Name).ToList());
                Assert.AreEqual(tensor.Path, entry.GetProperty("path").GetString());
                Assert.AreEqual("FLOAT", entry.GetProperty("dtype").GetString());
                CollectionAssert.AreEqual(tensor.Shape.ToList(), entry.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToList());
                Assert.AreEqual(tensor.ByteLength, entry.GetProperty("bytes").GetInt64());
                var external = tensor.ByteLength >= 1000;
                Assert.AreEqual(external ? "external" : "raw", entry.GetProperty("storage").GetString(), tensor.Path);
                Assert.AreEqual(external ? "inspected.onnx.data" : null, entry.GetProperty("location").GetString());
                Assert.AreEqual(tensor.DataOffset, entry.GetProperty("offset").GetInt64());
            }

            var totals = root.GetProperty("totals");
            Assert.AreEqual(model.Tensors.Sum(t => t.ByteLength), totals.GetProperty("bytes").GetInt64());
            Assert.AreEqual(model.Tensors.Where(t => t.ByteLength >= 1000).Sum(t => t.ByteLength), totals.GetProperty("externalBytes").GetInt64());
            Assert.IsGreaterThan(0, totals.GetProperty("externalBytes").GetInt64());
            CollectionAssert.AreEqual(new[] { path + ".data" }, totals.GetProperty("externalFiles").EnumerateArray().Select(f => f.GetString()).ToList());
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    [TestMethod]
    public void TypedFieldsAreReportedAsTyped()
    {
        var (code, stdout, stderr) = Run("inspect", Fixtures.TorchIoFile("cnn_fp16_typed.onnx"), "--json");
        Assert.AreEqual(0, code, stderr);
        using var json = JsonDocument.Parse(stdout);
        var tensors = json.RootElement.GetProperty("tensors").EnumerateArray().Where(t => t.GetProperty("kind").GetString() == "initializer").ToList();
        Assert.HasCount(6, tensors);
        Assert.IsTrue(tensors.All(t => t.GetProperty("storage").GetString() == "typed" && t.GetProperty("dtype").GetString() == "FLOAT16" && t.GetProperty("offset").ValueKind == JsonValueKind.Null));
    }

    [TestMethod]
    public void MissingFileIsOneLineOnStderrAndExitCodeOne()
    {
        var missing = Path.Combine(Path.GetTempPath(), $"recycling-missing-{Guid.NewGuid():N}.onnx");
        var (code, stdout, stderr) = Run("inspect", missing);
        Assert.AreEqual(RecycleCli.ErrorExitCode, code);
        Assert.AreEqual("", stdout);
        Assert.AreEqual($"error: {missing}: file not found{Environment.NewLine}", stderr);
    }

    internal static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var code = RecycleCli.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static string InspectName(OnnxDataType type) => type.ToString().ToUpperInvariant();
}
