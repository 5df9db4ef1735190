using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

/// <summary>
/// SLERP, model stock and Fisher merging against fp64 references. Their coefficients come from fp64 reductions of
/// fp32 data, so the tolerance is relative: 1e-5·(Σ|coefficient·input|) per element, which a wrong formula (a lerp
/// instead of a slerp, a per-tensor instead of a global Fisher norm) exceeds by orders of magnitude.
/// </summary>
[TestClass]
public sealed class NonlinearMergeTests
{
    public static IEnumerable<object[]> Cases => KernelCases.NamesAndTypes;

    public static IEnumerable<object[]> Kernels => KernelCases.NamesOnly;

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void SlerpMatchesReference(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            foreach (int length in new[] { 1, 17, 9000 })
            {
                var random = new Random(length);
                TestTensor a = TestTensor.Create(TestData.Normal(random, length, 1), type);
                TestTensor c = TestTensor.Create(TestData.Normal(random, length, 2, 0.3), type);
                foreach (double t in new[] { 0.0, 0.3, 0.5, 1.0 })
                {
                    var output = new float[length];
                    new TensorMerger(new MergeOptions { Method = MergeMethod.Slerp, T = t }, 2, kernels)
                        .Merge(0, [a.Source, c.Source], null, default, output);
                    double[] expected = ReferenceMerges.Slerp(a.Values, c.Values, t);
                    for (int j = 0; j < length; j++)
                    {
                        TestData.AssertClose(expected[j], output[j], 1e-5 * (Math.Abs(a.Values[j]) + Math.Abs(c.Values[j])),
                            $"n={length} t={t} [{j}]");
                    }
                }
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void SlerpOfNearlyParallelTensorsIsALerp(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            float[] a = TestData.Normal(new Random(2), 500, 1);
            float[] c = a.Select(v => 3 * v).ToArray();
            var output = new float[500];
            new TensorMerger(new MergeOptions { Method = MergeMethod.Slerp, T = 0.25 }, 2, kernels).Merge(0,
                [TestTensor.Create(a, OnnxDataType.Float).Source, TestTensor.Create(c, OnnxDataType.Float).Source], null, default, output);
            for (int j = 0; j < 500; j++)
            {
                TestData.AssertClose(0.75 * a[j] + 0.25 * c[j], output[j], 1e-6 * Math.Abs(c[j]), $"[{j}]");
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void ModelStockMatchesReference(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            foreach (int n in new[] { 2, 3, 5 })
            {
                // Correlated task vectors (shared direction + noise) give a cosine well inside (0, 1).
                var random = new Random(n);
                float[] theta0 = TestData.Normal(random, 9000, 0.5);
                float[] shared = TestData.Normal(random, 9000, 0.02);
                TestTensor[] models = Enumerable.Range(0, n).Select(_ => TestTensor.Create(
                    TestData.Normal(random, 9000, 0.02).Select((e, j) => theta0[j] + shared[j] + e).ToArray(), type)).ToArray();
                TestTensor baseTensor = TestTensor.Create(theta0, type);
                var output = new float[9000];
                new TensorMerger(new MergeOptions { Method = MergeMethod.ModelStock }, n, kernels)
                    .Merge(0, TestTensor.Sources(models), baseTensor.Source, default, output);
                double[] expected = ReferenceMerges.ModelStock(models.Select(m => m.Values).ToArray(), baseTensor.Values);
                for (int j = 0; j < output.Length; j++)
                {
                    double scale = Math.Abs(baseTensor.Values[j]) + models.Sum(m => Math.Abs(m.Values[j]));
                    TestData.AssertClose(expected[j], output[j], 1e-5 * scale, $"N={n} [{j}]");
                }
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void ModelStockOfZeroTaskVectorsIsTheBase(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            TestTensor theta0 = TestTensor.Create(TestData.Normal(new Random(4), 300, 1), OnnxDataType.Float);
            var output = new float[300];
            new TensorMerger(new MergeOptions { Method = MergeMethod.ModelStock }, 3, kernels)
                .Merge(0, [theta0.Source, theta0.Source, theta0.Source], theta0.Source, default, output);
            CollectionAssert.AreEqual(theta0.Values, output);
        });
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void FisherMergeUsesWholeModelNormsAndFloor(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            // Two tensors per model; Fisher values span decades and include zeros (floored to 1e-6).
            var random = new Random(8);
            int[] lengths = [1029, 17];
            double[] weights = [1, 2, 1];
            var models = lengths.Select(n => Enumerable.Range(0, 3).Select(_ => TestTensor.Create(TestData.Normal(random, n, 1), type)).ToArray()).ToArray();
            var fishers = lengths.Select((n, t) => Enumerable.Range(0, 3).Select(k => TestTensor.Create(
                Enumerable.Range(0, n).Select(j => j % 7 == 0 ? 0f : (float)Math.Pow(10, random.NextDouble() * 4 - 3) * (k + 1) * (t + 1)).ToArray(),
                type)).ToArray()).ToArray();
            var merger = new TensorMerger(new MergeOptions { Method = MergeMethod.Fisher, Weights = weights }, 3, kernels);
            Assert.IsTrue(merger.NeedsPrepass(0));
            Assert.IsFalse(merger.NeedsPrepass(1));
            for (int t = 1; t >= 0; t--)
            {
                merger.Prepass(0, (ulong)t, TestTensor.Sources(models[t]), null, TestTensor.Sources(fishers[t]));
            }

            merger.CompletePrepass(0);
            double[] norms = Enumerable.Range(0, 3).Select(k => Math.Sqrt(
                fishers.Sum(tensor => tensor[k].Values.Sum(v => (double)v * v)))).ToArray();
            for (int k = 0; k < 3; k++)
            {
                Assert.AreEqual(norms[k], merger.FisherNorms![k], 1e-12 * norms[k], $"norm of model {k}");
            }

            for (int t = 0; t < 2; t++)
            {
                var output = new float[lengths[t]];
                merger.Merge((ulong)t, TestTensor.Sources(models[t]), null, TestTensor.Sources(fishers[t]), output);
                double[] expected = ReferenceMerges.Fisher(models[t].Select(m => m.Values).ToArray(),
                    fishers[t].Select(f => f.Values).ToArray(), weights, norms, 1e-6);
                for (int j = 0; j < output.Length; j++)
                {
                    double scale = models[t].Sum(m => Math.Abs(m.Values[j]));
                    TestData.AssertClose(expected[j], output[j], 1e-5 * scale, $"tensor {t} [{j}]");
                }
            }
        });
    }

    [TestMethod]
    public void OptionsRefuseWhatTheMethodsCannotDo()
    {
        Assert.ThrowsExactly<RecyclingException>(() => new MergeOptions { Method = MergeMethod.Slerp }.Validate(3));
        Assert.ThrowsExactly<RecyclingException>(() => new MergeOptions { Method = MergeMethod.ModelStock }.Validate(1));
        Assert.ThrowsExactly<RecyclingException>(() => new MergeOptions { Method = MergeMethod.Ties, Density = 0 }.Validate(2));
        Assert.ThrowsExactly<RecyclingException>(() => new MergeOptions { Method = MergeMethod.Dare, DropRate = 1 }.Validate(2));
        Assert.ThrowsExactly<RecyclingException>(() => new MergeOptions { Weights = [0, 0] }.Validate(2));
        Assert.ThrowsExactly<RecyclingException>(() => new MergeOptions { Weights = [1, 2, 3] }.Validate(2));
        Assert.ThrowsExactly<RecyclingException>(() => new MergeOptions { Method = MergeMethod.Slerp, Weights = [1, 2] }.Validate(2)); // task arithmetic takes weights now (mergekit), SLERP none
        using var kernels = new CpuMergeKernels();
        var merger = new TensorMerger(new MergeOptions { Method = MergeMethod.TaskArithmetic }, 2, kernels);
        TestTensor x = TestTensor.Create([1f, 2f], OnnxDataType.Float);
        RecyclingException error = Assert.ThrowsExactly<RecyclingException>(
            () => merger.Merge(0, [x.Source, x.Source], null, default, new float[2]));
        StringAssert.Contains(error.Message, "base");
    }
}
