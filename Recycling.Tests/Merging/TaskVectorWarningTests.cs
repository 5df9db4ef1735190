using System.Globalization;
using System.Text.RegularExpressions;
using Recycling.Cli;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Tests.Zoo;

namespace Recycling.Tests.Merging;

/// <summary>
/// Task-vector merges that move the weights far past every fine-tuning say so: on the zoo's 8 CNN DiWA targets, DARE
/// with its defaults (p 0.9, λ 1) and task arithmetic at λ 1 warn with the lengths, λ = 1/N and TIES do not, and the
/// numbers in the warning are the exact norms of the written model.
/// </summary>
[TestClass]
public sealed partial class TaskVectorWarningTests
{
    private static readonly string[] Targets = [.. Enumerable.Range(0, 8).Select(i => Path.Combine(ZooPaths.ModelsDirectory, $"cnn_target_diwa{i:D2}.onnx"))];
    private static readonly string Base = Path.Combine(ZooPaths.ModelsDirectory, "cnn_base.onnx");

    [TestMethod]
    public void DareDefaultsOverEightZooModelsWarnWithTheExactNorms()
    {
        var output = Path.Combine(Path.GetTempPath(), $"tv-warning-{Guid.NewGuid():N}.onnx");
        try
        {
            var summary = ModelMerger.Merge(new MergeRequest { Inputs = Targets, Base = Base, Output = output, Options = new MergeOptions { Method = MergeMethod.Dare } });
            Assert.HasCount(1, summary.Warnings);
            var match = NormsPattern().Match(summary.Warnings[0]);
            Assert.IsTrue(match.Success, summary.Warnings[0]);
            double merged = double.Parse(match.Groups["merged"].Value, CultureInfo.InvariantCulture);
            double longest = double.Parse(match.Groups["longest"].Value, CultureInfo.InvariantCulture);

            // Independently: every float tensor of the written model and of each input against the base.
            using var baseModel = OnnxModel.Open(Base);
            using var mergedModel = OnnxModel.Open(output);
            double expectedMerged = Math.Sqrt(SquaredDistance(mergedModel, baseModel));
            double expectedLongest = Targets.Max(t =>
            {
                using var model = OnnxModel.Open(t);
                return Math.Sqrt(SquaredDistance(model, baseModel));
            });
            // The warning prints 4 significant digits.
            Assert.AreEqual(expectedMerged, merged, 1e-3 * expectedMerged);
            Assert.AreEqual(expectedLongest, longest, 1e-3 * expectedLongest);
            Assert.IsGreaterThan(TaskVectorNorms.WarningRatio * expectedLongest, expectedMerged);
            StringAssert.Contains(summary.Warnings[0], "lower --lambda, e.g. 1/N = 0.125");
        }
        finally
        {
            File.Delete(output);
        }
    }

    [TestMethod]
    [DataRow("task-arithmetic", "1", true)]
    [DataRow("task-arithmetic", "0.125", false)]
    [DataRow("ties", "1", false)]
    [DataRow("dare", "1", true)]
    [DataRow("average", "1", false)]
    public void MergeCommandWarnsOnStandardErrorOnlyPastTheThreshold(string method, string lambda, bool warns)
    {
        var output = Path.Combine(Path.GetTempPath(), $"tv-cli-{Guid.NewGuid():N}.onnx");
        try
        {
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            string[] args = ["merge", .. Targets, "--base", Base, "--method", method, "--lambda", lambda, "-o", output];
            Assert.AreEqual(0, RecycleCli.Run(args, stdout, stderr), stderr.ToString());
            Assert.AreEqual(warns, stderr.ToString().Contains("warning: the merged task vector is", StringComparison.Ordinal), stderr.ToString());
            Assert.IsTrue(File.Exists(output));
        }
        finally
        {
            File.Delete(output);
        }
    }

    /// <summary>Tensors past the whole-measurement size are sampled: the estimate of a 1M-element task vector stays within 2%.</summary>
    [TestMethod]
    public unsafe void SampledNormsOfLargeTensorsEstimateTheExactOnes()
    {
        const int n = 1 << 20;
        var random = new Random(7);
        float[] baseValues = [.. Enumerable.Range(0, n).Select(_ => (float)random.NextDouble())];
        float[] input = [.. baseValues.Select(v => v + (float)(random.NextDouble() - 0.5))];
        float[] merged = [.. baseValues.Select((v, i) => v + (3 * (input[i] - v)))];
        var norms = new TaskVectorNorms(1);
        fixed (float* b = baseValues, x = input)
        {
            norms.AddChunk([new TensorSource(x, n, OnnxDataType.Float)], new TensorSource(b, n, OnnxDataType.Float), merged, 0, n);
        }

        double exact = Math.Sqrt(input.Select((v, i) => (double)(v - baseValues[i]) * (v - baseValues[i])).Sum());
        Assert.AreEqual(exact, norms.Longest().Norm, 0.02 * exact);
        Assert.AreEqual(3 * exact, norms.MergedNorm, 0.02 * 3 * exact);
        var warning = norms.Warning(new MergeOptions { Method = MergeMethod.TaskArithmetic, Lambda = 3 }, ["x.onnx"]);
        Assert.IsNotNull(warning);
        StringAssert.Contains(warning, "x.onnx");
    }

    private static double SquaredDistance(OnnxModel model, OnnxModel baseModel)
    {
        var baseTensors = baseModel.Tensors.Where(t => t.DataType == OnnxDataType.Float).ToDictionary(t => t.Name);
        double sum = 0;
        foreach (var t in model.Tensors.Where(t => t.DataType == OnnxDataType.Float && baseTensors.ContainsKey(t.Name)))
        {
            var a = t.ReadFloat32();
            var b = baseTensors[t.Name].ReadFloat32();
            for (int i = 0; i < a.Length; i++)
            {
                double d = a[i] - b[i];
                sum += d * d;
            }
        }

        return sum;
    }

    [GeneratedRegex(@"‖θ − θ0‖ = (?<merged>[0-9.eE+]+); largest ‖θᵢ − θ0‖ = (?<longest>[0-9.eE+]+)")]
    private static partial Regex NormsPattern();
}
