using System.Security.Cryptography;
using System.Text.Json;
using Recycling.Cli;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

[TestClass]
public sealed class MergeEngineTests
{
    private static readonly string Root = Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-merge");
    private string _scratch = null!;

    [TestInitialize]
    public void CreateScratch() => _scratch = Directory.CreateTempSubdirectory("recycling-merge-").FullName;

    [TestCleanup]
    public void RemoveScratch() => Directory.Delete(_scratch, recursive: true);

    private static string Fixture(string arch, string variant, string role) => Path.GetFullPath(Path.Combine(Root, arch, variant, role + ".onnx"));

    private static string[] FineTunings(string arch, string variant = "default") => [Fixture(arch, variant, "ft1"), Fixture(arch, variant, "ft2"), Fixture(arch, variant, "ft3")];

    [TestMethod]
    public void ModelsOfDifferentBasesAreRefusedNamingTheFirstDifferentNode()
    {
        var e = Assert.ThrowsExactly<RecyclingException>(() => ModelMerger.Merge(new MergeRequest
        {
            Inputs = [Fixture("transformer", "default", "ft1"), Fixture("mlp", "default", "ft1")],
            Output = Path.Combine(_scratch, "out.onnx"),
        }));
        StringAssert.Contains(e.Message, "graphs differ at node 0");
        StringAssert.Contains(e.Message, "Gather");
        StringAssert.Contains(e.Message, "Gemm");
        Assert.IsEmpty(Directory.GetFiles(_scratch));
    }

    [TestMethod]
    public void WritingOverAnInputIsRefusedAndTheInputIsUntouched()
    {
        var copies = FineTunings("mlp").Select(f => Copy(f)).ToArray();
        var before = copies.Select(Hash).ToArray();
        var e = Assert.ThrowsExactly<RecyclingException>(() => ModelMerger.Merge(new MergeRequest { Inputs = copies, Output = copies[1] }));
        StringAssert.Contains(e.Message, "refusing to write over an input");
        CollectionAssert.AreEqual(before, copies.Select(Hash).ToArray());
        Assert.HasCount(3, Directory.GetFiles(_scratch), "no temporary file is left behind");
    }

    [TestMethod]
    public void NonFiniteInputsAreReportedAndNothingIsWrittenUnlessAllowed()
    {
        var inputs = FineTunings("mlp");
        var poisoned = Path.Combine(_scratch, "poisoned.onnx");
        using (var source = OnnxModel.Open(inputs[1]))
        {
            OnnxWriter.Write(source, poisoned, replace: t => t.Name == "fc1.weight" ? WithNaN(t) : null);
        }

        var output = Path.Combine(_scratch, "out.onnx");
        var e = Assert.ThrowsExactly<RecyclingException>(() => ModelMerger.Merge(new MergeRequest { Inputs = [inputs[0], poisoned], Output = output }));
        StringAssert.Contains(e.Message, "fc1.weight holds NaN or infinity");
        Assert.IsFalse(File.Exists(output));

        var summary = ModelMerger.Merge(new MergeRequest { Inputs = [inputs[0], poisoned], Output = output, AllowNonFinite = true });
        Assert.IsTrue(File.Exists(output));
        Assert.IsTrue(summary.Notes.Any(n => n.Contains("NaN", StringComparison.Ordinal)));
    }

    [TestMethod]
    public void MergedModelCarriesLineageWithIngredientHashes()
    {
        var inputs = FineTunings("mlp");
        var output = Path.Combine(_scratch, "out.onnx");
        ModelMerger.Merge(new MergeRequest { Inputs = inputs, Base = Fixture("mlp", "default", "base"), Output = output, Options = new MergeOptions { Method = MergeMethod.TaskArithmetic, Lambda = 0.7 } });
        using var merged = OnnxModel.Open(output);
        StringAssert.Contains(merged.Metadata["recycling.method"], "task_arithmetic (lambda 0.7)");
        Assert.AreEqual(ModelMerger.ToolVersion, merged.Metadata["recycling.version"]);
        using var ingredients = JsonDocument.Parse(merged.Metadata["recycling.ingredients"]);
        var listed = ingredients.RootElement.EnumerateArray().ToList();
        Assert.HasCount(3, listed);
        for (var i = 0; i < 3; i++)
        {
            Assert.AreEqual(Path.GetFileName(inputs[i]), listed[i].GetProperty("file").GetString());
            Assert.AreEqual(Hash(inputs[i]), listed[i].GetProperty("sha256").GetString());
        }

        StringAssert.Contains(merged.Metadata["recycling.base"], Hash(Fixture("mlp", "default", "base")));
    }

