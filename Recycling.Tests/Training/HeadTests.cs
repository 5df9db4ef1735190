using System.Security.Cryptography;
using Recycling.Cli;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Probing;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Zoo;
using Recycling.Training;
using Recycling.Training.Ops;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// New heads (a cut at any value, Flatten + Gemm attached), fixed-batch exports made dynamic, and image preprocessing:
/// ONNX Runtime on the written models against an independent TorchSharp computation, PyTorch 1.13's numbers for the
/// resize, nn.Linear's initialisation and a fixed-batch export (scripts/training/make_head_fixtures.py).
/// </summary>
[TestClass]
public sealed class HeadTests
{
    private static readonly Lazy<IReadOnlyDictionary<string, NpyArray>> Reference = new(() => NpyFile.ReadNpz(FixturePath("heads.npz")));

    private static string FixturePath(string file) => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", file);

    private static string ZooModel(string file) => Path.Combine(ZooPaths.ModelsDirectory, file);

    [TestMethod]
    public void HeadAtAnInternalValueRunsInOnnxRuntimeAsFlattenThenLinear()
    {
        using var scratch = new Scratch();
        var source = ZooModel("cnn_aux_rotpred4.onnx");
        var sourceHash = Sha(source);
        const string at = "/pool_1/MaxPool_output_0";
        var images = RandomImages(5, seed: 4);
        using var model = OnnxModel.Open(source);
        float[] cut;
        long features;
        using (var program = OnnxProgram.Load(model))
        using (no_grad())
        {
            var value = program.Forward(new Dictionary<string, Tensor> { ["input"] = images }, new OpContext(), [at])[at];
            features = value.numel() / 5;
            cut = value.reshape(5, features).data<float>().ToArray();
        }

        const int classes = 7;
        var random = new Random(9);
        var weight = Enumerable.Range(0, classes * (int)features).Select(_ => random.NextSingle() - 0.5f).ToArray();
        var bias = Enumerable.Range(0, classes).Select(_ => random.NextSingle()).ToArray();
        var output = Path.Combine(scratch.Path, "headed.onnx");
        HeadAttachment.Write(model, output, new LinearHead(at, classes, (int)features, weight, bias));

        // Reference: the cut value from the original graph, flattened, times Wᵀ plus b, in float64.
        var expected = new float[5 * classes];
        for (var n = 0; n < 5; n++)
        {
            for (var k = 0; k < classes; k++)
            {
                double sum = bias[k];
                for (var j = 0; j < features; j++)
                {
                    sum += (double)cut[n * features + j] * weight[k * features + j];
                }

                expected[n * classes + k] = (float)sum;
            }
        }

        var ort = RunOrt(output, new Dictionary<string, Tensor> { ["input"] = images });
        Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(ort["logits"], expected));
        Assert.IsLessThanOrEqualTo(1e-6, RelativeGap(ort[at], cut));

        using var written = OnnxModel.Open(output);
        var graph = written.Proto.Graph;
        CollectionAssert.AreEqual(new[] { "logits", at }, graph.Output.Select(o => o.Name).ToArray());
        CollectionAssert.AreEqual(new[] { "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm" }, graph.Node.Select(n => n.OpType).ToArray(), "the nodes after the cut are gone");
        var original = model.Proto.Graph;
        foreach (var node in graph.Node.Take(6))
        {
            Assert.IsTrue(original.Node.Contains(node), $"{node.Name} kept as it was");
        }

