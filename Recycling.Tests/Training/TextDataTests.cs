using System.Text.Json;
using Recycling.Onnx;
using Recycling.Tests.Zoo;
using Recycling.Training;

namespace Recycling.Tests.Training;

/// <summary>
/// Tokenisation and text data files: Microsoft.ML.Tokenizers' BERT tokenisation with MiniLM's vocabulary gives the ids
/// of an independent Python basic+WordPiece tokenizer (scripts/training/bert_tokenize.py) on real and awkward
/// sentences, pairs truncated longest-first; CSV (quoted), TSV and JSONL read the same samples; bad files fail in one
/// message naming the file.
/// </summary>
[TestClass]
public sealed class TextDataTests
{
    private static string Fixture => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", "minilm_tokens.json");

    [TestMethod]
    public void IdsEqualTheReferenceTokenizer()
    {
        using var cases = JsonDocument.Parse(File.ReadAllText(Fixture));
        var long512 = TextTokenizer.Load(TextModels.Vocabulary, null, 512);
        Assert.IsTrue(long512.Uncased, "MiniLM's vocabulary is uncased");
        var checkedCases = 0;
        foreach (var c in cases.RootElement.EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            var expected = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            if (c.TryGetProperty("pair", out var pair))
            {
                var tokenizer = TextTokenizer.Load(TextModels.Vocabulary, null, c.GetProperty("max_length").GetInt32());
                var (ids, types) = tokenizer.Encode(text, pair.GetString());
                CollectionAssert.AreEqual(expected, ids, $"{text} | {pair}");
                CollectionAssert.AreEqual(c.GetProperty("types").EnumerateArray().Select(e => e.GetInt32()).ToArray(), types);
            }
            else
            {
                var (ids, types) = long512.Encode(text, null);
                CollectionAssert.AreEqual(expected, ids, $"'{text}': [{string.Join(",", ids)}]");
                Assert.IsTrue(types.All(t => t == 0));
            }

            checkedCases++;
        }

        Assert.AreEqual(21, checkedCases);
    }

    [TestMethod]
    public void LongTextsAreCutToMaxLength()
    {
        var tokenizer = TextTokenizer.Load(TextModels.Vocabulary, null, 8);
        var (ids, _) = tokenizer.Encode(string.Join(' ', Enumerable.Repeat("word", 50)), null);
        Assert.HasCount(8, ids);
        Assert.AreEqual(101, ids[0]);
        Assert.AreEqual(102, ids[^1]);
    }

    [TestMethod]
    public void CsvTsvAndJsonlGiveTheSameSamples()
    {
        var folder = Directory.CreateTempSubdirectory("recycling-text-").FullName;
        try
        {
            string[] texts = ["Hello, world", "He said \"no\".", "two\nlines", "plain"];
            string[] pairs = ["a", "b, c", "d", "e"];
            File.WriteAllText(Path.Combine(folder, "d.csv"), "label,sentence1,sentence2\r\n" + string.Concat(texts.Select((t, i) => $"{i % 2},\"{t.Replace("\"", "\"\"", StringComparison.Ordinal)}\",\"{pairs[i]}\"\r\n")));
            File.WriteAllText(Path.Combine(folder, "d.jsonl"), string.Concat(texts.Select((t, i) => JsonSerializer.Serialize(new { sentence1 = t, sentence2 = pairs[i], label = i % 2 }) + "\n")));
            File.WriteAllText(Path.Combine(folder, "d.tsv"), "sentence1\tsentence2\tlabel\n" + string.Concat(texts.Select((t, i) => $"{t.Replace("\n", " ", StringComparison.Ordinal)}\t{pairs[i]}\t{i % 2}\n")));
            var tokenizer = TextTokenizer.Load(TextModels.Vocabulary, null, 32);
            var csv = TextDataset.Load(Path.Combine(folder, "d.csv"), tokenizer, new TextDataOptions());
            var jsonl = TextDataset.Load(Path.Combine(folder, "d.jsonl"), tokenizer, new TextDataOptions());
            var tsv = TextDataset.Load(Path.Combine(folder, "d.tsv"), tokenizer, new TextDataOptions());
            CollectionAssert.AreEqual(csv.Values, jsonl.Values);
            CollectionAssert.AreEqual(csv.Values, tsv.Values, "a line break is a space to BERT");
            CollectionAssert.AreEqual(new[] { 0, 1, 0, 1 }, csv.Labels);
            var width = csv.SampleShape[1];
            for (var i = 0; i < texts.Length; i++)
            {
                var (ids, types) = tokenizer.Encode(texts[i], pairs[i]);
                var sample = csv.Sample(i);
                CollectionAssert.AreEqual(ids.Select(v => (float)v).ToArray(), sample[..ids.Length].ToArray());
                Assert.IsTrue(sample[ids.Length..width].ToArray().All(v => v == 0), "padding");
                Assert.AreEqual(ids.Length, sample[width..(2 * width)].ToArray().Count(v => v == 1), "mask");
                CollectionAssert.AreEqual(types.Select(v => (float)v).ToArray(), sample[(2 * width)..((2 * width) + ids.Length)].ToArray());
            }

