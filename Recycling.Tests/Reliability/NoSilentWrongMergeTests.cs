using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.Reliability;

/// <summary>
/// Merges that used to succeed with a wrong model: values beyond fp16/bf16 stored as infinity, weights whose sum
/// overflows, tensors named twice (ONNX Runtime reads one copy, the merge took the other), Fisher arrays of a
/// transposed shape. Each now ends in one error line naming the file, or gives the right model.
/// </summary>
[TestClass]
public sealed class NoSilentWrongMergeTests
{
    private string _folder = null!;

    [TestInitialize]
    public void CreateFolder() => _folder = Directory.CreateTempSubdirectory("recycling-wrong-merge-").FullName;

    [TestCleanup]
    public void RemoveFolder() => Directory.Delete(_folder, recursive: true);

    [TestMethod]
    [DataRow("fp16", 70000f, "fp16 range")]
    [DataRow("bf16", 3.4e38f, "bf16 range")]
    public void NarrowingOverflowIsAnErrorUnlessAllowed(string dtype, float big, string range)
    {
        var a = new TinyModel { Weight = [big, 1, 2, 3] }.Write(Path.Combine(_folder, "a.onnx"));
        var b = new TinyModel { Weight = [big, -big, 2, 5] }.Write(Path.Combine(_folder, "b.onnx"));
        var output = Path.Combine(_folder, "merged.onnx");

        CliOutcome.Fails(["merge", a, b, "-o", output, "--dtype", dtype], a, $"1 merged values exceed the {range}");
        Assert.IsFalse(File.Exists(output), "nothing written");

        var stdout = CliOutcome.Succeeds("merge", a, b, "-o", output, "--dtype", dtype, "--allow-overflow");
        StringAssert.Contains(stdout, $"note: 1 merged values exceeded the {range}");
        StringAssert.Contains(stdout, "were stored as infinity");
        using var merged = OnnxModel.Open(output);
        var w = merged.Tensors.Single(t => t.Name.StartsWith('w')).ReadFloat32(); // w.float16 or w.bfloat16
        Assert.AreEqual(float.PositiveInfinity, w[0]);
        Assert.AreEqual(-big / 2, w[1], Math.Abs(big) * 1e-2f, "in range: rounded, not infinity");
        Assert.AreEqual(4f, w[3]);
    }

    [TestMethod]
    public void ValuesJustBelowTheFp16MaximumAreNotAnOverflow()
    {
        // 65519 rounds to 65504 (the largest half); 65520 would round to infinity.
        var a = new TinyModel { Weight = [65519f, -65519f, 0, 0] }.Write(Path.Combine(_folder, "a.onnx"));
        var output = Path.Combine(_folder, "merged.onnx");
        CliOutcome.Succeeds("merge", a, a, "-o", output, "--dtype", "fp16");
        using var merged = OnnxModel.Open(output);
        CollectionAssert.AreEqual(new[] { 65504f, -65504f, 0f, 0f }, merged.Tensors.Single(t => t.Name.StartsWith('w')).ReadFloat32());
    }

    [TestMethod]
    [DataRow("1e308", "1e308", 0.5)]
    [DataRow("1e-320", "3e-320", 0.25)]
    [DataRow("1.7976931348623157e308", "0", 1.0)]
    public void HugeAndTinyWeightsAreNormalisedWithoutOverflow(string wa, string wb, double share)
    {
        var a = new TinyModel { Weight = [1, 2, 3, 4] }.Write(Path.Combine(_folder, "a.onnx"));
        var b = new TinyModel { Weight = [3, 6, 9, 12] }.Write(Path.Combine(_folder, "b.onnx"));
        var output = Path.Combine(_folder, "merged.onnx");
        CliOutcome.Succeeds("merge", a, b, "-o", output, "--weights", wa, wb);
        using var merged = OnnxModel.Open(output);
        var w = merged.Tensors.Single(t => t.Name == "w").ReadFloat32();
        for (var i = 0; i < 4; i++)
        {
            var expected = (share * (i + 1)) + ((1 - share) * 3 * (i + 1));
            Assert.AreEqual(expected, w[i], 1e-5, $"element {i}");
        }
    }

