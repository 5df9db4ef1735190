using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Reliability;

/// <summary>
/// Inputs that another process changes while a command runs, as a user (a sync job, a second download) or an attacker
/// meets them. The change is made at a known point: from the merge's progress listener, which the engine calls
/// synchronously after each merged tensor (so the change lands between the first tensor and the second), or from the
/// reader's seam between an external-data check and its open. Every case ends in one clear error naming the file, or
/// in the right result with the right lineage hash when the opened file still holds the original bytes.
/// </summary>
[TestClass]
public sealed class ChangingInputTests
{
    private const int Width = 512;

    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    public void ADataFileTruncatedMidMergeIsAnErrorNamingItNotACrash()
    {
        var folder = Folder();
        var inputs = WriteModels(folder, external: true);
        var output = Path.Combine(folder, "out", "merged.onnx");
        var data = inputs[1] + ".data";

        var error = Assert.ThrowsExactly<OnnxFormatException>(() => Merge(inputs, output, () =>
        {
            using var file = new FileStream(data, FileMode.Open, FileAccess.Write);
            file.SetLength(4096); // every tensor but the first page now lies past the end: a mapped read would be SIGBUS
        }));

        StringAssert.Contains(error.Message, data);
        Assert.IsFalse(error.Message.Contains('\n', StringComparison.Ordinal), error.Message);
        Assert.IsFalse(Directory.Exists(Path.GetDirectoryName(output)) && Directory.EnumerateFileSystemEntries(Path.GetDirectoryName(output)!).Any(), "something was written");
    }

    [TestMethod]
    public void AModelFileTruncatedMidMergeIsAnErrorNamingIt()
    {
        var folder = Folder();
        var inputs = WriteModels(folder, external: false);
        var output = Path.Combine(folder, "merged.onnx");

        var error = Assert.ThrowsExactly<OnnxFormatException>(() => Merge(inputs, output, () =>
        {
            using var file = new FileStream(inputs[2], FileMode.Open, FileAccess.Write);
            file.SetLength(100);
        }));

        StringAssert.Contains(error.Message, inputs[2]);
        Assert.IsFalse(File.Exists(output));
    }

    [TestMethod]
    public void ADataFileRewrittenInPlaceMidMergeIsAnError()
    {
        var folder = Folder();
        var inputs = WriteModels(folder, external: true);
        var output = Path.Combine(folder, "merged.onnx");
        var data = inputs[1] + ".data";

        var error = Assert.ThrowsExactly<OnnxFormatException>(() => Merge(inputs, output, () =>
        {
            using var file = new FileStream(data, FileMode.Open, FileAccess.Write);
            file.Write(new byte[file.Length]); // same size, other bytes
        }));

        StringAssert.Contains(error.Message, data);
        StringAssert.Contains(error.Message, "changed during the operation");
        Assert.IsFalse(File.Exists(output));
    }

    [TestMethod]
    public void InputsDeletedMidMergeStillMergeTheOpenedBytesWithTheirHashes()
    {
        var folder = Folder();
        var inputs = WriteModels(folder, external: true);
        var reference = Path.Combine(folder, "reference.onnx");
        Merge(inputs, reference, null);
        var hashes = inputs.Select(p => Sha256(p, p + ".data")).ToArray();

        var output = Path.Combine(folder, "merged.onnx");
        Merge(inputs, output, () =>
        {
            File.Delete(inputs[1]);
            File.Delete(inputs[1] + ".data");
        });

        AssertSameValues(reference, output);
        CollectionAssert.AreEqual(hashes[1..], Ingredients(output));
        Assert.AreEqual(hashes[0], Base(output));
    }

    [TestMethod]
    public void InputsReplacedMidMergeMergeTheOpenedBytesAndRecordTheirHashesNotTheReplacements()
    {
        var folder = Folder();
        var inputs = WriteModels(folder, external: true);
        var others = WriteModels(Directory.CreateDirectory(Path.Combine(folder, "others")).FullName, external: true, seed: 99);
        var reference = Path.Combine(folder, "reference.onnx");
        Merge(inputs, reference, null);
        var hashes = inputs.Select(p => Sha256(p, p + ".data")).ToArray();

        var output = Path.Combine(folder, "merged.onnx");
        Merge(inputs, output, () =>
        {
            // As a download tool replaces a file: a complete new file renamed over the old path.
            File.Move(others[1] + ".data", inputs[1] + ".data", overwrite: true);
            File.Move(others[1], inputs[1], overwrite: true);
        });

        AssertSameValues(reference, output);
        CollectionAssert.AreEqual(hashes[1..], Ingredients(output));
        Assert.AreNotEqual(hashes[1], Sha256(inputs[1], inputs[1] + ".data"), "the path now holds the replacement");
    }