            var single = TextDataset.Load(Path.Combine(folder, "d.csv"), tokenizer, new TextDataOptions { TextColumn = "sentence2", PairColumn = null });
            Assert.AreEqual(4, single.Count);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    [DataRow("bad.csv", "text,label\n\"open,1\n", "never closed")]
    [DataRow("bad.csv", "text,label\nhello,one\n", "label 'one' is not a class index")]
    [DataRow("bad.csv", "text,label\nhello,-1\n", "not a class index")]
    [DataRow("bad.csv", "text,label\nhello,1,2\n", "data row 1 has 3 fields, the header 2")]
    [DataRow("bad.csv", "words,label\nhello,1\n", "no text column 'text' or 'sentence' or 'sentence1' (columns: words, label)")]
    [DataRow("bad.csv", "", "empty")]
    [DataRow("bad.csv", "text,label\n", "no data rows")]
    [DataRow("bad.jsonl", "{\"text\": \"a\", \"label\": 0}\n[1, 2]\n", "line 2 is not a JSON object")]
    [DataRow("bad.jsonl", "{\"text\": 5, \"label\": 0}\n", "'text' is number, not a string")]
    [DataRow("bad.jsonl", "{\"text\": \"a\", \"label\": 0.5}\n", "'label' is 0.5, not a class index")]
    [DataRow("bad.jsonl", "{\"text\": \"a\"}\n", "no label column 'label'")]
    [DataRow("bad.npz", "x", "text data must be")]
    public void BadTextFilesFailNamingTheFile(string name, string content, string message)
    {
        var folder = Directory.CreateTempSubdirectory("recycling-text bad ").FullName;
        try
        {
            var path = Path.Combine(folder, name);
            File.WriteAllText(path, content);
            var tokenizer = TextTokenizer.Load(TextModels.Vocabulary, null, 16);
            var e = Assert.ThrowsExactly<RecyclingException>(() => TextDataset.Load(path, tokenizer, new TextDataOptions()));
            StringAssert.Contains(e.Message, message);
            StringAssert.StartsWith(e.Message, MessageText.Path(path));
            Assert.DoesNotContain('\n', e.Message);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void VocabularyProblemsAreNamed()
    {
        var folder = Directory.CreateTempSubdirectory("recycling-vocab-").FullName;
        try
        {
            var path = Path.Combine(folder, "vocab.txt");
            File.WriteAllLines(path, ["[PAD]", "hello", "world"]);
            StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => TextTokenizer.Load(path, null, 16)).Message, "no [CLS] line");
            StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => TextTokenizer.Load(TextModels.Vocabulary, null, 2)).Message, "--max-length 2");
            File.WriteAllLines(path, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello"]);
            Assert.IsFalse(TextTokenizer.Load(path, null, 16).Uncased, "a vocabulary with upper-case tokens is cased");
            Assert.AreEqual(5, TextTokenizer.Load(path, null, 16).Encode("Hello", null).Ids[1]);
            Assert.AreEqual(6, TextTokenizer.Load(path, true, 16).Encode("Hello", null).Ids[1]);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