        CollectionAssert.AreEquivalent(new[] { "onnx::Conv_38", "onnx::Conv_39", "onnx::Conv_41", "onnx::Conv_42", "head.weight", "head.bias" }, graph.Initializer.Select(i => i.Name).ToArray());
        CollectionAssert.AreEqual(new long[] { classes, features }, written.Tensors.Single(t => t.Name == "head.weight").Shape.ToArray());
        Assert.AreEqual(sourceHash, Sha(source), "the input model is not modified");
    }

    [TestMethod]
    public void ReplacingAHeadAtFeaturesKeepsTheParentsGraphForAlign()
    {
        using var scratch = new Scratch();
        var output = Path.Combine(scratch.Path, "ten.onnx");
        using var parent = OnnxModel.Open(ZooModel("cnn_aux_rotpred4.onnx"));
        Assert.AreEqual("features", HeadAttachment.DefaultCut(parent));
        var weight = Enumerable.Range(0, 10 * 64).Select(i => (i % 13) * 0.01f).ToArray();
        HeadAttachment.Write(parent, output, new LinearHead("features", 10, 64, weight, new float[10]));

        using var headed = OnnxModel.Open(output);
        CollectionAssert.AreEqual(new[] { "logits", "features" }, headed.Proto.Graph.Output.Select(o => o.Name).ToArray());
        CollectionAssert.AreEqual(parent.Proto.Graph.Node.Select(n => n.OpType).ToArray(), headed.Proto.Graph.Node.Select(n => n.OpType).ToArray());
        var images = RandomImages(3, seed: 2);
        var ort = RunOrt(output, new Dictionary<string, Tensor> { ["input"] = images });
        Assert.HasCount(30, ort["logits"]);
        Assert.IsLessThanOrEqualTo(1e-6, RelativeGap(ort["features"], RunOrt(parent.Path, new Dictionary<string, Tensor> { ["input"] = images })["features"]));

        // The body aligns with its parent; only the head differs (4 vs 10 classes).
        var plan = Aligner.Align([parent, headed], heads: HeadPolicy.Drop);
        var heads = plan.Parameters.Where(p => p.IsHead).ToList();
        Assert.HasCount(2, heads);
        Assert.HasCount(6, plan.Parameters.Where(p => !p.IsHead && p.IsFloat).ToList());
    }

    [TestMethod]
    public void BadCutsAndHeadsAreOneLineErrors()
    {
        using var scratch = new Scratch();
        using var model = OnnxModel.Open(ZooModel("cnn_aux_rotpred4.onnx"));
        var output = Path.Combine(scratch.Path, "x.onnx");
        void Refused(LinearHead head, string expected)
        {
            var e = Assert.ThrowsExactly<RecyclingException>(() => HeadAttachment.Write(model, output, head));
            StringAssert.Contains(e.Message, expected);
            Assert.DoesNotContain("\n", e.Message);
            Assert.IsFalse(File.Exists(output));
        }

        Refused(new LinearHead("nope", 3, 64, new float[192], new float[3]), "no node computes it");
        Refused(new LinearHead("onnx::Conv_38", 3, 64, new float[192], new float[3]), "initializer");
        Refused(new LinearHead("features", 3, 64, new float[191], new float[3]), "needs 192 weights");
        Refused(new LinearHead("features", 3, 65, new float[195], new float[3]), "64 values per sample");
        Refused(new LinearHead("logits", 3, 4, new float[12], new float[3]), "feeds");
    }

    [TestMethod]
    public void FixedBatchExportRunsWithBatch32()
    {
        using var scratch = new Scratch();
        var output = Path.Combine(scratch.Path, "dynamic.onnx");
        using (var model = OnnxModel.Open(FixturePath("fixed_batch.onnx")))
        {
            Assert.AreEqual(1L, DynamicBatch.FixedBatch(model.Proto.Graph));
            HeadAttachment.Write(model, output, head: null);
        }

        using var written = OnnxModel.Open(output);
        Assert.IsNull(DynamicBatch.FixedBatch(written.Proto.Graph));
        Assert.AreEqual("batch", written.Proto.Graph.Input[0].Type.TensorType.Shape.Dim[0].DimParam);
        Assert.AreEqual("batch", written.Proto.Graph.Output[0].Type.TensorType.Shape.Dim[0].DimParam);
        var feeds = new Dictionary<string, Tensor> { ["input"] = ToTorch(Reference.Value["fixed_input"]) };
        var expected = Reference.Value["fixed_logits"].ToSingleArray();
        Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(RunOrt(output, feeds)["logits"], expected), "ONNX Runtime, batch 32");
        Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(RunTorch(output, feeds)["logits"], expected), "TorchSharp, batch 32");

        // The scorer behind eval/probe runs it batched too, and the fixed-batch original one sample at a time.
        var data = new Dataset("fixed", Reference.Value["fixed_input"].ToSingleArray(), [1, 8, 8], new int[32]);
        foreach (var path in new[] { output, FixturePath("fixed_batch.onnx") })
        {
            using var scorer = OnnxScorer.Open(path, new ScoringOptions { Threads = 1, BatchSize = 16 });
            Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(scorer.Run(data, "logits").Data, expected), path);
        }
    }

    [TestMethod]
    public void FixedBatchExportTrainsWithBatch8()
    {
        using var scratch = new Scratch();
        var prefix = Path.Combine(scratch.Path, "train");
        NpyFile.Write(prefix + "_images.npy", Reference.Value["fixed_input"]);
        NpyFile.Write(prefix + "_labels.npy", NpyArray.From<long>([.. Enumerable.Range(0, 32).Select(i => (long)(i % 3))], 32));
        var output = Path.Combine(scratch.Path, "out.onnx");
        var result = FineTuner.Run(new FineTuneOptions { Model = FixturePath("fixed_batch.onnx"), Train = prefix, Output = output, BatchSize = 8, Epochs = 2 });
        Assert.AreEqual(4, result.Epochs[0].Steps);
        Assert.IsLessThanOrEqualTo(FineTuner.OnnxRuntimeTolerance, result.OnnxRuntimeGap);
        var logits = RunOrt(output, new Dictionary<string, Tensor> { ["input"] = ToTorch(Reference.Value["fixed_input"]) })["logits"];
        Assert.HasCount(96, logits);
    }

    [TestMethod]
    public void RandomInitIsPyTorchsLinearDefault()
    {
        var (weight, bias) = PreparedModel.RandomLinear(12, 5, seed: 7);
        CollectionAssert.AreEqual(Reference.Value["linear_weight"].ToSingleArray(), weight, "torch.manual_seed(7); nn.Linear(12, 5).weight");
        CollectionAssert.AreEqual(Reference.Value["linear_bias"].ToSingleArray(), bias);
    }

    [TestMethod]
    public void ProbeAsALinearMapReproducesItsProbabilities()
    {
        var random = new Random(3);
        const int rows = 300, columns = 6, classes = 4;
        var features = new float[rows * columns];
        var labels = new int[rows];
        for (var i = 0; i < rows; i++)
        {
            labels[i] = i % classes;
            for (var j = 0; j < columns; j++)
            {
                // Offsets and scales far from 0 and 1, so that the normaliser's fold into W and b matters.
                features[i * columns + j] = (float)(5 + 3 * j + (j == labels[i] ? 2.0 : 0.0) + random.NextDouble() * (1 + j));
            }
        }

        var matrix = new FloatMatrix(rows, columns, features);
        foreach (var normalization in new[] { ProbeNormalization.MeanVariance, ProbeNormalization.MinMax, ProbeNormalization.None, ProbeNormalization.SharedScale })
        {
            var probe = LinearProbe.Train(matrix, labels, classes, new ProbeOptions { Normalization = normalization, Threads = 1 });
            var (weight, bias) = probe.ToLinear();
            var expected = probe.Predict(matrix).Data;
            var ours = new float[rows * classes];
            for (var i = 0; i < rows; i++)
            {
                var logits = Enumerable.Range(0, classes).Select(k => bias[k] + Enumerable.Range(0, columns).Sum(j => (double)weight[k * columns + j] * features[i * columns + j])).ToArray();
                var max = logits.Max();
                var total = logits.Sum(l => Math.Exp(l - max));
                for (var k = 0; k < classes; k++)
                {
                    ours[i * classes + k] = (float)(Math.Exp(logits[k] - max) / total);
                }
            }

            Assert.IsLessThanOrEqualTo(1e-5, ours.Zip(expected).Max(p => Math.Abs(p.First - p.Second)), normalization.ToString());
        }
    }

    [TestMethod]
    [DataRow("zeros")]
    [DataRow("random")]
    [DataRow("probe")]
    public void FinetuneWithANewHead(string init)
    {
        using var scratch = new Scratch();
        var data = WriteSplit(scratch.Path, "train", 96, seed: 1);
        var output = Path.Combine(scratch.Path, "out.onnx");
        var result = FineTuner.Run(new FineTuneOptions
        {
            Model = ZooModel("cnn_aux_rotpred4.onnx"),
            Train = data,
            Output = output,
            Head = HeadSpec.Parse("new:10", "features", init),
            MaxSteps = 1,
            BatchSize = 96,
            Shuffle = false,
            Settings = new TrainingSettings { LearningRate = 0.05 },
        });

        // The loss of the first batch is the head's before any step: ln 10 for zeros, lower for a probe fitted on it.
        var firstLoss = result.Epochs[0].TrainLoss;
        switch (init)
        {
            case "zeros":
                Assert.AreEqual(Math.Log(10), firstLoss, 1e-5);
                break;
            case "random":
                Assert.AreNotEqual(Math.Log(10), firstLoss, 1e-3);
                break;
            default:
                Assert.IsLessThan(Math.Log(10) - 0.5, firstLoss, $"a probe fitted on these samples: {firstLoss}");
                break;
        }

        Assert.IsLessThanOrEqualTo(FineTuner.OnnxRuntimeTolerance, result.OnnxRuntimeGap);
        using var written = OnnxModel.Open(output);
        CollectionAssert.AreEqual(new long[] { 10, 64 }, written.Tensors.Single(t => t.Name == "head.weight").Shape.ToArray());
        StringAssert.Contains(written.Metadata["recycling.finetune.settings"], $"\"init\":\"{init}\"");
        Assert.AreEqual(Path.GetFileName(ZooModel("cnn_aux_rotpred4.onnx")), written.Metadata["recycling.finetune.parent"]);
    }

    [TestMethod]
    public void ResizeMatchesTorchInterpolateBilinear()
    {
        foreach (var (name, size) in new[] { ("up", (9, 4)), ("down", (20, 13)), ("zoo", (64, 64)) })
        {
            var input = Reference.Value[$"resize_{name}_input"];
            var shape = input.Shape.Skip(1).Select(d => (int)d).ToArray();
            var pre = new ImagePreprocessing { Height = size.Item1, Width = size.Item2 };
            var outShape = pre.OutputShape(shape, name);
            var ours = new float[outShape.Aggregate(1, (p, d) => p * d)];
            pre.Apply(input.ToSingleArray(), shape, ours);
            var expected = Reference.Value[$"resize_{name}_output"].ToSingleArray();
            Assert.IsLessThanOrEqualTo(1e-6, ours.Zip(expected).Max(p => Math.Abs(p.First - p.Second)), name);
        }
    }

    [TestMethod]
    public void GreyToRgbThenNormalisation()
    {
        var pre = ImagePreprocessing.Parse("2x2", 3, "imagenet")!;
        var data = new Dataset("grey", [0.2f, 0.4f, 0.6f, 0.8f, 1f, 0f, 0f, 1f], [1, 2, 2], [0, 1]);
        var done = pre.Apply(data);
        CollectionAssert.AreEqual(new[] { 3, 2, 2 }, done.SampleShape.ToArray());
        for (var c = 0; c < 3; c++)
        {
            for (var i = 0; i < 4; i++)
            {
                var expected = (data.Values[4 + i] - ImagePreprocessing.ImageNetMean[c]) / ImagePreprocessing.ImageNetStd[c];
                Assert.AreEqual(expected, done.Sample(1)[c * 4 + i], 1e-6);
            }
        }

        Assert.AreEqual("resize=2x2 (bilinear, half-pixel) channels=3 normalize=0.485,0.456,0.406:0.229,0.224,0.225", pre.ToString());
        var e = Assert.ThrowsExactly<RecyclingException>(() => ImagePreprocessing.Parse(null, null, "imagenet")!.Apply(data));
        StringAssert.Contains(e.Message, "--channels 3");
    }

    [TestMethod]
    public void BadHeadAndPreprocessingOptionsEndInOneLine()
    {
        using var scratch = new Scratch();
        var data = WriteSplit(scratch.Path, "train", 8, seed: 2);
        var model = ZooModel("cnn_aux_rotpred4.onnx");
        var output = Path.Combine(scratch.Path, "x.onnx");
        foreach (var (args, expected) in new (string[], string)[]
        {
            (["--head", "new:1"], "new:K"),
            (["--head", "old:3"], "new:K"),
            (["--head", "new:3", "--head-init", "ones"], "--head-init ones"),
            (["--head", "probe", "--head-init", "zeros"], "contradicts"),
            (["--at", "features"], "need --head"),
            (["--head", "new:3", "--at", "missing"], "no node computes it"),
            (["--head", "new:3", "--at", "onnx::Conv_38"], "initializer"),
            (["--resize", "0x5"], "--resize 0x5"),
            (["--resize", "64"], "--resize 64"),
            (["--normalize", "1,2:3"], "--normalize 1,2:3"),
            (["--normalize", "imagenet"], "3 means for 1 channel"),
            (["--head", "new:3"], "labels go up to"),
        })
        {
            var (code, stdout, stderr) = Run(["finetune", model, "-d", data, "-o", output, "--steps", "1", .. args]);
            Assert.AreEqual(RecycleCli.ErrorExitCode, code, string.Join(" ", args) + stdout);
            StringAssert.Contains(stderr, expected, string.Join(" ", args));
            Assert.AreEqual(1, stderr.Trim().Split('\n').Length, stderr);
            Assert.IsFalse(File.Exists(output));
        }
    }

    /// <summary><paramref name="count"/> zoo images of <paramref name="split"/> drawn by <paramref name="seed"/> (28×28 grey, labels 0..9) as a split prefix.</summary>
    internal static string WriteSplit(string folder, string name, int count, int seed, string split = "probe_train")
    {
        var source = DatasetLoader.Load(Path.Combine(ZooPaths.RepositoryRoot, "models", "data", split));
        var random = new Random(seed);
        var picks = Enumerable.Range(0, source.Count).OrderBy(_ => random.Next()).Take(count).ToArray();
        var prefix = Path.Combine(folder, name);
        NpyFile.Write(prefix + "_images.npy", NpyArray.From<float>([.. picks.SelectMany(i => source.Sample(i).ToArray())], [count, .. source.SampleShape.Select(d => (long)d)]));
        NpyFile.Write(prefix + "_labels.npy", NpyArray.From<long>([.. picks.Select(i => (long)source.Labels[i])], count));
        return prefix;
    }

    private static string Sha(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
}
