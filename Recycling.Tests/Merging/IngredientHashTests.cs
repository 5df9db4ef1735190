using System.Security.Cryptography;
using System.Text.Json;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.IO;
using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

/// <summary>
/// The ingredient digests of a merge's lineage are taken from the bytes the merge reads: each input byte is read once
/// through the files' handles on a first merge (counted by <see cref="MappedFile.BytesRead"/>), and the digests equal
/// SHA-256 of the files as the test reads them itself, whatever the order of the reads.
/// </summary>
[TestClass]
public sealed class IngredientHashTests
{
    private static readonly string Root = Path.Combine(Fixtures.Root, "torch-merge");
    private string _scratch = null!;

    [TestInitialize]
    public void CreateScratch() => _scratch = Directory.CreateTempSubdirectory("recycling-hash-").FullName;

    [TestCleanup]
    public void RemoveScratch() => Directory.Delete(_scratch, recursive: true);

    [TestMethod]
    [DataRow(ExternalDataMode.Embedded, MergeMethod.Average)]
    [DataRow(ExternalDataMode.External, MergeMethod.Average)]
    [DataRow(ExternalDataMode.External, MergeMethod.TaskArithmetic)]
    public void AFirstMergeReadsEachInputByteOnce(ExternalDataMode storage, MergeMethod method)
    {
        // Fresh copies under a new folder: no digest of theirs is cached, so this merge hashes them.
        // ft1 and ft2: ft3's exporter aliased fc3.bias to fc2.bias, which the merge itself reads for both parameters.
        var (copies, baseModel) = Copies("mlp", storage);
        string[] inputs = [copies[0], copies[1]];
        using var models = AlignedModels.Open(inputs, method == MergeMethod.TaskArithmetic ? baseModel : null);
        var opened = models.Inputs.Concat(models.Base is null ? [] : [models.Base]).ToList();
        var before = opened.Select(m => m.OpenedFiles.Sum(f => f.BytesRead)).ToArray();
        var output = Path.Combine(_scratch, "out.onnx");

        var summary = ModelMerger.Merge(models.Plan, new MergeRequest { Inputs = inputs, Output = output, Options = new MergeOptions { Method = method } }, null, null);

        for (var i = 0; i < opened.Count; i++)
        {
            var files = opened[i].OpenedFiles;
            var size = files.Sum(f => f.Length);
            var read = files.Sum(f => f.BytesRead) - before[i];
            // Hashed apart, a model's tensors were read twice: once by the merge, once more by the hash (size + 390 KB
            // here). With external data, the tensors left in the small .onnx file are read again when the merge reaches
            // them, after the digest went on to the data file.
            var bound = size + (files.Count > 1 ? files[0].Length : 0);
            Assert.IsLessThanOrEqualTo(bound, read, $"{opened[i].Path}: bytes read through its handles during the merge, against its {files.Count} files' {size} bytes");
        }

        Assert.IsGreaterThan(0L, summary.BytesRead);
        AssertDigests(output, inputs, method == MergeMethod.TaskArithmetic ? baseModel : null);
    }

    [TestMethod]
    public void DigestsAreRightWhenTheMergeReadsSamplesFirstAndTiedTensorsTwice()
    {
        // Global TIES samples magnitudes before merging (reads ahead of the hashed prefix, then from the start again);
        // the transformer's tied embedding is read for both of its uses.
        var (inputs, baseModel) = Copies("transformer", ExternalDataMode.External);
        var output = Path.Combine(_scratch, "out.onnx");
        ModelMerger.Merge(new MergeRequest
        {
            Inputs = inputs,
            Base = baseModel,
            Output = output,
            Options = new MergeOptions { Method = MergeMethod.Ties, Density = 0.2, TrimScope = TiesTrimScope.Global },
        });
        AssertDigests(output, inputs, baseModel);
    }

