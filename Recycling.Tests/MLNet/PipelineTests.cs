using Microsoft.ML;
using Microsoft.ML.Data;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Pipeline;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.MLNet;

[TestClass]
public sealed class PipelineTests
{
    private static readonly string Heads = Path.GetFullPath(Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-heads"));

    public sealed class Row
    {
        [VectorType(16)]
        [ColumnName("input")]
        public float[] Input { get; set; } = [];
    }

    /// <summary>
    /// The pipeline stage merges two real exports and ML.NET applies the result row by row; its logits equal the batched
    /// ONNX Runtime logits of the same merge written to a file by the merge engine, and the stage composes with Append.
    /// </summary>
    [TestMethod]
    public void MergeAndApplyOnnxStageScoresTheMergedModel()
    {
        string[] models = [Path.Combine(Heads, "ft_a.onnx"), Path.Combine(Heads, "ft_c.onnx")];
        var input = NpyFile.Read(Path.Combine(Heads, "input.npy"));
        var values = input.ToSingleArray();
        int rows = (int)input.Shape[0];
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Enumerable.Range(0, rows).Select(r => new Row { Input = values[(r * 16)..((r + 1) * 16)] }));
        var options = new MergeOptions { Method = MergeMethod.Average, Weights = [0.25, 0.75] };
        var pipeline = ml.Transforms.MergeAndApplyOnnx(models, options, "logits", "input")
            .Append(ml.Transforms.CopyColumns("scores", "logits"));
        var scored = pipeline.Fit(data).Transform(data);
        var fromPipeline = scored.GetColumn<float[]>("scores").SelectMany(r => r).ToArray();

        var merged = Path.Combine(Path.GetTempPath(), $"pipeline-merge-{Guid.NewGuid():N}.onnx");
        try
        {
            ModelMerger.Merge(new MergeRequest { Inputs = models, Output = merged, Options = options });
            using var scorer = OnnxScorer.Open(merged, new ScoringOptions { Threads = 1 });
            var expected = scorer.Run(new Dataset("input", values, [16], new int[rows]), "logits").Data;
            Assert.HasCount(expected.Length, fromPipeline);
            for (int i = 0; i < expected.Length; i++)
            {
                Assert.AreEqual(expected[i], fromPipeline[i], 1e-5f * Math.Max(1, Math.Abs(expected[i])));
            }
        }
        finally
        {
            File.Delete(merged);
        }
    }
}
