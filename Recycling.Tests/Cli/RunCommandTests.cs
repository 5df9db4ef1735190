using Recycling.Cli;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.Cli;

[TestClass]
public sealed class RunCommandTests
{
    private static readonly string Heads = Path.GetFullPath(Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-heads"));

    [TestMethod]
    public void MergedBodyRunsOnNumpyInputsAndWritesEachOutputAsNpy()
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-run-").FullName;
        try
        {
            var body = Path.Combine(scratch, "body.onnx");
            var quiet = new StringWriter();
            Assert.AreEqual(0, RecycleCli.Run(["merge", Path.Combine(Heads, "ft_a.onnx"), Path.Combine(Heads, "ft_b.onnx"), "--heads", "drop", "-o", body], quiet, quiet), quiet.ToString());
            Assert.AreEqual(0, RecycleCli.Run(["run", body, "--input", "input=" + Path.Combine(Heads, "input.npy"), "-o", Path.Combine(scratch, "out")], quiet, quiet), quiet.ToString());
            var actual = NpyFile.Read(Path.Combine(scratch, "out", "features.npy"));
            var expected = NpyFile.Read(Path.Combine(Heads, "drop_features_ab.npy"));
            CollectionAssert.AreEqual(expected.Shape.ToArray(), actual.Shape.ToArray());
            Assert.IsLessThanOrEqualTo(1e-5, Onnx.OrtTestValues.MaxRelativeError(actual.ToSingleArray(), expected.ToSingleArray()));

            var error = new StringWriter();
            Assert.AreNotEqual(0, RecycleCli.Run(["run", body, "--input", "nope=" + Path.Combine(Heads, "input.npy"), "--out", scratch], new StringWriter(), error));
            StringAssert.Contains(error.ToString(), "has no input 'nope'");
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    /// <summary>A torch export with a fixed batch of 1 runs on 32 samples, one per call, with PyTorch's logits (1e-5).</summary>
    [TestMethod]
    public void FixedBatchExportRunsOnManySamples()
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-run-").FullName;
        try
        {
            var fixtures = Path.Combine(Zoo.ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures");
            var reference = NpyFile.ReadNpz(Path.Combine(fixtures, "heads.npz"));
            var input = Path.Combine(scratch, "x.npy");
            NpyFile.Write(input, reference["fixed_input"]);
            var quiet = new StringWriter();
            Assert.AreEqual(0, RecycleCli.Run(["run", Path.Combine(fixtures, "fixed_batch.onnx"), "--input", input, "-o", Path.Combine(scratch, "out")], quiet, quiet), quiet.ToString());
            var logits = NpyFile.Read(Path.Combine(scratch, "out", "logits.npy"));
            CollectionAssert.AreEqual(new long[] { 32, 3 }, logits.Shape.ToArray());
            Assert.IsLessThanOrEqualTo(1e-5, Onnx.OrtTestValues.MaxRelativeError(logits.ToSingleArray(), reference["fixed_logits"].ToSingleArray()));
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }
}
