using System.Runtime.InteropServices;
using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

/// <summary>
/// Properties across implementations: every SIMD path and thread count gives bit-identical elementwise results; the
/// ILGPU kernels agree with the CPU within fp32 rounding and draw identical DARE masks; the DARE draw matches known
/// answers computed by an independent Python implementation and drops the requested fraction.
/// </summary>
[TestClass]
public sealed class KernelConsistencyTests
{
    public static IEnumerable<object[]> Types => TestData.Types.Select(t => new object[] { t });

    private static float[] Run(string kernel, Func<IMergeKernels, float[]> merge)
    {
        float[] result = [];
        KernelCases.Use(kernel, k => result = merge(k));
        return result;
    }

    private static IEnumerable<(string Name, Func<IMergeKernels, float[]> Merge)> ElementwiseMerges(OnnxDataType type)
    {
        const int length = 9001;
        (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(21, 4, length, type);
        TensorSource[] inputs = TestTensor.Sources(models);
        TestTensor[] fishers = models.Select((m, k) => TestTensor.Create(m.Values.Select(v => Math.Abs(v) * (k + 1)).ToArray(), type)).ToArray();
        var dare = new DareMask(3, 99, 0.6);
        yield return ("mean", k => Output(length, o => k.WeightedSum(inputs, [0.25f, 0.25f, 0.25f, 0.25f], null, null, o)));
        yield return ("task arithmetic", k => Output(length, o => k.WeightedSum(inputs, [0.3f, 0.3f, 0.3f, 0.3f], theta0.Source, null, o)));
        yield return ("dare", k => Output(length, o => k.WeightedSum(inputs, [1f, 1f, 1f, 1f], theta0.Source, dare, o)));
        uint threshold = BitConverter.SingleToUInt32Bits(0.015f);
        yield return ("ties", k => Output(length, o => k.Ties(inputs, theta0.Source, [threshold, threshold, 0, threshold], 1.2f, null, o)));
        yield return ("dare-ties", k => Output(length, o => k.Ties(inputs, theta0.Source, [threshold, threshold, 0, threshold], 1.2f, dare, o)));
        yield return ("fisher", k => Output(length, o => k.Fisher(inputs, TestTensor.Sources(fishers), [0.5f, 1f, 2f, 1f], 1e-6f, o)));
    }

    private static float[] Output(int length, Action<float[]> merge)
    {
        var output = new float[length];
        merge(output);
        return output;
    }

    [TestMethod]
    [DynamicData(nameof(Types))]
    public void EverySimdPathAndThreadCountIsBitIdentical(OnnxDataType type)
    {
        foreach ((string name, Func<IMergeKernels, float[]> merge) in ElementwiseMerges(type))
        {
            float[] scalar = Run("cpu-Scalar", merge);
            foreach (string kernel in KernelCases.Names.Where(n => n != KernelCases.Ilgpu))
            {
                float[] other = Run(kernel, merge);
                Assert.IsTrue(MemoryMarshal.AsBytes(scalar.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(other.AsSpan())),
                    $"{name}: {kernel} differs from cpu-Scalar");
            }
        }
    }

    [TestMethod]
    [DynamicData(nameof(Types))]
    public void IlgpuAgreesWithCpuWithinFp32Rounding(OnnxDataType type)
    {
        foreach ((string name, Func<IMergeKernels, float[]> merge) in ElementwiseMerges(type))
        {
            float[] cpu = Run($"cpu-{SimdPaths.Default}", merge);
            float[] gpu = Run(KernelCases.Ilgpu, merge);
            for (int j = 0; j < cpu.Length; j++)
            {
                // A contracted multiply-add on a GPU changes each sum by at most a few ulps of the result's terms.
                float tolerance = 8 * MathF.BitIncrement(Math.Max(Math.Abs(cpu[j]), 1f)) - 8 * Math.Max(Math.Abs(cpu[j]), 1f);
                Assert.IsTrue(Math.Abs(cpu[j] - gpu[j]) <= tolerance, $"{name} [{j}]: cpu {cpu[j]:R} vs ilgpu {gpu[j]:R}");
            }
        }
    }

    [TestMethod]
    public void DareMasksAreIdenticalOnCpuAndIlgpu()
    {
        // base 0, input 1, weight 1, one model: the output is the mask itself (0 or 1/(1−p)).
        const int length = 20000;
        TestTensor zero = TestTensor.Create(new float[length], OnnxDataType.Float);
        TestTensor ones = TestTensor.Create(Enumerable.Repeat(1f, length).ToArray(), OnnxDataType.Float);
        var dare = new DareMask(seed: 1234, tensorId: TensorId.FromKey("h.3.mlp.c_fc.weight"), dropRate: 0.3);
        float[] Mask(string kernel) => Run(kernel, k => Output(length, o => k.WeightedSum([ones.Source], [1f], zero.Source, dare, o)));
        float[] reference = Mask("cpu-Scalar");
        foreach (string kernel in KernelCases.Names)
        {
            CollectionAssert.AreEqual(reference, Mask(kernel), $"{kernel} drew a different mask");
        }

        float kept = 1 / 0.7f;
        for (int j = 0; j < length; j++)
        {
            Assert.AreEqual(ReferenceSplitMix.Keeps(dare.KeyFor(0), j, 0.3) ? kept : 0f, reference[j], $"element {j}");
        }
    }

    [TestMethod]
    public void DareDrawMatchesIndependentKnownAnswers()
    {
        // Computed by a separate Python implementation of FNV-1a, SplitMix64's finaliser and the documented keying.
        ulong id = TensorId.FromKey("encoder.layer.0.weight");
        Assert.AreEqual(0x24deec2f0a6d30e4UL, id);
        var dare = new DareMask(42, id, 0.5);
        string[] expected =
        [
            "1011010110011111010000111101001000100101110001000101001010001001",
            "1001001000101001101101000110110101110010101001011000100010110001",
        ];
        for (int model = 0; model < 2; model++)
        {
            string bits = string.Concat(Enumerable.Range(0, 64).Select(e =>
                DareMask.Keeps(dare.KeyFor(model), e, dare.DropThreshold) ? '1' : '0'));
            Assert.AreEqual(expected[model], bits, $"model {model}");
        }
    }

    [TestMethod]
    public void DareDropsTheRequestedFractionIndependentlyPerModelAndTensor()
    {
        const int draws = 1_000_000;
        foreach (double p in new[] { 0.1, 0.5, 0.9 })
        {
            var a = new DareMask(7, 1, p);
            var b = new DareMask(7, 2, p);
            int droppedA = 0, droppedBoth = 0, droppedOtherModel = 0;
            for (int e = 0; e < draws; e++)
            {
                bool da = !DareMask.Keeps(a.KeyFor(0), e, a.DropThreshold);
                bool db = !DareMask.Keeps(b.KeyFor(0), e, b.DropThreshold);
                bool dm = !DareMask.Keeps(a.KeyFor(1), e, a.DropThreshold);
                droppedA += da ? 1 : 0;
                droppedBoth += da && db ? 1 : 0;
                droppedOtherModel += da && dm ? 1 : 0;
            }

            // Binomial standard deviations; 6σ bounds.
            double sigma = Math.Sqrt(draws * p * (1 - p));
            Assert.AreEqual(p * draws, droppedA, 6 * sigma, $"p={p}: drop count");
            double joint = p * p, jointSigma = Math.Sqrt(draws * joint * (1 - joint));
            Assert.AreEqual(joint * draws, droppedBoth, 6 * jointSigma, $"p={p}: masks of two tensors are correlated");
            Assert.AreEqual(joint * draws, droppedOtherModel, 6 * jointSigma, $"p={p}: masks of two models are correlated");
        }
    }

    [TestMethod]
    public void ReductionsDoNotDependOnThreadCount()
    {
        (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(4, 3, 50_000, OnnxDataType.Float16);
        double[] Gram(int threads)
        {
            using var kernels = new CpuMergeKernels(SimdPaths.Default, threads, chunkElements: 4096);
            var gram = new double[9];
            kernels.Gram(TestTensor.Sources(models), theta0.Source, gram);
            return gram;
        }

        CollectionAssert.AreEqual(Gram(1), Gram(4));
    }

    [TestMethod]
    public void CudaIsAClearErrorWithoutAGpuAndAutoFallsBackToCpu()
    {
        using IlgpuMergeKernels? cuda = IlgpuMergeKernels.TryCreateCuda(1 << 20, out string? reason);
        if (cuda is not null)
        {
            Assert.Inconclusive($"this machine has a CUDA device ({cuda.Name}); the fallback cannot be observed here.");
        }

        RecyclingException error = Assert.ThrowsExactly<RecyclingException>(() => MergeKernels.Create(MergeDevice.Cuda));
        StringAssert.StartsWith(error.Message, "--device cuda: ");
        Assert.IsFalse(string.IsNullOrEmpty(reason));
        using IMergeKernels auto = MergeKernels.Create(MergeDevice.Auto);
        Assert.IsInstanceOfType<CpuMergeKernels>(auto);
    }
}
