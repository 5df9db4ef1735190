using System.Text.Json;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Tests.Training;
using Recycling.Tests.Zoo;
using Recycling.Training;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Cli;

/// <summary>
/// `recycle align` matches a model fine-tuned with a new head at an internal value (the nodes after the cut dropped)
/// to its parent: the shared body's parameters align by name, the parent's part after the cut and the new head are
/// reported as such; a merge of the two is refused in one line that says why. On the zoo CNN (fine-tuned by
/// `recycle finetune --head new:10 --at /pool_1/MaxPool_output_0`) and on CNTK's ResNet18 cut at its last ReLU.
/// </summary>
[TestClass]
public sealed class AlignCutTests
{
    private const string Cut = "/pool_1/MaxPool_output_0";

    [TestMethod]
    public void FineTunedCutAlignsWithItsParent()
    {
        using var scratch = new Scratch();
        var parent = Path.Combine(ZooPaths.ModelsDirectory, "cnn_base.onnx");
        var train = HeadTests.WriteSplit(scratch.Path, "train", 16, seed: 4);
        var cut = Path.Combine(scratch.Path, "cut.onnx");
        var (code, stdout, stderr) = Run(["finetune", parent, "-d", train, "-o", cut, "--head", "new:10", "--at", Cut, "--steps", "1", "--batch-size", "16"]);
        Assert.AreEqual(0, code, stderr + stdout);

        var json = Align([parent, cut]);
        var parameters = json.GetProperty("parameters").EnumerateArray().ToList();
        CollectionAssert.AreEquivalent(new[] { "onnx::Conv_38", "onnx::Conv_39", "onnx::Conv_41", "onnx::Conv_42" }, parameters.Select(p => p.GetProperty("names")[0].GetString()).ToArray(), "the body before the cut");
        Assert.IsTrue(parameters.All(p => p.GetProperty("names")[1].GetString() == p.GetProperty("names")[0].GetString() && !p.GetProperty("head").GetBoolean()));

        var unshared = json.GetProperty("unshared").EnumerateArray().ToList();
        Assert.HasCount(2, unshared);
        var dropped = unshared.Single(u => u.GetProperty("model").GetString() == parent);
        Assert.AreEqual("cut-off", dropped.GetProperty("kind").GetString());
        CollectionAssert.AreEqual(new[] { cut }, dropped.GetProperty("absentFrom").EnumerateArray().Select(e => e.GetString()).ToArray());
        CollectionAssert.AreEqual(new[] { Cut }, dropped.GetProperty("reads").EnumerateArray().Select(e => e.GetString()).ToArray());
        CollectionAssert.AreEquivalent(new[] { "onnx::Conv_44", "onnx::Conv_45", "head.weight", "head.bias" }, dropped.GetProperty("weights").EnumerateArray().Select(e => e.GetString()).ToArray());
        var head = unshared.Single(u => u.GetProperty("model").GetString() == cut);
        Assert.AreEqual("new-head", head.GetProperty("kind").GetString());
        CollectionAssert.AreEqual(new[] { Cut }, head.GetProperty("reads").EnumerateArray().Select(e => e.GetString()).ToArray());
        CollectionAssert.AreEquivalent(new[] { "head.weight", "head.bias" }, head.GetProperty("weights").EnumerateArray().Select(e => e.GetString()).ToArray());

        var text = Run(["align", parent, cut]);
        Assert.AreEqual(0, text.Code, text.Stderr);
        StringAssert.Contains(text.Stdout, "a shared body (4 parameters");
        StringAssert.Contains(text.Stdout, $"cut.onnx: a new head of 2 node(s) after '{Cut}', not in cnn_base.onnx");
        StringAssert.Contains(text.Stdout, $"cnn_base.onnx: 4 node(s) after '{Cut}' that cut.onnx cut off");

        // A merge of the two refuses in one line.
        var refused = Assert.ThrowsExactly<RecyclingException>(() => ModelMerger.Merge(new MergeRequest { Inputs = [parent, cut], Output = Path.Combine(scratch.Path, "m.onnx") }));
        StringAssert.Contains(refused.Message, "shares only a body");
        StringAssert.Contains(refused.Message, "recycle align");
        Assert.DoesNotContain('\n', refused.Message);
        Assert.IsFalse(File.Exists(Path.Combine(scratch.Path, "m.onnx")));

        // Different bases are still refused naming the first differing node.
        var other = Run(["align", parent, Path.Combine(ZooPaths.ModelsDirectory, "vit_base.onnx")]);
        Assert.AreEqual(1, other.Code);
        StringAssert.Contains(other.Stderr, "graphs differ at node 0");
    }

    [TestMethod]
    public void ResNet18CutAtItsLastReluAlignsWithIt()
    {
        using var scratch = new Scratch();
        var packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var parent = Path.Combine(packages, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.23.1", "tools", "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");
        var cut = Path.Combine(scratch.Path, "r18-cut.onnx");
        using (var model = OnnxModel.Open(parent))
        {
            const int features = 512 * 7 * 7;
            HeadAttachment.Write(model, cut, new LinearHead("ReLU393_Output_0", 2, features, new float[2 * features], new float[2]));
        }

        var json = Align([parent, cut]);
        var whole = Align([parent, parent]).GetProperty("parameters").GetArrayLength();
        Assert.AreEqual(whole, json.GetProperty("parameters").GetArrayLength(), "every weight of ResNet18 is before its last ReLU");
        Assert.AreEqual(0, Align([parent, parent]).GetProperty("unshared").GetArrayLength());
        var unshared = json.GetProperty("unshared").EnumerateArray().ToList();
        var pooling = unshared.Single(u => u.GetProperty("model").GetString() == parent);
        CollectionAssert.AreEqual(new[] { "Pooling395 (AveragePool)" }, pooling.GetProperty("nodes").EnumerateArray().Select(e => e.GetString()).ToArray());
        var head = unshared.Single(u => u.GetProperty("model").GetString() == cut);
        Assert.AreEqual("new-head", head.GetProperty("kind").GetString());
        Assert.AreEqual("cut-off", pooling.GetProperty("kind").GetString());
        Assert.HasCount(2, head.GetProperty("weights").EnumerateArray().ToList());
    }

    private static JsonElement Align(string[] models)
    {
        var (code, stdout, stderr) = Run(["align", .. models, "--json"]);
        Assert.AreEqual(0, code, stderr + stdout);
        return JsonDocument.Parse(stdout).RootElement.Clone();
    }
}