    [TestMethod]
    public void SummaryCountsEveryInputByteReadWithOrWithoutAProgressListener()
    {
        var inputs = FineTunings("mlp");
        // Every parameter of every input is read once. ft1 stores all 8 parameters; ft3's exporter aliased its zero
        // fc3.bias to fc2.bias with an Identity, which is still read once for each of the two parameters.
        using var first = OnnxModel.Open(inputs[0]);
        long expected = inputs.Length * first.Tensors.Where(t => t.Kind == TensorKind.Initializer && t.DataType == OnnxDataType.Float).Sum(t => t.ByteLength);
        long reported = 0;
        var quiet = ModelMerger.Merge(new MergeRequest { Inputs = inputs, Output = Path.Combine(_scratch, "quiet.onnx") });
        var listened = ModelMerger.Merge(new MergeRequest { Inputs = inputs, Output = Path.Combine(_scratch, "listened.onnx") },
            new SynchronousProgress(b => reported = b));
        Assert.AreEqual(expected, quiet.BytesRead);
        Assert.AreEqual(expected, listened.BytesRead);
        Assert.AreEqual(expected, reported);
    }

    private sealed class SynchronousProgress(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }

    [TestMethod]
    public void DareWithOneSeedIsByteIdenticalAndAnotherSeedDiffers()
    {
        string Merge(ulong seed, string name)
        {
            var output = Path.Combine(_scratch, name);
            ModelMerger.Merge(new MergeRequest
            {
                Inputs = FineTunings("transformer"),
                Base = Fixture("transformer", "default", "base"),
                Output = output,
                Options = new MergeOptions { Method = MergeMethod.Dare, DropRate = 0.5, Seed = seed },
            });
            return Hash(output);
        }

        Assert.AreEqual(Merge(7, "a.onnx"), Merge(7, "b.onnx"));
        Assert.AreNotEqual(Merge(7, "c.onnx"), Merge(8, "d.onnx"));
    }

    [TestMethod]
    [DataRow("ties")]
    [DataRow("dare-ties")]
    [DataRow("dare")]
    public void NonLinearMethodsKeepTheTiedTransposedCopyConsistent(string method)
    {
        var output = Path.Combine(_scratch, "out.onnx");
        ModelMerger.Merge(new MergeRequest
        {
            Inputs = FineTunings("transformer"),
            Base = Fixture("transformer", "default", "base"),
            Output = output,
            Options = new MergeOptions { MethodName = method, Density = 0.3, Seed = 3 },
        });
        using var merged = OnnxModel.Open(output);
        var embedding = merged.Tensors.Single(t => t.Name == "tok.weight");
        var projection = merged.Tensors.Single(t => t.Name == "onnx::MatMul_161");
        var e = embedding.ReadFloat32();
        var p = projection.ReadFloat32();
        int rows = (int)embedding.Shape[0], cols = (int)embedding.Shape[1];
        for (var i = 0; i < rows; i++)
        {
            for (var j = 0; j < cols; j++)
            {
                Assert.AreEqual(e[(i * cols) + j], p[(j * rows) + i], $"tie broken at [{i},{j}]");
            }
        }

        using var ft1 = OnnxModel.Open(FineTunings("transformer")[0]);
        CollectionAssert.AreNotEqual(ft1.Tensors.Single(t => t.Name == "tok.weight").ReadFloat32(), e, "the merge changed the weight");
    }

    [TestMethod]
    public void BatchNormVariancesStayNonNegativeUnderStrongTaskArithmetic()
    {
        var output = Path.Combine(_scratch, "out.onnx");
        var summary = ModelMerger.Merge(new MergeRequest
        {
            Inputs = FineTunings("cnn", "preserve"),
            Base = Fixture("cnn", "preserve", "base"),
            Output = output,
            Options = new MergeOptions { Method = MergeMethod.TaskArithmetic, Lambda = 3.0 },
        });
        Assert.IsTrue(summary.Notes.Any(n => n.Contains("BatchNorm running statistics were averaged", StringComparison.Ordinal)));
        using var merged = OnnxModel.Open(output);
        using var baseModel = OnnxModel.Open(Fixture("cnn", "preserve", "base"));
        var plan = Aligner.Align([merged]);
        var variances = plan.Parameters.Where(p => p.IsBatchNormStatistic && p.Consumer.EndsWith('4')).ToList();
        Assert.IsNotEmpty(variances);
        foreach (var v in variances)
        {
            Assert.IsTrue(v.Tensors[0].ReadFloat32().All(x => x >= 0), $"{v.Tensors[0].Name} has a negative variance");
        }
    }

