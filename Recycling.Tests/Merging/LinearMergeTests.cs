using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

/// <summary>
/// Average, weighted average, task arithmetic and DARE against fp64 references, on every kernel implementation and
/// input dtype. Tolerance per element: (N+3)·2⁻²³·(|θ0| + Σ|wᵢ|·|τᵢ|) (or Σ|wᵢxᵢ| without a base) — a bound on
/// N+3 sequential fp32 roundings — plus 2⁻²³·|expected|.
/// </summary>
[TestClass]
public sealed class LinearMergeTests
{
    private const double Ulp = 1.0 / (1 << 23);

    public static IEnumerable<object[]> Cases => KernelCases.NamesAndTypes;

    private static void Merge(IMergeKernels kernels, MergeOptions options, TestTensor? theta0, TestTensor[] models,
        Span<float> output, ulong tensorId = 7)
    {
        var merger = new TensorMerger(options, models.Length, kernels);
        Assert.IsFalse(merger.NeedsPrepass(0));
        merger.Merge(tensorId, TestTensor.Sources(models), theta0?.Source, default, output);
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void WeightedAverageMatchesReferenceForEveryLength(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            foreach (int length in TestData.Lengths)
            {
                (_, TestTensor[] models) = TestData.FineTunings(length, 3, length, type);
                double[] weights = [0.5, 2, 1.25];
                var output = new float[length];
                Merge(kernels, new MergeOptions { Weights = weights }, null, models, output);

                double[] normalised = weights.Select(w => w / weights.Sum()).ToArray();
                double[] expected = ReferenceMerges.WeightedSum(models.Select(m => m.Values).ToArray(), normalised);
                for (int j = 0; j < length; j++)
                {
                    double scale = models.Select((m, k) => Math.Abs(normalised[k] * m.Values[j])).Sum();
                    TestData.AssertClose(expected[j], output[j], 6 * Ulp * scale + Ulp * Math.Abs(expected[j]), $"n={length} [{j}]");
                }
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void UniformAverageOfEightMatchesReference(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (_, TestTensor[] models) = TestData.FineTunings(11, 8, 5000, type);
            var output = new float[5000];
            Merge(kernels, new MergeOptions(), null, models, output);
            double[] expected = ReferenceMerges.WeightedSum(models.Select(m => m.Values).ToArray(), Enumerable.Repeat(1 / 8.0, 8).ToArray());
            for (int j = 0; j < output.Length; j++)
            {
                double scale = models.Sum(m => Math.Abs(m.Values[j])) / 8;
                TestData.AssertClose(expected[j], output[j], 11 * Ulp * scale, $"[{j}]");
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void TaskArithmeticMatchesReference(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            foreach (int length in TestData.Lengths)
            {
                (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(100 + length, 4, length, type);
                var output = new float[length];
                Merge(kernels, new MergeOptions { Method = MergeMethod.TaskArithmetic, Lambda = 0.7 }, theta0, models, output);
                double[] expected = ReferenceMerges.DeltaSum(models.Select(m => m.Values).ToArray(), theta0.Values, [0.7, 0.7, 0.7, 0.7]);
                AssertDeltaClose(expected, output, theta0, models, 0.7, null);
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void DareOverEachCombinationMatchesReference(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            const int length = 9000;
            (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(5, 3, length, type);
            var dare = new DareMask(seed: 42, tensorId: TensorId.FromKey("encoder.layer.0.weight"), dropRate: 0.7);
            var output = new float[length];

            Merge(kernels, new MergeOptions { Method = MergeMethod.Dare, DropRate = 0.7, Seed = 42, Lambda = 0.5 },
                theta0, models, output, dare.TensorId);
            double[] expected = ReferenceMerges.DeltaSum(models.Select(m => m.Values).ToArray(), theta0.Values, [0.5, 0.5, 0.5], dare);
            AssertDeltaClose(expected, output, theta0, models, 0.5 / 0.3, dare);

            double[] weights = [1, 3, 4];
            Merge(kernels, new MergeOptions
            {
                Method = MergeMethod.Dare, DareCombination = DareCombination.Average, DropRate = 0.7, Seed = 42, Weights = weights,
            }, theta0, models, output, dare.TensorId);
            expected = ReferenceMerges.DeltaSum(models.Select(m => m.Values).ToArray(), theta0.Values, [1 / 8.0, 3 / 8.0, 4 / 8.0], dare);
            AssertDeltaClose(expected, output, theta0, models, 1 / 0.3, dare);
        });
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void SingleModelAverageReturnsItExactly(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (_, TestTensor[] models) = TestData.FineTunings(3, 1, 1029, type);
            var output = new float[1029];
            Merge(kernels, new MergeOptions(), null, models, output);
            CollectionAssert.AreEqual(models[0].Values, output);
        });
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void NaNInAnInputPropagatesOnlyToItsElement(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(9, 2, 40, type);
            float[] poisoned = models[1].Values.ToArray();
            poisoned[17] = float.NaN;
            models[1] = TestTensor.Create(poisoned, type);
            var output = new float[40];
            Merge(kernels, new MergeOptions { Method = MergeMethod.TaskArithmetic }, theta0, models, output);
            for (int j = 0; j < 40; j++)
            {
                Assert.AreEqual(j == 17, float.IsNaN(output[j]), $"element {j}");
            }
        });
    }

    private static void AssertDeltaClose(double[] expected, float[] output, TestTensor theta0, TestTensor[] models,
        double weight, DareMask? dare)
    {
        int n = models.Length;
        for (int j = 0; j < output.Length; j++)
        {
            double scale = Math.Abs(theta0.Values[j])
                + models.Sum(m => Math.Abs(weight * ((double)m.Values[j] - theta0.Values[j])));
            TestData.AssertClose(expected[j], output[j], (n + 3) * Ulp * scale + Ulp * Math.Abs(expected[j]),
                $"n={output.Length} [{j}]{(dare is null ? "" : " dare")}");
        }
    }
}
