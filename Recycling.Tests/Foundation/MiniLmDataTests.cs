using System.Diagnostics;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Recycling.Onnx;
using Recycling.Training;
using Recycling.Tests.Training;
using Recycling.Tests.Zoo;

namespace Recycling.Tests.Foundation;

/// <summary>
/// The WordNet text tasks shipped for the MiniLM zoo (models/foundation/minilm): every file matches tasks.json, loads
/// through the toolkit's text loader (gzip-compressed TSV), carries the labels WordNet's own data files give its
/// synsets (read independently here, by byte offset), and the splits do not leak: held-out synsets (val, ood_test)
/// follow the documented hash rule and occur in no training file, and no text is in two of them; the committed
/// generator rebuilds the same files.
/// </summary>
[TestClass]
public sealed class MiniLmDataTests
{
    private const string WordNet = "/usr/share/wordnet";

    private static string Folder => Path.Combine(ZooPaths.ModelsDirectory, "foundation", "minilm");

    private static readonly string[] Evaluation = ["val", "ood_test"];

    [TestMethod]
    public void ShippedFilesMatchTheManifestAndLoad()
    {
        var manifest = Manifest();
        var tasks = manifest.GetProperty("tasks").EnumerateObject().ToList();
        CollectionAssert.IsSubsetOf(new[] { "probe_train", "val", "ood_test" }, tasks.Select(t => t.Name).ToList());
        Assert.IsGreaterThanOrEqualTo(6, tasks.Count(t => t.Name.StartsWith("aux_", StringComparison.Ordinal)), "auxiliary tasks");
        var tokenizer = TextTokenizer.Load(TextModels.Vocabulary, null, 64);
        long packed = 0;
        foreach (var task in tasks)
        {
            var file = Path.Combine(Folder, task.Value.GetProperty("file").GetString()!);
            packed += new FileInfo(file).Length;
            Assert.AreEqual(task.Value.GetProperty("sha256_tsv").GetString(), Convert.ToHexStringLower(SHA256.HashData(Inflate(file))), task.Name);
            var rows = Rows(file);
            var classes = task.Value.GetProperty("classes").GetArrayLength();
            Assert.HasCount(task.Value.GetProperty("rows").GetInt32(), rows, task.Name);
            var counts = task.Value.GetProperty("class_counts").EnumerateArray().Select(c => c.GetInt32()).ToArray();
            CollectionAssert.AreEqual(counts, Enumerable.Range(0, classes).Select(c => rows.Count(r => r.Label == c)).ToArray(), task.Name);
            Assert.IsGreaterThan(1, counts.Count(c => c > 0), task.Name);

            var data = TextDataset.Load(file, tokenizer, new TextDataOptions());
            Assert.AreEqual(rows.Count, data.Count, task.Name);
            CollectionAssert.AreEqual(rows.Select(r => r.Label).ToArray(), data.Labels, task.Name);
            Assert.IsLessThanOrEqualTo(64, data.SampleShape[1]);
        }

        Assert.IsLessThan(4L << 20, packed, "a few MB at most");
        StringAssert.Contains(File.ReadAllText(Path.Combine(Folder, "LICENSE-WordNet.txt")), "WordNet 3.0 Copyright 2006 by Princeton University");
    }

