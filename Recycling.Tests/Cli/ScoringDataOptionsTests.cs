using System.Text.Json;
using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.Onnx.Numpy;
using Recycling.Tests.MLNet;
using Recycling.Tests.Training;
using Recycling.Tests.Zoo;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Cli;

/// <summary>
/// The data options every scoring command shares (finetune's): `eval`, `probe` and `soup` score all-MiniLM-L6-v2 from a
/// CSV of sentences (vocab.txt beside the model), with the accuracy and log-loss of each sentence run alone through
/// ONNX Runtime; `eval`, `interpolate` and `diversity` resize and normalise the zoo's 28×28 images for a torch export
/// with a fixed 8×8 input and a fixed batch of 1, with the log-loss of the preprocessed images run one per call; wrong
/// combinations of model, data and options end in one line and exit 1.
/// </summary>
[TestClass]
public sealed class ScoringDataOptionsTests
{
    private static string Fixture(string file) => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", file);

    [TestMethod]
    public void TextModelsAreScoredFromCsvByEveryCommand()
    {
        using var scratch = new Scratch();
        var model = TextModels.MiniLmWithHead(scratch.Path, 3);
        var data = TextScoringTests.Tokenised(model, scratch.Path);
        var csv = Path.Combine(scratch.Path, "sentences.csv");
        var logits = new FloatMatrix(data.Count, 3, TextScoringTests.OneByOne(model, data, "logits", ["input_ids", "attention_mask", "token_type_ids"], int32: false));
        var expected = ClassificationMetrics.FromLogits(logits, data);

        var eval = Json(["eval", model, "-d", csv, "--max-length", "32", "--batch-size", "3", "--json"]);
        Assert.AreEqual(8, eval[0].GetProperty("samples").GetInt32());
        Assert.AreEqual(expected.Accuracy, eval[0].GetProperty("accuracy").GetDouble(), 1e-12);
        Assert.AreEqual(expected.LogLoss, eval[0].GetProperty("logLoss").GetDouble(), 1e-5);

        // 8 sentences, 384 pooled features: the probe separates its training set.
        var probe = Json(["probe", model, "-d", csv, "--test", csv, "--features", "924", "--max-length", "32", "--normalize", "none", "--json"]);
        Assert.AreEqual(100.0, probe[0].GetProperty("train").GetProperty("accuracy").GetDouble(), "percent");
        var shared = Json(["probe", model, "-d", csv, "--features", "924", "--max-length", "32", "--normalize", "shared-scale", "--json"]);
        Assert.AreEqual(100.0, shared[0].GetProperty("train").GetProperty("accuracy").GetDouble(), "--normalize shared-scale is the probe's, not an image normalisation");

        // A soup of one model twice is the model (merged in memory, scored from the same CSV).
        var soup = Json(["soup", model, model, "-d", csv, "--mode", "uniform", "--max-length", "32", "--json"]);
        Assert.AreEqual(expected.Accuracy, soup.GetProperty("results")[0].GetProperty("accuracy").GetDouble(), 1e-12, soup.ToString());
    }

    [TestMethod]
    public void ImageOptionsPreprocessForEveryCommand()
    {
        using var scratch = new Scratch();
        var prefix = Split(scratch.Path, 12);
        var model = Fixture("fixed_batch.onnx");
        var preprocessed = ImagePreprocessing.Parse("8x8", null, "0.5:0.25")!.Apply(DatasetLoader.Load(prefix));
        var expected = ClassificationMetrics.FromLogits(new FloatMatrix(12, 3, FixedBatchScoringTests.PerSample(model, preprocessed, "logits")), preprocessed);

        var eval = Json(["eval", model, "-d", prefix, "--resize", "8x8", "--normalize", "0.5:0.25", "--batch-size", "5", "--json"]);
        Assert.AreEqual(expected.LogLoss, eval[0].GetProperty("logLoss").GetDouble(), 1e-6 * Math.Max(1, expected.LogLoss));
        Assert.AreEqual(expected.Accuracy, eval[0].GetProperty("accuracy").GetDouble(), 1e-12);

        var interpolate = Json(["interpolate", model, model, "-d", prefix, "--points", "3", "--resize", "8x8", "--normalize", "0.5:0.25", "--json"]);
        Assert.AreEqual(expected.Accuracy, interpolate.GetProperty("points")[1].GetProperty("accuracy").GetDouble(), 1e-12, interpolate.ToString());

        var (code, stdout, stderr) = Run(["diversity", model, model, "-d", prefix, "--resize", "8x8", "--json"]);
        Assert.AreEqual(0, code, stderr + stdout);
    }

    [TestMethod]
    public void WrongCombinationsAreOneLine()
    {
        using var scratch = new Scratch();
        var prefix = Split(scratch.Path, 4);
        var text = TextModels.BagOfEmbeddings(scratch.Path, 2);
        File.Copy(TextModels.Vocabulary, Path.Combine(scratch.Path, "vocab.txt"));
        var csv = TextModels.WriteCsv(scratch.Path, "s.csv", TextModels.Sentences);
        var cnn = Path.Combine(ZooPaths.ModelsDirectory, "cnn_base.onnx");
        foreach (var (args, expected) in new (string[], string)[]
        {
            (["eval", text, "-d", prefix], "text data must be .csv"),
            (["eval", text, "-d", csv, "--resize", "8x8"], "a text model"),
            (["eval", cnn, "-d", prefix, "--vocab", TextModels.Vocabulary], "takes no token ids"),
            (["eval", cnn, "-d", csv], "data row 1"),
            (["eval", Fixture("fixed_batch.onnx"), "-d", prefix], "--resize"),
            (["probe", cnn, "-d", prefix, "--normalize", "none", "--normalize", "imagenet"], "3 means for 1 channel"),
            (["probe", cnn, "-d", prefix, "--normalize", "bogus"], "--normalize bogus"),
            (["rank", cnn, "-d", prefix, "--test", prefix, "--channels", "0"], "--channels 0"),
            (["eval", text, "-d", csv, "--label-column", "grade"], "no label column 'grade'"),
        })
        {
            var (code, stdout, stderr) = Run(args);
            Assert.AreEqual(1, code, $"{string.Join(" ", args)}: {stdout}{stderr}");
            StringAssert.Contains(stderr, expected, string.Join(" ", args));
            Assert.AreEqual(1, stderr.TrimEnd().Split('\n').Length, stderr);
        }
    }

    private static JsonElement Json(string[] args)
    {
        var (code, stdout, stderr) = Run(args);
        Assert.AreEqual(0, code, $"{string.Join(" ", args)}: {stderr}{stdout}");
        return JsonDocument.Parse(stdout).RootElement.Clone();
    }

    /// <summary>The zoo's first validation images, labels taken modulo 3 (the fixed-batch fixture has 3 classes).</summary>
    private static string Split(string folder, int count)
    {
        var source = DatasetLoader.Load(Path.Combine(ZooPaths.RepositoryRoot, "models", "data", "val"));
        var prefix = Path.Combine(folder, "val");
        NpyFile.Write(prefix + "_images.npy", NpyArray.From<float>(source.Values[..(count * source.SampleSize)], [count, .. source.SampleShape.Select(d => (long)d)]));
        NpyFile.Write(prefix + "_labels.npy", NpyArray.From<long>([.. source.Labels.Take(count).Select(l => (long)(l % 3))], count));
        return prefix;
    }
}
