using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.MLNet.Soups;

namespace Recycling.Tests.MLNet;

/// <summary>
/// Greedy soups on real exports (the torch-merge CNN fixture) with ingredients built so the accepted set is known:
/// labels are ft1's own predictions (ft1 scores 100%), "copy" is ft1 byte for byte (the soup with it is ft1 again:
/// a tie), and "broken" is ft1 whose head bias pushes every sample to a class ft1 never predicts here (0%; averaged
/// with ft1 the push is halved but still dominates, so the soup drops to 0%).
/// </summary>
[TestClass]
public sealed class SoupTests
{
    private static string _folder = "";
    private static Dataset _val = null!;

    [ClassInitialize]
    public static void Build(TestContext context)
    {
        _ = context;
        _folder = Directory.CreateTempSubdirectory("recycling-soup-").FullName;
        var ft1 = Ft1Soup.Ft1;
        File.Copy(ft1, Path.Combine(_folder, "ft1.onnx"));
        File.Copy(ft1, Path.Combine(_folder, "copy.onnx"));

        _val = Ft1Soup.LabelledByFt1("val", 300, seed: 11);
        Ft1Soup.WriteBroken(Path.Combine(_folder, "broken.onnx"), _val, 1e4f);
    }

    /// <summary>Certificates through the CLI: ft1 passes (100% and no forgetting), broken fails both checks with exit code 2.</summary>
    [TestMethod]
    public void CertifyPassesAndFailsWithExitCodes()
    {
        var prefix = Path.Combine(_folder, "cert_val");
        Recycling.Onnx.Numpy.NpyFile.Write(prefix + "_images.npy", Recycling.Onnx.Numpy.NpyArray.From<float>(_val.Values, _val.Count, 3, 16, 16));
        Recycling.Onnx.Numpy.NpyFile.Write(prefix + "_labels.npy", Recycling.Onnx.Numpy.NpyArray.From<long>([.. _val.Labels.Select(l => (long)l)], _val.Count));
        var certificates = Path.Combine(_folder, "certificates.json");
        File.WriteAllText(certificates, """
            {"ingredients": ["copy.onnx"], "certificates": [{"name": "val", "data": "cert_val", "minAccuracy": 99.5, "maxForgetting": 0.5}]}
            """);
        foreach (var (model, expectedExit) in new[] { ("ft1.onnx", 0), ("broken.onnx", Recycling.Cli.Commands.CertifyCommand.FailedExitCode) })
        {
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            int exit = Recycling.Cli.RecycleCli.Run(["certify", Path.Combine(_folder, model), "-c", certificates, "--json"], stdout, stderr);
            Assert.AreEqual(expectedExit, exit, $"{model}: {stderr}");
            using var json = System.Text.Json.JsonDocument.Parse(stdout.ToString());
            var certificate = json.RootElement.GetProperty("certificates")[0];
            Assert.AreEqual(expectedExit == 0, certificate.GetProperty("passed").GetBoolean());
            Assert.AreEqual(expectedExit == 0 ? 0 : 2, certificate.GetProperty("failures").GetArrayLength(), "minimum accuracy and forgetting");
        }
    }

    [ClassCleanup]
    public static void Cleanup() => Directory.Delete(_folder, recursive: true);

    private static ModelSet Ingredients() =>
        new([Path.Combine(_folder, "ft1.onnx"), Path.Combine(_folder, "broken.onnx"), Path.Combine(_folder, "copy.onnx")], scoring: new ScoringOptions { Threads = 1 });

    [TestMethod]
    public void StrictGreedySoupKeepsOnlyTheBest()
    {
        using var set = Ingredients();
        var soup = set.GreedySoup(_val, GreedyRule.Strict);
        CollectionAssert.AreEqual(new[] { "ft1", "copy", "broken" }, soup.Order.ToArray(), "sorted by val accuracy, input order on ties");
        CollectionAssert.AreEqual(new[] { 100.0, 100.0, 0.0 }, soup.OrderValAccuracy.ToArray());
        CollectionAssert.AreEqual(new[] { "ft1" }, soup.Accepted.ToArray(), "the copy ties (not strictly better), broken drops to 0");
        CollectionAssert.AreEqual(new[] { true, false, false }, soup.Steps.Select(s => s.Accepted).ToArray());
        Assert.AreEqual(0.0, soup.Steps[2].ValAccuracy, "ft1 + broken predicts the pushed class everywhere");
    }

    [TestMethod]
    public void GreedySoupWithTiesAcceptsTheCopy()
    {
        using var set = Ingredients();
        var soup = set.GreedySoup(_val, GreedyRule.AllowTies);
        CollectionAssert.AreEqual(new[] { "ft1", "copy" }, soup.Accepted.ToArray());
        CollectionAssert.AreEqual(new[] { 0, 2 }, soup.AcceptedIndices.ToArray());
        Assert.AreEqual(100.0, soup.ValAccuracy);
    }

    [TestMethod]
    public void UniformSoupAndEnsembleOfIdenticalModelsEqualTheModel()
    {
        using var set = Ingredients();
        var single = set.Scores(0, _val);
        var soup = set.UniformScores([0, 2], _val);
        for (int i = 0; i < single.Data.Length; i++)
        {
            Assert.AreEqual(single.Data[i], soup.Data[i], 1e-5f * Math.Max(1, Math.Abs(single.Data[i])));
        }

        Assert.AreEqual(100.0, set.EvaluateEnsemble([0, 2], _val).Accuracy);
        Assert.AreEqual(set.Evaluate(0, _val).LogLoss, set.EvaluateEnsemble([0, 2], _val).LogLoss, 1e-5);
    }
}