    [TestMethod]
    [DataRow("0", "0", "all zero")]
    [DataRow("-1", "1", "sum to zero")] // negative weights are allowed (mergekit): -1 2 extrapolates
    [DataRow("NaN", "1", "not NaN")]
    [DataRow("Infinity", "1", "not Infinity")]
    public void WeightsThatCannotBeNormalisedAreRefused(string wa, string wb, string problem)
    {
        var a = new TinyModel().Write(Path.Combine(_folder, "a.onnx"));
        var (code, _, stderr, _) = RecycleProcess.Run(["merge", a, a, "-o", Path.Combine(_folder, "m.onnx"), "--weights", wa, wb]);
        Assert.AreEqual(1, code, stderr);
        Assert.AreEqual(1, stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length, stderr);
        StringAssert.Contains(stderr, "weights");
        StringAssert.Contains(stderr, problem);
    }

    [TestMethod]
    public void DuplicateInitializerNamesAreInvalidOnnx()
    {
        var good = new TinyModel().Write(Path.Combine(_folder, "good.onnx"));
        var twice = new TinyModel { DuplicateInitializer = true }.Write(Path.Combine(_folder, "twice.onnx"));
        CliOutcome.Fails(["merge", good, twice, "-o", Path.Combine(_folder, "m.onnx")], twice, "initializer name 'w' appears twice");
        CliOutcome.Fails(["inspect", twice], twice, "invalid ONNX");
        Assert.IsFalse(File.Exists(Path.Combine(_folder, "m.onnx")));
    }

    [TestMethod]
    public void DuplicateGraphInputNamesAreInvalidOnnx()
    {
        var good = new TinyModel().Write(Path.Combine(_folder, "good.onnx"));
        var twice = new TinyModel { DuplicateInput = true }.Write(Path.Combine(_folder, "twice.onnx"));
        CliOutcome.Fails(["merge", twice, good, "-o", Path.Combine(_folder, "m.onnx")], twice, "graph input name 'x' appears twice");
    }

    [TestMethod]
    public void AnIr3InitializerListedAsAGraphInputIsLegalAndMerges()
    {
        var a = new TinyModel { Ir3 = true, Weight = [1, 2, 3, 4] }.Write(Path.Combine(_folder, "a.onnx"));
        var b = new TinyModel { Ir3 = true, Weight = [3, 4, 5, 6] }.Write(Path.Combine(_folder, "b.onnx"));
        var output = Path.Combine(_folder, "merged.onnx");
        CliOutcome.Succeeds("merge", a, b, "-o", output);
        using var merged = OnnxModel.Open(output);
        CollectionAssert.AreEqual(new[] { 2f, 3f, 4f, 5f }, merged.Tensors.Single(t => t.Name == "w").ReadFloat32());
    }

    [TestMethod]
    public void AFisherArrayOfTheTransposedShapeIsRefused()
    {
        var a = new TinyModel { Weight = [1, 2, 3, 4, 5, 6], Shape = [2, 3] }.Write(Path.Combine(_folder, "a.onnx"));
        var b = new TinyModel { Weight = [3, 4, 5, 6, 7, 8], Shape = [2, 3] }.Write(Path.Combine(_folder, "b.onnx"));
        var right = TinyModel.WriteNpz(Path.Combine(_folder, "right.npz"), new Dictionary<string, NpyArray> { ["w"] = NpyArray.From<float>([1, 1, 1, 1, 1, 1], 2, 3) });
        var transposed = TinyModel.WriteNpz(Path.Combine(_folder, "transposed.npz"), new Dictionary<string, NpyArray> { ["w"] = NpyArray.From<float>([1, 1, 1, 1, 1, 1], 3, 2) });
        var output = Path.Combine(_folder, "merged.onnx");

        CliOutcome.Fails(["merge", a, b, "-o", output, "--method", "fisher", "--fisher", right, transposed], transposed, "has shape [3,2], the weight has shape [2,3]");
        Assert.IsFalse(File.Exists(output));

        CliOutcome.Succeeds("merge", a, b, "-o", output, "--method", "fisher", "--fisher", right, right);
        using var merged = OnnxModel.Open(output);
        var w = merged.Tensors.Single(t => t.Name == "w").ReadFloat32();
        for (var i = 0; i < 6; i++)
        {
            Assert.AreEqual(i + 2f, w[i], 1e-6f, "equal Fisher: the mean (fp32 rounding)");
        }
    }
}
