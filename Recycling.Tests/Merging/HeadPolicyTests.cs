using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Onnx;

namespace Recycling.Tests.Merging;

/// <summary>Task heads of different sizes (scripts/fixtures/make_head_fixtures.py): every --heads policy against torch references.</summary>
[TestClass]
public sealed class HeadPolicyTests
{
    private const double Tolerance = 1e-5;
    private static readonly string Root = Path.GetFullPath(Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-heads"));
    private string _output = null!;

    [TestInitialize]
    public void Name() => _output = Path.Combine(Path.GetTempPath(), $"recycling-heads-{Guid.NewGuid():N}.onnx");

    [TestCleanup]
    public void Remove() => File.Delete(_output);

    private static string F(string name) => Path.Combine(Root, name + ".onnx");

    [TestMethod]
    public void DifferentHeadsAreRefusedByDefaultNamingTheTensors()
    {
        var e = Assert.ThrowsExactly<RecyclingException>(() => ModelMerger.Merge(new MergeRequest { Inputs = [F("ft_a"), F("ft_b")], Output = _output }));
        StringAssert.Contains(e.Message, "head.weight");
        StringAssert.Contains(e.Message, "[10,24] / [4,24]");
        StringAssert.Contains(e.Message, "--heads drop");
        Assert.IsFalse(File.Exists(_output));
    }

    [TestMethod]
    public void DropWritesTheBodyWithTheFeaturesOutput()
    {
        ModelMerger.Merge(new MergeRequest { Inputs = [F("ft_a"), F("ft_b"), F("ft_c")], Output = _output, Heads = HeadPolicy.Drop });
        var outputs = Run(_output);
        CollectionAssert.AreEqual(new[] { "features" }, outputs.Keys.ToArray());
        AssertClose("drop_features.npy", outputs["features"]);
    }

    [TestMethod]
    public void DropOnLogitsOnlyExportsPromotesThePenultimateValueToTheOutput()
    {
        ModelMerger.Merge(new MergeRequest { Inputs = [F("ft_a_logits_only"), F("ft_b_logits_only")], Output = _output, Heads = HeadPolicy.Drop });
        var outputs = Run(_output);
        Assert.HasCount(1, outputs);
        AssertClose("drop_features_ab.npy", outputs.Values.Single());
    }

    [TestMethod]
    public void FirstKeepsTheFirstModelsHead()
    {
        ModelMerger.Merge(new MergeRequest { Inputs = [F("ft_a"), F("ft_b"), F("ft_c")], Output = _output, Heads = HeadPolicy.First });
        AssertClose("first_logits.npy", Run(_output)["logits"]);
    }

    [TestMethod]
    public void BaseKeepsTheBaseHead()
    {
        ModelMerger.Merge(new MergeRequest { Inputs = [F("ft_a"), F("ft_b")], Base = F("base"), Output = _output, Heads = HeadPolicy.Base });
        AssertClose("base_logits.npy", Run(_output)["logits"]);
    }

    private static void AssertClose(string referenceFile, float[] actual)
    {
        var error = OrtTestValues.MaxRelativeError(actual, NpyFile.Read(Path.Combine(Root, referenceFile)).ToSingleArray());
        Assert.IsLessThanOrEqualTo(Tolerance, error, $"{referenceFile}: relative error {error:E2}");
    }

    private static Dictionary<string, float[]> Run(string model) => OrtTestValues.RunOnNpy(model, Path.Combine(Root, "input.npy"));
}
