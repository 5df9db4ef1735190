using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Onnx.Proto;
using Recycling.Tests.Training;
using Recycling.Training;

namespace Recycling.Tests.MLNet;

/// <summary>
/// Text models scored by <see cref="OnnxScorer"/>: every token input the model declares is fed by name from a CSV
/// tokenised with the model's vocabulary, padded per batch; the scores equal ONNX Runtime runs of each sentence alone,
/// unpadded (an independent feed written here): all-MiniLM-L6-v2 with a head (1e-5 of the largest logit), a model
/// without token_type_ids and one with int32 inputs (1e-6); wrong data name the model or file in one line.
/// </summary>
[TestClass]
public sealed class TextScoringTests
{
    [TestMethod]
    public void MiniLmBatchesEqualSentencesRunAlone()
    {
        using var scratch = new Scratch();
        var model = TextModels.MiniLmWithHead(scratch.Path, 3);
        var data = Tokenised(model, scratch.Path);
        var expected = OneByOne(model, data, "logits", ["input_ids", "attention_mask", "token_type_ids"], int32: false);
        foreach (var batch in new[] { 3, 8 })
        {
            using var scorer = OnnxScorer.Open(model, new ScoringOptions { BatchSize = batch, Threads = 2 });
            Assert.AreEqual("input_ids", scorer.InputName);
            var logits = scorer.Run(data, "logits");
            Assert.AreEqual(data.Count, logits.Rows);
            Assert.AreEqual(3, logits.Columns);
            Assert.IsLessThanOrEqualTo(1e-5, TrainingSupport.RelativeGap(logits.Data, expected), $"batches of {batch}");
        }

        // The pooled sentence embedding, an internal value promoted to an output (what probe and rank read).
        using var features = OnnxScorer.Open(model, new ScoringOptions { BatchSize = 4, Threads = 1 }, ["924"]);
        var pooled = features.Run(data, "924");
        Assert.AreEqual(384, pooled.Columns);
        Assert.IsLessThanOrEqualTo(1e-5, TrainingSupport.RelativeGap(pooled.Data, OneByOne(model, data, "924", ["input_ids", "attention_mask", "token_type_ids"], int32: false)));
    }

    [TestMethod]
    public void ModelsFeedOnlyTheTokenInputsTheyDeclareInTheirType()
    {
        using var scratch = new Scratch();
        var bag = TextModels.BagOfEmbeddings(scratch.Path, 2);
        var data = Tokenised(bag, scratch.Path);
        using (var scorer = OnnxScorer.Open(bag, new ScoringOptions { BatchSize = 3, Threads = 1 }))
        {
            Assert.IsLessThanOrEqualTo(1e-6, TrainingSupport.RelativeGap(scorer.Run(data, "logits").Data, OneByOne(bag, data, "logits", ["input_ids", "attention_mask"], int32: false)));
        }

        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(bag));
        foreach (var input in proto.Graph.Input)
        {
            input.Type.TensorType.ElemType = (int)OnnxDataType.Int32;
        }

        var int32 = Path.Combine(scratch.Path, "bag32.onnx");
        File.WriteAllBytes(int32, proto.ToByteArray());
        using (var scorer = OnnxScorer.Open(int32, new ScoringOptions { BatchSize = 3, Threads = 1 }))
        {
            Assert.IsLessThanOrEqualTo(1e-6, TrainingSupport.RelativeGap(scorer.Run(data, "logits").Data, OneByOne(int32, data, "logits", ["input_ids", "attention_mask"], int32: true)));
        }
    }

    [TestMethod]
    public void WrongDataForTheModelIsOneLine()
    {
        using var scratch = new Scratch();
        var bag = TextModels.BagOfEmbeddings(scratch.Path, 2);
        var images = new Dataset("images.npz", new float[2 * 4 * 4], [1, 4, 4], [0, 1]);
        using (var scorer = OnnxScorer.Open(bag, new ScoringOptions { Threads = 1 }))
        {
            var e = Assert.ThrowsExactly<RecyclingException>(() => scorer.Run(images, "logits"));
            StringAssert.Contains(e.Message, "needs text data");
            StringAssert.Contains(e.Message, "images.npz");
            Assert.DoesNotContain('\n', e.Message);
        }

        var odd = TextModels.BagOfEmbeddings(Directory.CreateDirectory(Path.Combine(scratch.Path, "odd")).FullName, 2, TextModels.Int64Input("position_ids"));
        var refused = Assert.ThrowsExactly<RecyclingException>(() => OnnxScorer.Open(odd, new ScoringOptions { Threads = 1 }));
        StringAssert.Contains(refused.Message, "input 'position_ids'");
        StringAssert.Contains(refused.Message, "bag.onnx");

        var text = Tokenised(bag, scratch.Path);
        using var image = OnnxScorer.Open(Path.Combine(Recycling.Tests.Zoo.ZooPaths.ModelsDirectory, "cnn_base.onnx"), new ScoringOptions { Threads = 1 });
        var wrong = Assert.ThrowsExactly<RecyclingException>(() => image.Run(text, "logits"));
        StringAssert.Contains(wrong.Message, "takes samples of");
    }

    private static Dataset Tokenised(string model, string folder)
    {
        var csv = TextModels.WriteCsv(folder, "sentences.csv", TextModels.Sentences.Select((s, i) => (s.Text, i % 3 == 2 ? 2 : s.Label)));
        using var onnx = OnnxModel.Open(model);
        var data = TrainingData.For(onnx, new TextDataOptions { Vocab = TextModels.Vocabulary, MaxLength = 32 }).Load(csv);
        var lengths = Enumerable.Range(0, data.Count).Select(i => TokenizedText.Length(data, i)).Distinct().Count();
        Assert.IsGreaterThan(3, lengths, "sentences of several lengths, so batches are padded");
        return data;
    }

    /// <summary>Each sample run alone with exactly its own tokens (no padding), fed here without the scorer's code.</summary>
    private static float[] OneByOne(string model, Dataset data, string output, string[] inputs, bool int32)
    {
        var bytes = File.ReadAllBytes(model);
        var proto = ModelProto.Parser.ParseFrom(bytes);
        if (!proto.Graph.Output.Any(o => o.Name == output))
        {
            proto.Graph.Output.Add(new ValueInfoProto { Name = output, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
            bytes = proto.ToByteArray();
        }

        using var session = new InferenceSession(bytes);
        var rows = new Dictionary<string, int> { ["input_ids"] = 0, ["attention_mask"] = 1, ["token_type_ids"] = 2 };
        var width = data.SampleShape[1];
        var result = new List<float>();
        for (var i = 0; i < data.Count; i++)
        {
            var sample = data.Sample(i).ToArray();
            var length = Enumerable.Range(0, width).Last(t => sample[width + t] != 0) + 1;
            var values = inputs.Select(name =>
            {
                var ids = sample.Skip(rows[name] * width).Take(length).Select(v => (long)v).ToArray();
                return int32 ? OrtValue.CreateTensorValueFromMemory(ids.Select(v => (int)v).ToArray(), [1, length]) : OrtValue.CreateTensorValueFromMemory(ids, [1, length]);
            }).ToList();
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, inputs, values, [output]);
            result.AddRange(outputs[0].GetTensorDataAsSpan<float>().ToArray());
            values.ForEach(v => v.Dispose());
        }

        return [.. result];
    }
}
