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

    private static ArchitectureStudy Study(params (string Method, double Val, double Ood)[] rows) =>
        new("cnn", [.. rows.Select(r => new StudyRow(r.Method, "", r.Val, r.Ood))], [], [], [], new DiversityMatrix([], [], []), [], [], 0);
}
