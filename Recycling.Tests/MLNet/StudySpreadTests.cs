using Recycling.MLNet.Diagnostics;
using Recycling.MLNet.Study;

namespace Recycling.Tests.MLNet;

/// <summary>The study's spread over seed replicas: rows matched by method, mean and sample standard deviation checked against values worked by hand.</summary>
[TestClass]
public sealed class StudySpreadTests
{
    [TestMethod]
    public void MeanAndSampleDeviationPerRow()
    {
        // val 60, 62, 67: mean 63, deviations -3, -1, 4, sample variance (9 + 1 + 16) / 2 = 13.
        // OOD 40, 40, 43: mean 41, deviations -1, -1, 2, sample variance (1 + 1 + 4) / 2 = 3.
        var replicas = new[]
        {
            Study(("best individual (by val)", 60, 40), ("Fisher merge", 50, 30), ("task arithmetic", 70, 50), ("task arithmetic", 71, 51)),
            Study(("best individual (by val)", 62, 40), ("task arithmetic", 72, 52), ("task arithmetic", 73, 53)),
            Study(("task arithmetic", 74, 54), ("best individual (by val)", 67, 43), ("Fisher merge", 54, 36), ("task arithmetic", 75, 55)),
        };
        var rows = StudySpread.Over(replicas);
        CollectionAssert.AreEqual(new[] { "best individual (by val)", "Fisher merge", "task arithmetic", "task arithmetic" }, rows.Select(r => r.Method).ToArray());

        var best = rows[0];
        Assert.AreEqual(3, best.Seeds);
        Assert.AreEqual(63, best.ValMean, 1e-12);
        Assert.AreEqual(Math.Sqrt(13), best.ValSd, 1e-12);
        Assert.AreEqual(41, best.OodMean, 1e-12);
        Assert.AreEqual(Math.Sqrt(3), best.OodSd, 1e-12);

        // A row one replica lacks (Fisher skipped) is summarised over the two that have it: 50, 54 -> 52 ± sqrt(8).
        Assert.AreEqual(2, rows[1].Seeds);
        Assert.AreEqual(52, rows[1].ValMean, 1e-12);
        Assert.AreEqual(Math.Sqrt(8), rows[1].ValSd, 1e-12);

        // Repeated method names pair by occurrence: first 70, 72, 74; second 71, 73, 75.
        Assert.AreEqual(72, rows[2].ValMean, 1e-12);
        Assert.AreEqual(73, rows[3].ValMean, 1e-12);
        Assert.AreEqual(2, rows[3].ValSd, 1e-12);
    }

    /// <summary>A row the first replica lacks (its Fisher merge skipped, as on the mini MiniLM zoo) is kept, in its place, over the replicas that have it.</summary>
    [TestMethod]
    public void ARowTheFirstReplicaLacksIsKeptInItsPlace()
    {
        var rows = StudySpread.Over([
            Study(("task arithmetic", 70, 50), ("base + LP", 60, 40)),
            Study(("task arithmetic", 72, 52), ("Fisher merge", 54, 36), ("base + LP", 62, 42)),
            Study(("task arithmetic", 74, 54), ("Fisher merge", 58, 38), ("base + LP", 64, 44)),
        ]);
        CollectionAssert.AreEqual(new[] { "task arithmetic", "Fisher merge", "base + LP" }, rows.Select(r => r.Method).ToArray());
        Assert.AreEqual(2, rows[1].Seeds);
        Assert.AreEqual(56, rows[1].ValMean, 1e-12);
        Assert.AreEqual(Math.Sqrt(8), rows[1].ValSd, 1e-12);
        Assert.AreEqual(3, rows[2].Seeds);
        Assert.AreEqual(62, rows[2].ValMean, 1e-12);
    }

