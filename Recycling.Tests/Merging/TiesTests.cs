using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

/// <summary>
/// TIES (and DARE-TIES): the sampled-guess histogram threshold equals a full sort's k-th value, globally and per tensor,
/// whether the sample guessed its bin right or not, and the merge equals the scalar reference. Tolerance per element: (N+3)·2⁻²³·(|θ0| + λ·Σ|kept τ|/count) +
/// 2⁻²³·|expected| (fp32 sums of at most N kept entries, then θ0 + λ·mean).
/// </summary>
[TestClass]
public sealed class TiesTests
{
    private const double Ulp = 1.0 / (1 << 23);

    public static IEnumerable<object[]> Cases => KernelCases.NamesAndTypes;

    public static IEnumerable<object[]> Kernels => KernelCases.NamesOnly;

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void GlobalTrimOverSeveralTensorsMatchesFullSortReference(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            // Three tensors of one model, of different sizes and task-vector scales, so the global threshold
            // trims them very differently from a per-tensor one.
            int[] lengths = [17, 9000, 1029];
            double[] scales = [0.1, 0.01, 0.03];
            var tensors = lengths.Select((n, i) => TestData.FineTunings(300 + i, 3, n, type, scales[i])).ToArray();
            var options = new MergeOptions { Method = MergeMethod.Ties, Density = 0.2, Lambda = 1.3 };
            var merger = new TensorMerger(options, 3, kernels);
            for (int pass = 0; merger.NeedsPrepass(pass); pass++)
            {
                // Reverse order in the odd passes: counting must not depend on tensor order.
                foreach (int t in pass % 2 == 0 ? [0, 1, 2] : new[] { 2, 1, 0 })
                {
                    merger.Prepass(pass, (ulong)t, TestTensor.Sources(tensors[t].Models), tensors[t].Base.Source, default);
                }

                merger.CompletePrepass(pass);
            }

            float[] expectedThresholds = Enumerable.Range(0, 3).Select(k => ReferenceMerges.SortThreshold(
                tensors.SelectMany(t => t.Models[k].Values.Select((x, j) => x - t.Base.Values[j])), 0.2)).ToArray();
            CollectionAssert.AreEqual(expectedThresholds, merger.GlobalThresholds!.ToArray());

            for (int t = 0; t < tensors.Length; t++)
            {
                var output = new float[lengths[t]];
                merger.Merge((ulong)t, TestTensor.Sources(tensors[t].Models), tensors[t].Base.Source, default, output);
                double[] expected = ReferenceMerges.Ties(tensors[t].Models.Select(m => m.Values).ToArray(),
                    tensors[t].Base.Values, expectedThresholds, 1.3);
                AssertTiesClose(expected, output, tensors[t].Base, tensors[t].Models.Length, 1.3, scales[t]);
            }
        });
    }

    [TestMethod]
    public void ConcurrentPrepassesGiveTheSameThresholds()
    {
        var tensors = Enumerable.Range(0, 12).Select(i => TestData.FineTunings(500 + i, 3, 700 + 300 * i, OnnxDataType.BFloat16)).ToArray();
        float[] Thresholds(bool parallel)
        {
            using var kernels = new CpuMergeKernels(SimdPaths.Default, threads: 2, chunkElements: 1024);
            var merger = new TensorMerger(new MergeOptions { Method = MergeMethod.Ties, Density = 0.1 }, 3, kernels);
            for (int pass = 0; merger.NeedsPrepass(pass); pass++)
            {
                void Count(int t) => merger.Prepass(pass, (ulong)t, TestTensor.Sources(tensors[t].Models), tensors[t].Base.Source, default);
                if (parallel)
                {
                    Parallel.For(0, tensors.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, Count);
                }
                else
                {
                    for (int t = 0; t < tensors.Length; t++)
                    {
                        Count(t);
                    }
                }

                merger.CompletePrepass(pass);
            }

            return merger.GlobalThresholds!.ToArray();
        }

        float[] expected = Enumerable.Range(0, 3).Select(k => ReferenceMerges.SortThreshold(
            tensors.SelectMany(t => t.Models[k].Values.Select((x, j) => x - t.Base.Values[j])), 0.1)).ToArray();
        CollectionAssert.AreEqual(expected, Thresholds(parallel: false));
        CollectionAssert.AreEqual(expected, Thresholds(parallel: true));
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void PerTensorTrimMatchesFullSortReference(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            foreach (int length in TestData.Lengths)
            {
                (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(length + 1, 4, length, type);
                var options = new MergeOptions { Method = MergeMethod.Ties, Density = 0.35, Lambda = 0.9, TrimScope = TiesTrimScope.PerTensor };
                var merger = new TensorMerger(options, 4, kernels);
                Assert.IsFalse(merger.NeedsPrepass(0));
                var output = new float[length];
                merger.Merge(1, TestTensor.Sources(models), theta0.Source, default, output);
                // mergekit's rule: exactly ⌊0.35·M⌋ entries kept per task vector, Σ w·mask divisor, a zero sign sum elects +.
                float[] expected = ReferenceMerges.Gta(models.Select(m => m.Values).ToArray(), theta0.Values, [0.35, 0.35, 0.35, 0.35], [1, 1, 1, 1], 0.9, consensus: true, normalize: true);
                AssertTiesClose([.. expected.Select(v => (double)v)], output, theta0, 4, 0.9, 0.02);
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void DareTiesMatchesReference(string kernel, OnnxDataType type)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(77, 3, 9000, type);
            ulong id = TensorId.FromKey("decoder.fc2.weight");
            var dare = new DareMask(9, id, 0.5);
            var options = new MergeOptions
            {
                Method = MergeMethod.Dare, DareCombination = DareCombination.Ties, DropRate = 0.5, Seed = 9,
                Density = 0.3, Lambda = 1.1,
            };
            var merger = new TensorMerger(options, 3, kernels);
            for (int pass = 0; merger.NeedsPrepass(pass); pass++)
            {
                merger.Prepass(pass, id, TestTensor.Sources(models), theta0.Source, default);
                merger.CompletePrepass(pass);
            }

            var output = new float[9000];
            merger.Merge(id, TestTensor.Sources(models), theta0.Source, default, output);
            // DARE-TIES as mergekit and PEFT do it: the random drop (here rescaled by 1/(1−p)), then sign election,
            // no magnitude trim (the old extra trim at Density is gone; Density is ignored by DARE).
            Assert.IsFalse(merger.NeedsPrepass(0));
            float[] expected = ReferenceMerges.Gta(models.Select(m => m.Values).ToArray(), theta0.Values, null, [1, 1, 1], 1.1, consensus: true, normalize: true, dare);
            AssertTiesClose([.. expected.Select(v => (double)v)], output, theta0, 3, 1.1, 0.04);
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void ThresholdTiesAreAllKeptAndDensityOneKeepsEverything(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            // Quantised task vectors: many entries share each magnitude, zeros included.
            var random = new Random(5);
            float[] b = new float[3001];
            float[] x = b.Select(_ => (float)(random.Next(-4, 5) * 0.25)).ToArray();
            TestTensor theta0 = TestTensor.Create(b, OnnxDataType.Float), model = TestTensor.Create(x, OnnxDataType.Float);
            foreach (double density in new[] { 1.0, 0.5, 0.2, 0.01, 1e-9 })
            {
                var threshold = new MagnitudeThreshold(density);
                threshold.AddSample(model.Source, theta0.Source, null, 0, 3); // all of so small a tensor
                threshold.CompleteSample();
                int passes = CountUntilComplete(kernels, threshold, model, theta0);
                float expected = ReferenceMerges.SortThreshold(x, density);
                Assert.AreEqual(expected, BitConverter.UInt32BitsToSingle(threshold.ThresholdBits), $"density {density}");
                Assert.AreEqual(density == 1 ? 0 : 1, passes, $"density {density}: a full sample of discrete magnitudes finds the window");
                int kept = x.Count(v => Math.Abs(v) >= expected);
                Assert.IsTrue(kept >= x.Length - (long)Math.Floor(x.Length * (1 - density)) + 1 || density == 1,
                    $"density {density}: kept {kept}");
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void ThresholdIsExactWhetherTheEstimatesWindowHoldsItOrNot(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            // Task vectors of three scales, so the threshold's neighbouring bins are all populated.
            var random = new Random(21);
            const int length = 6000;
            float[] b = TestData.Normal(random, length, 0.5);
            float[] x = b.Select((v, j) => v + (float)(random.NextDouble() - 0.5) * (j % 3 + 1) * 0.01f).ToArray();
            TestTensor theta0 = TestTensor.Create(b, OnnxDataType.Float), model = TestTensor.Create(x, OnnxDataType.Float);
            float expected = ReferenceMerges.SortThreshold(x.Select((v, j) => v - b[j]), 0.2);
            uint expectedBits = BitConverter.SingleToUInt32Bits(expected);
            var passesSeen = new HashSet<int>();
            // The sample is taken from a stand-in tensor whose task vector is one value everywhere, so the estimate lands
            // where we choose: on the threshold, 1% above (inside the window), 20% above and far below (outside).
            foreach (float value in new[] { expected, expected * 1.01f, expected * 1.2f, 1e-6f })
            {
                var threshold = new MagnitudeThreshold(0.2);
                TestTensor standIn = TestTensor.Create(b.Select(v => v + value).ToArray(), OnnxDataType.Float);
                threshold.AddSample(standIn.Source, theta0.Source, null, 0, 1);
                threshold.CompleteSample();
                bool holds = expectedBits - (ulong)threshold.WindowStart < MagnitudeThreshold.FineBins;
                int passes = CountUntilComplete(kernels, threshold, model, theta0);
                Assert.AreEqual(holds ? 1 : 3, passes, $"estimate {value}, threshold {expected}");
                Assert.AreEqual(expected, BitConverter.UInt32BitsToSingle(threshold.ThresholdBits), $"estimate {value}");
                passesSeen.Add(passes);
            }

            CollectionAssert.AreEquivalent(new[] { 1, 3 }, passesSeen.ToArray());
        });
    }

    /// <summary>Runs <paramref name="threshold"/>'s counting passes over one tensor; returns how many it took.</summary>
    private static int CountUntilComplete(IMergeKernels kernels, MagnitudeThreshold threshold, TestTensor model, TestTensor theta0)
    {
        int passes = 0;
        while (!threshold.IsComplete)
        {
            long start = threshold.WindowStart;
            long[][] coarse = [threshold.CountsCoarse ? new long[MagnitudeThreshold.CoarseBins] : []];
            long[][] fine = [start == MagnitudeThreshold.NoWindow ? [] : new long[MagnitudeThreshold.FineBins]];
            long[] below = [0];
            kernels.CountMagnitudes([model.Source], theta0.Source, null, [start], coarse, fine, below);
            threshold.Add(coarse[0], below[0], fine[0]);
            threshold.CompletePass();
            passes++;
        }

        return passes;
    }

    [TestMethod]
    public void SampleWeighsEachTensorBySizeAndEstimatesWithinTwoBins()
    {
        // A big tensor of small task vectors and a small one of 100× larger ones: the sample reads 1/64 of the first and
        // a quarter of the second, so unless each read entry is weighted by the stretch it stands for, the sampled
        // 80th percentile lands among the large entries, hundreds of bins away.
        int[] lengths = [3 * MagnitudeThreshold.SampleStride + 5, 4 * MagnitudeThreshold.SampleBlock, 17];
        double[] scales = [0.01, 1, 0.01];
        foreach (int seed in new[] { 900, 901, 902, 903 })
        {
            var tensors = lengths.Select((n, i) => TestData.FineTunings(seed + (10 * i), 1, n, OnnxDataType.Float, scales[i])).ToArray();
            var threshold = new MagnitudeThreshold(0.2);
            for (int t = 0; t < tensors.Length; t++)
            {
                threshold.AddSample(tensors[t].Models[0].Source, tensors[t].Base.Source, null, 0, (ulong)t);
                long size = lengths.Take(t + 1).Sum();
                Assert.AreEqual(size, threshold.SampledWeight, 1e-6 * size, "the weights add up to the tensors' sizes");
            }

            threshold.CompleteSample();
            float expected = ReferenceMerges.SortThreshold(
                tensors.SelectMany(t => t.Models[0].Values.Select((x, j) => x - t.Base.Values[j])), 0.2);
            long estimate = threshold.WindowStart + (MagnitudeThreshold.FineBins / 2);
            Assert.IsTrue(Math.Abs(estimate - BitConverter.SingleToUInt32Bits(expected)) <= 2 * MagnitudeThreshold.FineBins,
                $"seed {seed}: estimated {BitConverter.UInt32BitsToSingle((uint)estimate)}, true {expected}");
        }
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void GlobalTrimIsExactOnTensorsLargerThanTheSampleStride(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            var tensors = new[] { (Length: MagnitudeThreshold.SampleStride + 999, Scale: 0.01), (Length: 3000, Scale: 0.05) }
                .Select((t, i) => TestData.FineTunings(950 + i, 2, t.Length, OnnxDataType.BFloat16, t.Scale)).ToArray();
            var merger = new TensorMerger(new MergeOptions { Method = MergeMethod.Ties, Density = 0.2 }, 2, kernels);
            for (int pass = 0; merger.NeedsPrepass(pass); pass++)
            {
                for (int t = 0; t < tensors.Length; t++)
                {
                    merger.Prepass(pass, (ulong)t, TestTensor.Sources(tensors[t].Models), tensors[t].Base.Source, default);
                }

                merger.CompletePrepass(pass);
            }

            float[] expected = Enumerable.Range(0, 2).Select(k => ReferenceMerges.SortThreshold(
                tensors.SelectMany(t => t.Models[k].Values.Select((x, j) => x - t.Base.Values[j])), 0.2)).ToArray();
            CollectionAssert.AreEqual(expected, merger.GlobalThresholds!.ToArray());
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void ExactCancellationTakesTheTensorsMajoritySign(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            foreach (int majority in new[] { 1, -1 })
            {
                // Elements 0..9 cancel exactly (+0.5 vs −0.5, plus a −0.25 in model 3 that keeps the sum at −0.25 for odd
                // elements); the other elements all elect `majority`.
                const int length = 40;
                float[] b = new float[length];
                float[][] x = [new float[length], new float[length], new float[length]];
                for (int j = 0; j < length; j++)
                {
                    if (j < 10)
                    {
                        (x[0][j], x[1][j], x[2][j]) = (0.5f, -0.5f, 0f);
                    }
                    else
                    {
                        (x[0][j], x[1][j], x[2][j]) = (majority * 1f, majority * 2f, -majority * 0.5f);
                    }
                }

                TestTensor[] models = x.Select(v => TestTensor.Create(v, OnnxDataType.Float)).ToArray();
                var output = new float[length];
                kernels.Ties(TestTensor.Sources(models), TestTensor.Create(b, OnnxDataType.Float).Source, [0u, 0u, 0u], 1f, null, output);
                for (int j = 0; j < 10; j++)
                {
                    Assert.AreEqual(majority * 0.5f, output[j], $"tie element {j}, majority {majority}");
                }

                for (int j = 10; j < length; j++)
                {
                    Assert.AreEqual(majority * 1.5f, output[j], $"element {j}, majority {majority}");
                }
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void AllZeroTaskVectorsGiveTheBaseAndNaNPoisonsOnlyItsElement(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (TestTensor theta0, _) = TestData.FineTunings(1, 1, 100, OnnxDataType.Float);
            TestTensor[] same = [theta0, theta0];
            var output = new float[100];
            var merger = new TensorMerger(new MergeOptions { Method = MergeMethod.Ties, TrimScope = TiesTrimScope.PerTensor }, 2, kernels);
            merger.Merge(0, TestTensor.Sources(same), theta0.Source, default, output);
            CollectionAssert.AreEqual(theta0.Values, output);

            float[] poisoned = theta0.Values.ToArray();
            poisoned[3] = float.NaN;
            TestTensor[] models = [TestTensor.Create(poisoned, OnnxDataType.Float), theta0];
            merger.Merge(0, TestTensor.Sources(models), theta0.Source, default, output);
            for (int j = 0; j < 100; j++)
            {
                Assert.AreEqual(j == 3, float.IsNaN(output[j]), $"element {j}");
            }
        });
    }

    [TestMethod]
    [DynamicData(nameof(Kernels))]
    public void ZeroLengthTensorsMergeToNothing(string kernel)
    {
        KernelCases.Use(kernel, kernels =>
        {
            (TestTensor theta0, TestTensor[] models) = TestData.FineTunings(1, 2, 0, OnnxDataType.Float);
            foreach (MergeMethod method in Enum.GetValues<MergeMethod>())
            {
                var options = new MergeOptions { Method = method, TrimScope = TiesTrimScope.PerTensor };
                var merger = new TensorMerger(options, 2, kernels);
                TensorSource[] fishers = method == MergeMethod.Fisher ? TestTensor.Sources(models) : [];
                if (method == MergeMethod.Fisher)
                {
                    merger.Prepass(0, 0, TestTensor.Sources(models), null, fishers);
                    Assert.ThrowsExactly<RecyclingException>(() => merger.CompletePrepass(0), "an all-zero Fisher is refused");
                    continue;
                }

                merger.Merge(0, TestTensor.Sources(models), theta0.Source, fishers, Span<float>.Empty);
            }
        });
    }

    private static void AssertTiesClose(double[] expected, float[] output, TestTensor theta0, int n, double lambda, double tauScale)
    {
        for (int j = 0; j < output.Length; j++)
        {
            double scale = Math.Abs(theta0.Values[j]) + lambda * 10 * tauScale * n;
            TestData.AssertClose(expected[j], output[j], (n + 3) * Ulp * scale + Ulp * Math.Abs(expected[j]), $"[{j}] of {output.Length}");
        }
    }
}
