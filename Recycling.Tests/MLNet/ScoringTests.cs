using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.MLNet;

[TestClass]
[DoNotParallelize]
public sealed class ScoringTests
{
    private static readonly string Fixtures = Path.GetFullPath(Path.Combine(global::Recycling.Tests.Fixtures.Root));

    private static Dataset FixtureInputs()
    {
        var input = NpyFile.Read(Path.Combine(Fixtures, "torch-merge", "cnn", "input.npy"));
        return new Dataset("input.npy", input.ToSingleArray(), [3, 16, 16], new int[input.Shape[0]]);
    }

    /// <summary>Batches of 3 over 4 samples (a partial last batch) reproduce the logits PyTorch stored.</summary>
    [TestMethod]
    public void BatchedScoresMatchTorchLogits()
    {
        var expected = NpyFile.Read(Path.Combine(Fixtures, "torch-merge", "cnn", "logits_ft1.npy")).ToSingleArray();
        using var scorer = OnnxScorer.Open(Path.Combine(Fixtures, "torch-merge", "cnn", "default", "ft1.onnx"), new ScoringOptions { BatchSize = 3, Threads = 1 });
        var logits = scorer.Run(FixtureInputs(), "logits");
        Assert.AreEqual(4, logits.Rows);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.AreEqual(expected[i], logits.Data[i], 1e-4f, $"logit {i}");
        }
    }

    /// <summary>Batches of 1 on 3 threads run concurrently, each filling its own rows: the same logits, row for row, as one
    /// thread, and as PyTorch stored.</summary>
    [TestMethod]
    public void ConcurrentBatchesFillTheirOwnRows()
    {
        var expected = NpyFile.Read(Path.Combine(Fixtures, "torch-merge", "cnn", "logits_ft1.npy")).ToSingleArray();
        var model = Path.Combine(Fixtures, "torch-merge", "cnn", "default", "ft1.onnx");
        using var serial = OnnxScorer.Open(model, new ScoringOptions { BatchSize = 1, Threads = 1 });
        using var concurrent = OnnxScorer.Open(model, new ScoringOptions { BatchSize = 1, Threads = 3 });
        var one = serial.Run(FixtureInputs(), "logits");
        for (int run = 0; run < 20; run++)
        {
            var many = concurrent.Run(FixtureInputs(), "logits");
            CollectionAssert.AreEqual(one.Data, many.Data, $"run {run}");
        }

        for (int i = 0; i < expected.Length; i++)
        {
            Assert.AreEqual(expected[i], one.Data[i], 1e-4f, $"logit {i}");
        }
    }

    /// <summary>
    /// Asking for auto where CUDA cannot start (this machine, or the CPU-only runtime the tests load) gives one notice line
    /// and the CPU results, and asking for CUDA itself is then an error; where CUDA works, results agree with the CPU's.
    /// </summary>
    [TestMethod]
    public void AutoFallsBackToCpuWithOneNoticeWhereCudaIsRefused()
    {
        OnnxScorer.ResetCudaState();
        var notices = new List<string>();
        var model = Path.Combine(Fixtures, "torch-merge", "cnn", "default", "ft1.onnx");
        using var cpu = OnnxScorer.Open(model, new ScoringOptions { Threads = 1 });
        var expected = cpu.Run(FixtureInputs(), "logits");
        using var cuda = OnnxScorer.Open(model, new ScoringOptions { Device = ExecutionDevice.Auto, Notice = notices.Add });
        using var again = OnnxScorer.Open(model, new ScoringOptions { Device = ExecutionDevice.Auto, Notice = notices.Add });
        var actual = cuda.Run(FixtureInputs(), "logits");
        if (!cuda.UsesCuda)
        {
            Assert.HasCount(1, notices, "one notice per process, however many sessions ask");
            StringAssert.StartsWith(notices[0], "notice: CUDA is not usable here");
            Assert.DoesNotContain('\n', notices[0]);
            Assert.IsNotNull(OnnxScorer.CudaFailure);
            var strict = Assert.ThrowsExactly<RecyclingException>(() => OnnxScorer.Open(model, new ScoringOptions { Device = ExecutionDevice.Cuda, Notice = notices.Add }));
            StringAssert.StartsWith(strict.Message, "--device cuda: CUDA is not usable here");
            Assert.HasCount(1, notices);
            CollectionAssert.AreEqual(expected.Data, actual.Data, "the fallback is the CPU provider itself");
        }
        else
        {
            Assert.IsEmpty(notices);
            for (int i = 0; i < expected.Data.Length; i++)
            {
                Assert.AreEqual(expected.Data[i], actual.Data[i], 1e-3f);
            }
        }
    }

    /// <summary>An internal value (the input of the head) promoted to an output gives the penultimate features of the export that has them as an output.</summary>
    [TestMethod]
    public void InternalValuesCanBePromotedToOutputs()
    {
        var heads = Path.Combine(Fixtures, "torch-heads");
        var input = NpyFile.Read(Path.Combine(heads, "input.npy"));
        var shape = input.Shape.Skip(1).Select(d => (int)d).ToArray();
        var data = new Dataset("input", input.ToSingleArray(), shape, new int[input.Shape[0]]);
        using var model = OnnxModel.Open(Path.Combine(heads, "ft_a_logits_only.onnx"));
        var gemm = model.Proto.Graph.Node.Last(n => n.OpType is "Gemm" or "MatMul");
        var penultimate = gemm.Input[0];
        using var scorer = OnnxScorer.Open(model.Path, new ScoringOptions { Threads = 1 }, [penultimate]);
        CollectionAssert.Contains(scorer.OutputNames.ToList(), penultimate);
        var features = scorer.Run(data, penultimate);
        using var full = OnnxScorer.Open(Path.Combine(heads, "ft_a.onnx"), new ScoringOptions { Threads = 1 });
        var expected = full.Run(data, "features").Data;
        Assert.AreEqual(expected.Length, features.Data.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.AreEqual(expected[i], features.Data[i], 1e-5f * Math.Max(1, Math.Abs(expected[i])), "the same export with a features output gives the same values");
        }

        var e = Assert.ThrowsExactly<RecyclingException>(() => OnnxScorer.Open(model.Path, null, ["no_such_value"]));
        StringAssert.Contains(e.Message, "no value named 'no_such_value'");
    }

    [TestMethod]
    public void WrongSampleShapeNamesModelAndData()
    {
        using var scorer = OnnxScorer.Open(Path.Combine(Fixtures, "torch-merge", "cnn", "default", "ft1.onnx"));
        var data = new Dataset("tiny.csv", new float[20], [5], new int[4]);
        var e = Assert.ThrowsExactly<RecyclingException>(() => scorer.Run(data, "logits"));
        StringAssert.Contains(e.Message, "tiny.csv");
        StringAssert.Contains(e.Message, "ft1.onnx");
    }
}