    [TestMethod]
    [DataRow("fp16")]
    [DataRow("bf16")]
    public void HalfPrecisionOutputStoresWeightsHalfAndStillRuns(string dtype)
    {
        var output = Path.Combine(_scratch, "out.onnx");
        var code = RecycleCli.Run([.. new[] { "merge" }, .. FineTunings("mlp"), "-o", output, "--dtype", dtype, "--json"], new StringWriter(), new StringWriter());
        Assert.AreEqual(0, code);
        using var merged = OnnxModel.Open(output);
        var expectedType = dtype == "fp16" ? OnnxDataType.Float16 : OnnxDataType.BFloat16;
        Assert.IsTrue(merged.Tensors.Where(t => t.Name.StartsWith("fc", StringComparison.Ordinal)).All(t => t.DataType == expectedType));
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(output);
        Assert.IsNotEmpty(session.OutputNames);
    }

    [TestMethod]
    public void CliAlignPrintsJsonAndMergeExitsNonZeroOnBadInput()
    {
        var stdout = new StringWriter();
        var files = FineTunings("transformer");
        Assert.AreEqual(0, RecycleCli.Run(["align", .. files, "--base", Fixture("transformer", "default", "base"), "--json"], stdout, new StringWriter()));
        using var plan = JsonDocument.Parse(stdout.ToString());
        Assert.AreEqual(17, plan.RootElement.GetProperty("parameters").GetArrayLength());
        Assert.AreEqual(1, plan.RootElement.GetProperty("summary").GetProperty("tied").GetInt32());

        var stderr = new StringWriter();
        Assert.AreNotEqual(0, RecycleCli.Run(["merge", files[0], Fixture("mlp", "default", "ft1"), "-o", Path.Combine(_scratch, "x.onnx")], new StringWriter(), stderr));
        StringAssert.StartsWith(stderr.ToString(), "error: ");
        Assert.AreNotEqual(0, RecycleCli.Run(["merge", .. files, "-o", Path.Combine(_scratch, "x.onnx"), "--method", "ties"], new StringWriter(), stderr));
        StringAssert.Contains(stderr.ToString(), "needs the base model");
    }

    [TestMethod]
    public void InMemoryMergeEqualsTheMergeWrittenToDisk()
    {
        var inputs = FineTunings("transformer");
        var output = Path.Combine(_scratch, "out.onnx");
        var options = new MergeOptions { Method = MergeMethod.Ties, Density = 0.3 };
        ModelMerger.Merge(new MergeRequest { Inputs = inputs, Base = Fixture("transformer", "default", "base"), Output = output, Options = options });
        var models = inputs.Select(OnnxModel.Open).ToList();
        try
        {
            using var baseModel = OnnxModel.Open(Fixture("transformer", "default", "base"));
            var bytes = ModelMerger.MergeToBytes(Aligner.Align(models, baseModel), options);
            var inMemory = Path.Combine(_scratch, "memory.onnx");
            File.WriteAllBytes(inMemory, bytes);
            using var a = OnnxModel.Open(output);
            using var b = OnnxModel.Open(inMemory);
            Assert.IsNull(Onnx.ModelComparer.Difference(a, b, ignoreMetadata: true));
        }
        finally
        {
            models.ForEach(m => m.Dispose());
        }
    }

    private static TensorReplacement WithNaN(OnnxTensor tensor)
    {
        var values = tensor.ReadFloat32();
        values[3] = float.NaN;
        return new TensorReplacement(OnnxDataType.Float, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
    }

    private string Copy(string file)
    {
        var target = Path.Combine(_scratch, Path.GetFileName(file));
        File.Copy(file, target);
        return target;
    }

    private static string Hash(string file) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(file)));
}