    [TestMethod]
    public void ADataFileSwappedForASymlinkAfterTheCheckIsRefused()
    {
        var folder = Folder();
        var inputs = WriteModels(folder, external: true);
        var secret = Path.Combine(Directory.CreateDirectory(Path.Combine(folder, "outside")).FullName, "secret.bin");
        File.WriteAllBytes(secret, new byte[new FileInfo(inputs[1] + ".data").Length]);

        var error = Assert.ThrowsExactly<OnnxFormatException>(() => OpenWithSwap(inputs[1], data =>
        {
            File.Delete(data);
            File.CreateSymbolicLink(data, secret);
        }));

        StringAssert.Contains(error.Message, "symbolic link");
        StringAssert.Contains(error.Message, inputs[1] + ".data");
    }

    [TestMethod]
    public void AFolderOnTheWaySwappedForASymlinkAfterTheCheckIsRefused()
    {
        var folder = Folder();
        var inner = Directory.CreateDirectory(Path.Combine(folder, "weights")).FullName;
        var model = WriteModels(folder, external: true, dataFolder: "weights")[1];
        var outside = Directory.CreateDirectory(Path.Combine(folder, "outside")).FullName;
        File.Copy(Path.Combine(inner, Path.GetFileName(model) + ".data"), Path.Combine(outside, Path.GetFileName(model) + ".data"));

        var error = Assert.ThrowsExactly<OnnxFormatException>(() => OpenWithSwap(model, _ =>
        {
            Directory.Move(inner, inner + ".moved");
            Directory.CreateSymbolicLink(inner, outside);
        }));

        StringAssert.Contains(error.Message, model);
        StringAssert.Contains(error.Message, "symbolic link");
    }

    [TestMethod]
    public void ADataFileSwappedForAHardLinkAfterTheCheckIsRefused()
    {
        var folder = Folder();
        var model = WriteModels(folder, external: true)[1];
        var outside = Path.Combine(Directory.CreateDirectory(Path.Combine(folder, "outside")).FullName, "secret.bin");
        File.Copy(model + ".data", outside);

        var error = Assert.ThrowsExactly<OnnxFormatException>(() => OpenWithSwap(model, data =>
        {
            File.Delete(data);
            Link(outside, data);
        }));

        StringAssert.Contains(error.Message, "2 hard links");
    }

    [TestMethod]
    public void HardLinkedExternalDataIsRefusedAlikeByInspectMergeAndRun()
    {
        var folder = Folder();
        var inputs = WriteModels(folder, external: true);
        Link(inputs[1] + ".data", Path.Combine(folder, "elsewhere.bin"));
        var x = Path.Combine(folder, "x.npy");
        Recycling.Onnx.Numpy.NpyFile.Write(x, Recycling.Onnx.Numpy.NpyArray.From<float>(new float[Width], 1, Width));

        string[][] commands =
        [
            ["inspect", inputs[1]],
            ["merge", inputs[1], inputs[2], "-o", Path.Combine(folder, "merged.onnx")],
            ["run", inputs[1], "--input", x, "-o", Path.Combine(folder, "run")],
        ];
        foreach (var command in commands)
        {
            var (code, _, stderr, _) = RecycleProcess.Run(command);
            Assert.AreEqual(1, code, $"{command[0]}: {stderr}");
            StringAssert.Contains(stderr, "2 hard links", $"{command[0]}: {stderr}");
            Assert.AreEqual(1, stderr.Trim().Split('\n').Length, $"{command[0]}: {stderr}");
        }

        Assert.IsFalse(File.Exists(Path.Combine(folder, "merged.onnx")));
        Assert.IsFalse(Directory.Exists(Path.Combine(folder, "run")));
    }