    [TestMethod]
    public void OneReplicaHasNoSpreadAndTheMarkdownListsEverySeed()
    {
        Assert.AreEqual(0, StudySpread.Over([Study(("uniform soup (DiWA)", 61.5, 48.25))])[0].ValSd);
        var folder = Directory.CreateTempSubdirectory("recycling-spread-").FullName;
        try
        {
            var path = Path.Combine(folder, "cnn_seeds.md");
            StudySpread.Write(path, [Study(("uniform soup (DiWA)", 61.5, 48.25)), Study(("uniform soup (DiWA)", 63.5, 50.25))], ["a/zoo.json", "a/zoo-seed1.json"]);
            var md = File.ReadAllText(path);
            StringAssert.Contains(md, "| uniform soup (DiWA) | 2 | 62.50 ± 1.41 | 49.25 ± 1.41 | 61.50, 63.50 | 48.25, 50.25 |");
            StringAssert.Contains(md, "`a/zoo-seed1.json`");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// The spread of two real studies (the study.json files of `recycle demo --foundation resnet18 --scale mini
    /// --seeds 2`, Fixtures/study-seeds): every row of the table is the mean of the replicas' two values and their
    /// sample standard deviation, worked here in the closed form for two values, |a − b| / √2.
    /// </summary>
    [TestMethod]
    public void TwoRealStudiesGiveEachRowsMeanAndSampleDeviation()
    {
        var files = new[] { "seed0.study.json", "seed1.study.json" }.Select(f => Path.Combine(Recycling.Tests.Fixtures.Root, "study-seeds", f)).ToList();
        var replicas = files.Select(ReadStudy).ToList();
        var folder = Directory.CreateTempSubdirectory("recycling-spread-").FullName;
        try
        {
            var path = Path.Combine(folder, "resnet18_seeds.md");
            StudySpread.Write(path, replicas, files);
            var lines = File.ReadAllLines(path).Where(l => l.StartsWith("| ", StringComparison.Ordinal) && !l.StartsWith("| method", StringComparison.Ordinal)).ToList();
            var (first, second) = (replicas[0].Rows, replicas[1].Rows);
            Assert.HasCount(16, first, "every row of the study");
            Assert.HasCount(first.Count, lines);
            CollectionAssert.AreEqual(first.Select(r => r.Method).ToList(), second.Select(r => r.Method).ToList());
            Assert.IsTrue(first.Zip(second).Any(p => p.First.Val != p.Second.Val), "some row differs between the seeds");
            for (var i = 0; i < first.Count; i++)
            {
                var (a, b) = (first[i], second[i]);
                Assert.AreEqual(
                    $"| {a.Method} | 2 | {F((a.Val + b.Val) / 2)} ± {F(Math.Abs(a.Val - b.Val) / Math.Sqrt(2))} | {F((a.Ood + b.Ood) / 2)} ± {F(Math.Abs(a.Ood - b.Ood) / Math.Sqrt(2))} | {F(a.Val)}, {F(b.Val)} | {F(a.Ood)}, {F(b.Ood)} |",
                    lines[i]);
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// `demo --seeds K --json` on the two real studies: every replica's rows as its own study.json has them, and each
    /// row's mean and sample deviation (closed form for two values) with the per-seed values; the document fits its schema.
    /// </summary>
    [TestMethod]
    public void JsonHoldsEveryReplicaAndEachRowsSpread()
    {
        var files = new[] { "seed0.study.json", "seed1.study.json" }.Select(f => Path.Combine(Recycling.Tests.Fixtures.Root, "study-seeds", f)).ToList();
        var replicas = files.Select(f => (IReadOnlyList<ArchitectureStudy>)[ReadStudy(f)]).ToList();
        using var document = Recycling.Tests.Cli.JsonSchemaCheck.Validate("demo-seeds", StudySpread.ToJson(replicas, files));
        var root = document.RootElement;
        CollectionAssert.AreEqual(files, root.GetProperty("zoos").EnumerateArray().Select(z => z.GetString()).ToList());
        Assert.AreEqual(2, root.GetProperty("replicas").GetArrayLength());
        for (var r = 0; r < 2; r++)
        {
            using var replica = Recycling.Tests.Cli.JsonSchemaCheck.Validate("demo", root.GetProperty("replicas")[r].GetRawText());
            var rows = replica.RootElement.EnumerateArray().Single().GetProperty("rows").EnumerateArray().ToList();
            var expected = replicas[r][0].Rows;
            Assert.HasCount(expected.Count, rows);
            for (var i = 0; i < rows.Count; i++)
            {
                Assert.AreEqual(expected[i].Method, rows[i].GetProperty("method").GetString());
                Assert.AreEqual(expected[i].Val, rows[i].GetProperty("val").GetDouble());
                Assert.AreEqual(expected[i].Ood, rows[i].GetProperty("ood").GetDouble());
            }
        }

        var seeds = root.GetProperty("seeds").EnumerateArray().Single();
        Assert.AreEqual("resnet18", seeds.GetProperty("architecture").GetString());
        var spread = seeds.GetProperty("rows").EnumerateArray().ToList();
        var (first, second) = (replicas[0][0].Rows, replicas[1][0].Rows);
        Assert.HasCount(first.Count, spread);
        for (var i = 0; i < spread.Count; i++)
        {
            var (a, b, row) = (first[i], second[i], spread[i]);
            Assert.AreEqual(a.Method, row.GetProperty("method").GetString());
            Assert.AreEqual(2, row.GetProperty("seeds").GetInt32());
            Assert.AreEqual((a.Val + b.Val) / 2, row.GetProperty("valMean").GetDouble(), 1e-12);
            Assert.AreEqual(Math.Abs(a.Val - b.Val) / Math.Sqrt(2), row.GetProperty("valSd").GetDouble(), 1e-12);
            Assert.AreEqual((a.Ood + b.Ood) / 2, row.GetProperty("oodMean").GetDouble(), 1e-12);
            Assert.AreEqual(Math.Abs(a.Ood - b.Ood) / Math.Sqrt(2), row.GetProperty("oodSd").GetDouble(), 1e-12);
            CollectionAssert.AreEqual(new[] { a.Val, b.Val }, row.GetProperty("val").EnumerateArray().Select(v => v.GetDouble()).ToArray());
            CollectionAssert.AreEqual(new[] { a.Ood, b.Ood }, row.GetProperty("ood").EnumerateArray().Select(v => v.GetDouble()).ToArray());
        }
    }

    private static string F(double value) => value.ToString("F2", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The rows of a study.json (one architecture) as the study returned them.</summary>
    private static ArchitectureStudy ReadStudy(string path)
    {
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
        var study = json.RootElement.EnumerateArray().Single();
        var rows = study.GetProperty("rows").EnumerateArray().Select(r => new StudyRow(r.GetProperty("method").GetString()!, r.GetProperty("detail").GetString()!, r.GetProperty("val").GetDouble(), r.GetProperty("ood").GetDouble())).ToList();
        return new(study.GetProperty("architecture").GetString()!, rows, [], [], [], new DiversityMatrix([], [], []), [], [], study.GetProperty("seconds").GetDouble());
    }

    private static ArchitectureStudy Study(params (string Method, double Val, double Ood)[] rows) =>
        new("cnn", [.. rows.Select(r => new StudyRow(r.Method, "", r.Val, r.Ood))], [], [], [], new DiversityMatrix([], [], []), [], [], 0);
}