    [TestMethod]
    public void ADigestFollowsReadsInAnyOrderAndReadsTheRestItself()
    {
        var random = new Random(7);
        var paths = new[] { 3000, 70_000, 1 }.Select((length, k) => RandomFile(random, $"part{k}", length)).ToArray();
        var expected = Sha256(paths);
        var total = paths.Sum(p => new FileInfo(p).Length);
        string[] patterns = ["in order", "reversed", "shuffled", "overlapping", "none"];
        foreach (var pattern in patterns)
        {
            var files = paths.Select(MappedFile.Open).ToArray();
            try
            {
                using var digest = new IngredientHashes.Following(files, cacheFile: null, cached: null);
                foreach (var (file, offset, length) in Reads(pattern, files, random))
                {
                    files[file].Read(offset, new byte[length]);
                }

                var ownReads = files.Sum(f => f.BytesRead);
                Assert.AreEqual(expected, digest.Finish(), pattern);
                if (pattern is "in order" or "none")
                {
                    // In order, the digest needs no read of its own; with none, it reads every byte once.
                    Assert.AreEqual(total, files.Sum(f => f.BytesRead), pattern);
                }
                else
                {
                    Assert.IsLessThanOrEqualTo(ownReads + total, files.Sum(f => f.BytesRead), pattern);
                }

                files[0].Read(0, new byte[10]); // after Finish: no longer observed, so nothing throws or changes
                Assert.AreEqual(expected, digest.Finish(), pattern);
            }
            finally
            {
                Array.ForEach(files, f => f.Dispose());
            }
        }
    }

    [TestMethod]
    public void TwoDigestsOfOneOpenedFileAgree()
    {
        var path = RandomFile(new Random(3), "one", 50_000);
        using var file = MappedFile.Open(path);
        using var first = new IngredientHashes.Following([file], cacheFile: null, cached: null);
        using var second = new IngredientHashes.Following([file], cacheFile: null, cached: null); // cannot observe: reads it all at the end
        file.Read(0, new byte[20_000]);
        file.Read(20_000, new byte[30_000]);
        Assert.AreEqual(Sha256([path]), first.Finish());
        Assert.AreEqual(Sha256([path]), second.Finish());
        Assert.AreEqual(2 * 50_000L, file.BytesRead);
    }

    private static IEnumerable<(int File, long Offset, int Length)> Reads(string pattern, MappedFile[] files, Random random)
    {
        var blocks = new List<(int File, long Offset, int Length)>();
        for (var k = 0; k < files.Length; k++)
        {
            for (long offset = 0; offset < files[k].Length; offset += 4096)
            {
                blocks.Add((k, offset, (int)Math.Min(4096, files[k].Length - offset)));
            }
        }

        return pattern switch
        {
            "in order" => blocks,
            "reversed" => Enumerable.Reverse(blocks),
            "shuffled" => blocks.OrderBy(_ => random.Next()).ToList(),
            "overlapping" => blocks.Select(b => (b.File, Math.Max(0, b.Offset - 100), (int)Math.Min(b.Length + 100, files[b.File].Length - Math.Max(0, b.Offset - 100)))),
            _ => [],
        };
    }

    private (string[] Inputs, string Base) Copies(string arch, ExternalDataMode storage)
    {
        string Copy(string role)
        {
            var target = Path.Combine(_scratch, role, role + ".onnx");
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            using var source = OnnxModel.Open(Path.Combine(Root, arch, "default", role + ".onnx"));
            OnnxWriter.Write(source, target, new OnnxWriteOptions { ExternalData = storage, ExternalThreshold = 64 });
            return target;
        }

        return ([Copy("ft1"), Copy("ft2"), Copy("ft3")], Copy("base"));
    }

    private static void AssertDigests(string output, string[] inputs, string? baseModel)
    {
        using var merged = OnnxModel.Open(output);
        using var ingredients = JsonDocument.Parse(merged.Metadata["recycling.ingredients"]);
        var listed = ingredients.RootElement.EnumerateArray().Select(e => e.GetProperty("sha256").GetString()).ToArray();
        CollectionAssert.AreEqual(inputs.Select(FilesOf).Select(Sha256).ToArray(), listed);
        if (baseModel is not null)
        {
            StringAssert.Contains(merged.Metadata["recycling.base"], Sha256(FilesOf(baseModel)));
        }
    }

    /// <summary>The model file, then its external-data files in the order the model first references them.</summary>
    private static string[] FilesOf(string model)
    {
        using var opened = OnnxModel.Open(model);
        return [.. opened.Files];
    }

    private static string Sha256(IEnumerable<string> files) =>
        Convert.ToHexStringLower(SHA256.HashData(files.SelectMany(File.ReadAllBytes).ToArray()));

    private string RandomFile(Random random, string name, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        var path = Path.Combine(_scratch, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }
}
