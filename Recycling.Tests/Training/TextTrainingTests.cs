using Recycling.Onnx;
using Recycling.Onnx.Numpy;
using Recycling.Training;
using Recycling.Training.Ops;
using static TorchSharp.torch;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Training;

/// <summary>
/// Text models from the CLI: all-MiniLM-L6-v2's forward pass on tokenised real sentences (padded batches) equals ONNX
/// Runtime's within 1e-5 relative; `recycle finetune` trains MiniLM with a classification head on its pooled output
/// from a CSV and the cross-entropy that ONNX Runtime measures on the written model goes down; `recycle fisher`
/// runs on it; a model without token_type_ids trains; inputs text cannot feed are named.
/// </summary>
[TestClass]
public sealed class TextTrainingTests
{
    [TestMethod]
    public void MiniLmOnTokenisedSentencesMatchesOnnxRuntime()
    {
        using var scratch = new Scratch();
        var csv = TextModels.WriteCsv(scratch.Path, "s.csv", TextModels.Sentences.Take(4));
        using var model = OnnxModel.Open(TextModels.MiniLm.Model);
        using var program = OnnxProgram.Load(model);
        var data = TrainingData.For(model, new TextDataOptions { Vocab = TextModels.Vocabulary }).Load(csv);
        var feeder = BatchFeeder.For(program, model.Path, data);
        using var batch = feeder.Batch(data, [0, 1, 2, 3]);
        Assert.AreEqual(data.SampleShape[1], batch.Feeds["input_ids"].shape[1], "the batch is as long as its longest sentence");
        Assert.AreEqual(0L, batch.Feeds["attention_mask"].sum().item<long>() % 1, "mask");
        Assert.IsLessThan(4L * batch.Feeds["input_ids"].shape[1], batch.Feeds["attention_mask"].sum().item<long>(), "shorter sentences are padded");
        foreach (var output in new[] { "last_hidden_state", "924" })
        {
            float[] ours;
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                ours = program.Forward(batch.Feeds, new OpContext(), [output])[output].data<float>().ToArray();
            }

            var ort = OnnxRuntimeRun.Output(model.Path, batch.Feeds, output);
            Assert.IsLessThanOrEqualTo(1e-5, TrainingSupport.RelativeGap(ours, ort), output);
        }
    }

    [TestMethod]
    public void FinetuneLowersMiniLmLossFromTheCli()
    {
        using var scratch = new Scratch();
        var model = TextModels.MiniLmWithHead(scratch.Path, 2);
        var csv = TextModels.WriteCsv(scratch.Path, "train.csv", TextModels.Sentences);
        var output = Path.Combine(scratch.Path, "tuned.onnx");
        var before = OrtLoss(model, csv);
        var (code, stdout, stderr) = Run(["finetune", model, "-d", csv, "-o", output, "--optimizer", "adamw", "--lr", "1e-4", "--batch-size", "4", "--epochs", "3",
            "--max-length", "24", "--seed", "1"]);
        Assert.AreEqual(0, code, stderr + stdout);
        StringAssert.Contains(stdout, "ONNX Runtime reproduces the trained outputs on 8 samples");
        var after = OrtLoss(output, csv);
        Assert.IsLessThan(before * 0.8, after, $"cross-entropy {before:F4} -> {after:F4}");

        using var source = OnnxModel.Open(model);
        using var tuned = OnnxModel.Open(output);
        var changed = source.Tensors.Where(t => t.DataType == OnnxDataType.Float && !t.ReadRawBytes().AsSpan().SequenceEqual(tuned.Tensors.Single(u => u.Path == t.Path).ReadRawBytes())).Select(t => t.Name).ToList();
        CollectionAssert.Contains(changed, "head.weight");
        Assert.IsGreaterThan(50, changed.Count, "the transformer trains too");
    }

    [TestMethod]
    public void FisherRunsOnMiniLmFromTheCli()
    {
        using var scratch = new Scratch();
        var model = TextModels.MiniLmWithHead(scratch.Path, 2);
        var csv = TextModels.WriteCsv(scratch.Path, "d.csv", TextModels.Sentences);
        var fisher = Path.Combine(scratch.Path, "f.npz");
        var (code, stdout, stderr) = Run(["fisher", model, "-d", csv, "--samples", "2", "--labels", "true", "-o", fisher, "--max-length", "16"]);
        Assert.AreEqual(0, code, stderr + stdout);
        var arrays = NpyFile.ReadNpz(fisher);
        var head = arrays["head.weight"].ToSingleArray();
        Assert.HasCount(384 * 2, head);
        Assert.IsTrue(head.All(v => v >= 0 && float.IsFinite(v)) && head.Any(v => v > 0));
        Assert.IsGreaterThan(50, arrays.Keys.Count(), "every trainable tensor of the transformer");
    }

    [TestMethod]
    public void ModelWithoutTokenTypesTrainsAndBadInputsAreNamed()
    {
        using var scratch = new Scratch();
        var csv = TextModels.WriteCsv(scratch.Path, "train.csv", TextModels.Sentences);
        var vocab = TextModels.Vocabulary;
        var model = TextModels.BagOfEmbeddings(scratch.Path, 2);
        var output = Path.Combine(scratch.Path, "bag-tuned.onnx");
        var before = OrtLoss(model, csv, vocab);
        var (code, stdout, stderr) = Run(["finetune", model, "-d", csv, "--vocab", vocab, "-o", output, "--optimizer", "adam", "--lr", "0.05", "--batch-size", "4", "--epochs", "5"]);
        Assert.AreEqual(0, code, stderr + stdout);
        Assert.IsLessThan(before, OrtLoss(output, csv, vocab));

        var extra = Path.Combine(scratch.Path, "extra");
        Directory.CreateDirectory(extra);
        foreach (var (input, message) in new[]
        {
            (TextModels.Int64Input("position_ids"), "input 'position_ids' (Int64, shape [-1,-1]) cannot be fed from text data"),
            (TextModels.Input("pixels", 1), "input 'pixels' (Float32"),
        })
        {
            var bad = TextModels.BagOfEmbeddings(extra, 2, input);
            var (badCode, _, badErr) = Run(["finetune", bad, "-d", csv, "--vocab", vocab, "-o", Path.Combine(scratch.Path, "x.onnx")]);
            Assert.AreEqual(1, badCode);
            StringAssert.Contains(badErr, message);
            Assert.AreEqual(1, badErr.Trim().Split('\n').Length, badErr);
        }

        foreach (var args in new[]
        {
            new[] { "finetune", model, "-d", csv, "-o", Path.Combine(scratch.Path, "x.onnx") },
            ["finetune", model, "-d", csv, "--vocab", Path.Combine(scratch.Path, "missing.txt"), "-o", Path.Combine(scratch.Path, "x.onnx")],
            ["finetune", model, "-d", csv, "--vocab", vocab, "--max-length", "1", "-o", Path.Combine(scratch.Path, "x.onnx")],
            ["fisher", model, "-d", Path.Combine(scratch.Path, "missing.csv"), "--vocab", vocab, "-o", Path.Combine(scratch.Path, "x.npz")],
            ["finetune", Path.Combine(Zoo.ZooPaths.ModelsDirectory, "cnn_base.onnx"), "-d", csv, "--vocab", vocab, "-o", Path.Combine(scratch.Path, "x.onnx")],
        })
        {
            var (badCode, _, badErr) = Run(args);
            Assert.AreEqual(1, badCode, string.Join(" ", args));
            Assert.AreEqual(1, badErr.Trim().Split('\n').Length, badErr);
            Assert.IsFalse(File.Exists(Path.Combine(scratch.Path, "x.onnx")) || File.Exists(Path.Combine(scratch.Path, "x.npz")));
        }
    }

    /// <summary>Mean cross-entropy of the model's logits on the labelled text, computed from ONNX Runtime's outputs in float64.</summary>
    private static double OrtLoss(string modelPath, string csv, string? vocab = null)
    {
        using var model = OnnxModel.Open(modelPath);
        using var program = OnnxProgram.Load(model);
        var data = TrainingData.For(model, vocab is null ? null : new TextDataOptions { Vocab = vocab }).Load(csv);
        var feeder = BatchFeeder.For(program, model.Path, data);
        using var batch = feeder.Batch(data, [.. Enumerable.Range(0, data.Count)]);
        var logits = OnnxRuntimeRun.Output(model.Path, batch.Feeds, "logits");
        var classes = logits.Length / data.Count;
        double loss = 0;
        for (var i = 0; i < data.Count; i++)
        {
            var row = logits.AsSpan(i * classes, classes).ToArray().Select(v => (double)v).ToArray();
            var max = row.Max();
            loss += max + Math.Log(row.Sum(v => Math.Exp(v - max))) - row[data.Labels[i]];
        }

        return loss / data.Count;
    }
}
