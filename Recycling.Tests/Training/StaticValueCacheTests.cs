using Recycling.Onnx;
using Recycling.Tests.Zoo;
using Recycling.Training;
using Recycling.Training.Ops;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// The program computes constant and Shape-derived values once per input shape (the ViT export's Shape → Gather →
/// Concat → Reshape chains): calls with changing batch sizes, each in its own dispose scope as a training step runs,
/// still equal ONNX Runtime (1e-5 relative) and, exactly, the same program with caching off (a call that replaces an
/// initializer caches nothing); a training step in between changes the weights but not what was cached.
/// </summary>
[TestClass]
public sealed class StaticValueCacheTests
{
    [TestMethod]
    public void CachedShapeChainsFollowTheBatchSize()
    {
        var path = Path.Combine(ZooPaths.ModelsDirectory, "vit_base.onnx");
        using var model = OnnxModel.Open(path);
        using var program = OnnxProgram.Load(model);
        using var trainer = new Trainer(program, "logits", new TrainingSettings { LearningRate = 0.1 });
        var seed = 0;
        var cachedBefore = new List<int>();

        // Untrained, the program is the file: ONNX Runtime is the reference at every batch size.
        foreach (var batch in new[] { 2, 5, 2, 1 })
        {
            using var input = RandomImages(batch, ++seed);
            var feeds = new Dictionary<string, Tensor> { ["input"] = input };
            cachedBefore.Add(program.CachedResults);
            var (cached, uncached) = Logits(program, feeds);
            Assert.HasCount(batch * 10, cached);
            CollectionAssert.AreEqual(uncached, cached, $"batch {batch}: cached and uncached runs");
            Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(cached, RunOrt(path, feeds)["logits"]), $"batch {batch} against ONNX Runtime");
        }

        // Nothing cached before the first call; a new batch size adds entries, a size seen before does not.
        Assert.AreEqual(0, cachedBefore[0]);
        Assert.IsGreaterThan(cachedBefore[1], cachedBefore[2], "batch 5 after batch 2");
        Assert.AreEqual(cachedBefore[2], cachedBefore[3], "batch 2 again");

        // Training steps change the weights; the cached values must not hold any of them.
        foreach (var batch in new[] { 3, 5, 3 })
        {
            using var input = RandomImages(batch, ++seed);
            using var labels = zeros(batch, ScalarType.Int64);
            using (var step = new Batch(new Dictionary<string, Tensor> { ["input"] = input.clone() }, labels.clone()))
            {
                trainer.Step(step);
            }

            var (cached, uncached) = Logits(program, new Dictionary<string, Tensor> { ["input"] = input });
            CollectionAssert.AreEqual(uncached, cached, $"batch {batch} after a step: cached and uncached runs");
        }
    }

    private static (float[] Cached, float[] Uncached) Logits(OnnxProgram program, Dictionary<string, Tensor> feeds)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var cached = program.Forward(feeds, new OpContext(), ["logits"])["logits"].data<float>().ToArray();
        var replaced = new Dictionary<string, Tensor> { ["cls_token"] = program.Parameters["cls_token"] };
        return (cached, program.Forward(feeds, new OpContext(), ["logits"], replaced)["logits"].data<float>().ToArray());
    }
}