    [TestMethod]
    public void LabelsAreWordNetsOwn()
    {
        if (!File.Exists(Path.Combine(WordNet, "data.noun")))
        {
            Assert.Inconclusive($"{WordNet} is missing: run scripts/setup-test-deps.sh (Debian wordnet-base)");
        }

        var lexnames = Manifest().GetProperty("tasks").GetProperty("probe_train").GetProperty("classes").EnumerateArray().Select(c => c.GetString()).ToList();
        var files = new Dictionary<char, FileStream>();
        try
        {
            foreach (var name in new[] { "probe_train", "val", "ood_test", "aux_verb_supersense" })
            {
                foreach (var (text, label, synset) in Rows(Path.Combine(Folder, "data", name + ".tsv.gz")))
                {
                    var pos = synset[0];
                    var stream = files.TryGetValue(pos, out var s) ? s : files[pos] = File.OpenRead(Path.Combine(WordNet, pos switch { 'n' => "data.noun", 'v' => "data.verb", _ => throw new InvalidDataException(synset) }));
                    var line = LineAt(stream, long.Parse(synset[2..], System.Globalization.CultureInfo.InvariantCulture));
                    var fields = line.Split(' ');
                    Assert.AreEqual(synset[2..], fields[0], "a synset's offset is its line's byte offset");
                    var lexfile = int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture);
                    Assert.AreEqual(pos == 'n' ? lexfile - 3 : lexfile - 29, label, $"{name}: {synset}");
                    var gloss = line[(line.IndexOf(" | ", StringComparison.Ordinal) + 3)..];
                    Assert.Contains(text, string.Join(' ', gloss.Split(' ', StringSplitOptions.RemoveEmptyEntries)), $"{name}: {synset}");
                    if (name == "ood_test")
                    {
                        Assert.Contains($"\"{text}\"", gloss, "OOD texts are usage examples");
                    }
                    else
                    {
                        Assert.StartsWith(text.Split(' ')[0], gloss, "definitions open the gloss");
                    }
                }
            }

            Assert.AreEqual("noun.animal", lexnames[2]);
        }
        finally
        {
            foreach (var stream in files.Values)
            {
                stream.Dispose();
            }
        }
    }

    [TestMethod]
    public void SplitsDoNotLeak()
    {
        var tasks = Manifest().GetProperty("tasks").EnumerateObject().Select(t => t.Name).ToList();
        var rows = tasks.ToDictionary(t => t, t => Rows(Path.Combine(Folder, "data", t + ".tsv.gz")));
        var training = tasks.Where(t => !Evaluation.Contains(t)).ToList();
        var trainedSynsets = training.SelectMany(t => rows[t]).Select(r => r.Synset).ToHashSet(StringComparer.Ordinal);
        var trainedTexts = training.SelectMany(t => rows[t]).Select(r => Normal(r.Text)).ToHashSet(StringComparer.Ordinal);
        foreach (var split in Evaluation)
        {
            Assert.IsTrue(rows[split].All(r => r.Synset.StartsWith("n.", StringComparison.Ordinal) && HeldOut(r.Synset)), split);
            Assert.IsFalse(rows[split].Any(r => trainedSynsets.Contains(r.Synset)), $"{split} shares a synset with a training file");
            Assert.IsFalse(rows[split].Any(r => trainedTexts.Contains(Normal(r.Text))), $"{split} shares a text with a training file");
        }

        Assert.IsFalse(rows["val"].Select(r => Normal(r.Text)).Intersect(rows["ood_test"].Select(r => Normal(r.Text))).Any());
        foreach (var task in training)
        {
            Assert.IsFalse(rows[task].Any(r => r.Synset.StartsWith("n.", StringComparison.Ordinal) && HeldOut(r.Synset)), $"{task} reads a held-out noun");
        }

        foreach (var (task, list) in rows)
        {
            Assert.AreEqual(list.Count, list.Select(r => Normal(r.Text)).Distinct().Count(), $"{task} holds a text twice");
        }

        Assert.IsGreaterThan(100, rows["ood_test"].Count(r => rows["val"].Any(v => v.Synset == r.Synset)), "val and ood_test are drawn from the same held-out synsets");
    }

    [TestMethod]
    public void GeneratorRebuildsTheShippedFiles()
    {
        if (!File.Exists(Path.Combine(WordNet, "data.noun")) || !File.Exists("/usr/bin/python3"))
        {
            Assert.Inconclusive($"{WordNet} or /usr/bin/python3 is missing: run scripts/setup-test-deps.sh (Debian wordnet-base)");
        }

        var output = Directory.CreateTempSubdirectory("recycling-wordnet-").FullName;
        try
        {
            var start = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var arg in new[] { Path.Combine(ZooPaths.RepositoryRoot, "scripts", "foundation", "wordnet_tasks.py"), "--wordnet", WordNet, "--out", output })
            {
                start.ArgumentList.Add(arg);
            }

            using var process = Process.Start(start)!;
            var stderr = process.StandardError.ReadToEndAsync();
            _ = process.StandardOutput.ReadToEnd();
            Assert.IsTrue(process.WaitForExit(TimeSpan.FromMinutes(3)), "the generator hangs");
            Assert.AreEqual(0, process.ExitCode, stderr.Result);
            Assert.AreEqual(File.ReadAllText(Path.Combine(Folder, "tasks.json")), File.ReadAllText(Path.Combine(output, "tasks.json")));
            foreach (var file in Directory.GetFiles(Path.Combine(Folder, "data")))
            {
                // The TSV bytes must be equal; the gzip bytes are too with the same zlib.
                CollectionAssert.AreEqual(Inflate(file), Inflate(Path.Combine(output, "data", Path.GetFileName(file))), Path.GetFileName(file));
            }

            Assert.HasCount(Directory.GetFiles(Path.Combine(Folder, "data")).Length, Directory.GetFiles(Path.Combine(output, "data")));
        }
        finally
        {
            Directory.Delete(output, recursive: true);
        }
    }

    [TestMethod]
    public void BadTextFilesAreOneLine()
    {
        using var scratch = new Scratch();
        var tokenizer = TextTokenizer.Load(TextModels.Vocabulary, null, 16);
        var truncated = Path.Combine(scratch.Path, "cut.tsv.gz");
        var bytes = File.ReadAllBytes(Path.Combine(Folder, "data", "val.tsv.gz"));
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        var corrupt = Path.Combine(scratch.Path, "bad.tsv.gz");
        File.WriteAllBytes(corrupt, [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        foreach (var path in new[] { truncated, corrupt })
        {
            var e = Assert.ThrowsExactly<RecyclingException>(() => TextDataset.Load(path, tokenizer, new TextDataOptions()));
            StringAssert.Contains(e.Message, path);
            Assert.DoesNotContain("\n", e.Message);
        }
    }

    private static JsonElement Manifest() => JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "tasks.json"))).RootElement;

    private static byte[] Inflate(string path)
    {
        using var gzip = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        using var memory = new MemoryStream();
        gzip.CopyTo(memory);
        return memory.ToArray();
    }

    private static List<(string Text, int Label, string Synset)> Rows(string path)
    {
        var lines = Encoding.UTF8.GetString(Inflate(path)).Split('\n');
        Assert.AreEqual("text\tlabel\tsynset", lines[0]);
        Assert.AreEqual(string.Empty, lines[^1]);
        return [.. lines[1..^1].Select(l => l.Split('\t')).Select(f => (f[0], int.Parse(f[1], System.Globalization.CultureInfo.InvariantCulture), f[2]))];
    }

    /// <summary>The generator's rule: SHA-256 of "split" U+001F "n.offset", first 8 hex digits, mod 100, below 25.</summary>
    private static bool HeldOut(string synset) =>
        Convert.ToUInt32(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes("split\u001f" + synset)))[..8], 16) % 100 < 25;

    private static string Normal(string text) => string.Join(' ', text.ToLowerInvariant().Split(' ', StringSplitOptions.RemoveEmptyEntries));

    private static string LineAt(FileStream stream, long offset)
    {
        stream.Position = offset;
        var bytes = new List<byte>();
        int b;
        while ((b = stream.ReadByte()) is >= 0 and not '\n')
        {
            bytes.Add((byte)b);
        }

        return Encoding.UTF8.GetString([.. bytes]);
    }
}