    private string Folder() =>
        Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), "recycling-changing", TestContext.TestName!, Guid.NewGuid().ToString("N")[..8])).FullName;

    [TestCleanup]
    public void RemoveFolders()
    {
        var root = Path.Combine(Path.GetTempPath(), "recycling-changing", TestContext.TestName!);
        if (Directory.Exists(root))
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>Task arithmetic of inputs[1..] over inputs[0]; <paramref name="change"/> runs once, after the first merged tensor.</summary>
    private static void Merge(string[] inputs, string output, Action? change)
    {
        var listener = new OnFirstReport(change);
        ModelMerger.Merge(new MergeRequest
        {
            Inputs = inputs[1..],
            Base = inputs[0],
            Output = output,
            Options = new MergeOptions { Method = MergeMethod.TaskArithmetic, Lambda = 0.5, Device = MergeDevice.Cpu },
        }, listener);
        Assert.IsTrue(change is null || listener.Fired, "the change was never made");
    }

    private static void OpenWithSwap(string model, Action<string> swap)
    {
        MappedFile.BetweenCheckAndOpen.Value = swap;
        try
        {
            using var opened = OnnxModel.Open(model);
            Assert.Fail("the swapped file was read");
        }
        finally
        {
            MappedFile.BetweenCheckAndOpen.Value = null;
        }
    }

    private static void AssertSameValues(string expected, string actual)
    {
        using var a = OnnxModel.Open(expected);
        using var b = OnnxModel.Open(actual);
        foreach (var t in a.Tensors)
        {
            CollectionAssert.AreEqual(t.ReadRawBytes(), b.Tensors.Single(u => u.Name == t.Name).ReadRawBytes(), t.Name);
        }
    }

    private static string[] Ingredients(string model)
    {
        using var opened = OnnxModel.Open(model);
        return [.. JsonDocument.Parse(opened.Metadata["recycling.ingredients"]).RootElement.EnumerateArray().Select(e => e.GetProperty("sha256").GetString()!)];
    }

    private static string Base(string model)
    {
        using var opened = OnnxModel.Open(model);
        return JsonDocument.Parse(opened.Metadata["recycling.base"]).RootElement.GetProperty("sha256").GetString()!;
    }

    private static string Sha256(params string[] files)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var file in files)
        {
            hash.AppendData(File.ReadAllBytes(file));
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>base.onnx, ft1.onnx, ft2.onnx: two Gemm layers (weights and biases), values in NAME.onnx.data or embedded.</summary>
    private static string[] WriteModels(string folder, bool external, int seed = 1, string? dataFolder = null) =>
        [.. new[] { "base", "ft1", "ft2" }.Select((name, m) => WriteModel(folder, name, external, seed * 10 + m, dataFolder))];

    private static string WriteModel(string folder, string name, bool external, int seed, string? dataFolder)
    {
        var random = new Random(seed);
        var path = Path.Combine(folder, name + ".onnx");
        var location = (dataFolder is null ? "" : dataFolder + "/") + name + ".onnx.data";
        using var data = external ? new FileStream(Path.Combine(folder, location), FileMode.CreateNew) : null;
        var graph = new GraphProto { Name = "mlp" };
        graph.Input.Add(ModelProtos.FloatRow("x", Width));
        var current = "x";
        for (var l = 0; l < 2; l++)
        {
            foreach (var (tensorName, dims) in new[] { ($"w{l}", new long[] { Width, Width }), ($"b{l}", new long[] { Width }) })
            {
                var values = new float[dims.Aggregate(1L, (a, d) => a * d)];
                for (var i = 0; i < values.Length; i++)
                {
                    values[i] = (float)(random.NextDouble() - 0.5);
                }

                var bytes = MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
                var tensor = new TensorProto { Name = tensorName, DataType = (int)OnnxDataType.Float, Dims = { dims } };
                if (data is null)
                {
                    tensor.RawData = ByteString.CopyFrom(bytes);
                }
                else
                {
                    tensor.DataLocation = TensorProto.Types.DataLocation.External;
                    tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
                    tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = data.Position.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    data.Write(bytes);
                }

                graph.Initializer.Add(tensor);
            }

            graph.Node.Add(new NodeProto { OpType = "Gemm", Name = $"fc{l}", Input = { current, $"w{l}", $"b{l}" }, Output = { $"h{l}" }, Attribute = { new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 } } });
            current = $"h{l}";
        }

        graph.Output.Add(ModelProtos.FloatRow(current, Width));
        var model = new ModelProto { IrVersion = 8, ProducerName = "changing-input-test", OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private static void Link(string existing, string link)
    {
        if (LinkNative(existing, link) != 0)
        {
            Assert.Inconclusive($"hard links are not available here (errno {Marshal.GetLastPInvokeError()})");
        }
    }

    [DllImport("libc", EntryPoint = "link", SetLastError = true)]
    private static extern int LinkNative(string existing, string link);

    /// <summary>Runs <paramref name="change"/> on the merging thread when the engine reports its first merged tensor.</summary>
    private sealed class OnFirstReport(Action? change) : IProgress<long>
    {
        public bool Fired { get; private set; }

        public void Report(long value)
        {
            if (!Fired)
            {
                Fired = true;
                change?.Invoke();
            }
        }
    }
}
