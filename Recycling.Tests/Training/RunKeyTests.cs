using Recycling.Training.Foundation;
using Recycling.Training.Recipes;

namespace Recycling.Tests.Training;

/// <summary>
/// Run keys are the identity of cached runs (zoo builds of hours reuse them): these pin the keys of a target run and
/// of a foundation fine-tuning on fixed files, worked out independently (Python's hashlib over the canonical text
/// kind, file hashes and sorted parameters), so that a refactoring that changes a key shows up here.
/// </summary>
[TestClass]
public sealed class RunKeyTests
{
    [TestMethod]
    public void TargetRunKeyIsPinned()
    {
        using var scratch = new Scratch();
        var (model, train, val) = Files(scratch.Path);
        var spec = TargetRuns.Spec("target", model, train, val, [], new TargetTraining(), seed: 3);
        Assert.AreEqual("centred-shared-scale", spec.Parameters["head_probe"]);
        Assert.AreEqual("67e6f3aa5b146b2ba5e2f43cb0fd68d046b829a94981e5899b89ef88911c08f4", new RunStore(scratch.Path).Key(spec));
    }

    [TestMethod]
    [DataRow("new:4", "d770138d6aaa3d2cd5878bcdd49270f37dc77fe548280cb871043c5ce33766bc", DisplayName = "new head: probe-initialised, stamped")]
    [DataRow("keep", "fb4310ccb4b0aae0761fa5cd61d4bfc6c1543544d3db8f44f4e4e8460a524b56", DisplayName = "kept head: no probe, not stamped")]
    public void FoundationFineTuneKeyIsPinned(string head, string key)
    {
        using var scratch = new Scratch();
        var (model, train, _) = Files(scratch.Path);
        var spec = FoundationZooBuilder.FineTune("aux", model, train, null, null, new RoleTraining(), epochs: 2, seed: 100, draw: false, head, "features", "");
        Assert.AreEqual(key, new RunStore(scratch.Path).Key(spec));
    }

    private static (string Model, string Train, string Val) Files(string folder)
    {
        var model = Path.Combine(folder, "model.onnx");
        var train = Path.Combine(folder, "train.csv");
        var val = Path.Combine(folder, "val.csv");
        File.WriteAllText(model, "not a model: only bytes to hash\n");
        File.WriteAllText(train, "text,label\nx,0\n");
        File.WriteAllText(val, "text,label\ny,1\n");
        return (model, train, val);
    }
}
