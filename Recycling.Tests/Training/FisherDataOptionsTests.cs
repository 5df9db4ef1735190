using Recycling.MLNet.Data;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Zoo;
using Recycling.Training;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Training;

/// <summary>
/// `recycle fisher` reads data as `recycle finetune` does (one declaration, Recycling.Cli's DataOptionSet): a model
/// whose input needs preprocessing (the BatchNorm CNN fixture takes [N,3,8,8]; the zoo's images are 28×28 grey) gets
/// the same Fisher from the CLI, preprocessing batch by batch, as from the foundation zoo's in-process computation,
/// which preprocesses the images first and computes on the result.
/// </summary>
[TestClass]
public sealed class FisherDataOptionsTests
{
    private const string Normalize = "0.5,0.5,0.5:0.25,0.25,0.25";

    private static string Model => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", "cnn_bn.onnx");

    private static string Val => Path.Combine(ZooPaths.RepositoryRoot, "models", "data", "val");

    /// <summary>Labels drawn from the model's predictions (the fixture has 4 classes, the zoo's data 10).</summary>
    [TestMethod]
    public void FisherWithPreprocessingEqualsTheZoosInProcessComputation()
    {
        using var scratch = new Scratch();
        var cli = Path.Combine(scratch.Path, "cli.npz");
        var (code, stdout, stderr) = Run(["fisher", Model, "-d", Val, "--samples", "12", "--resize", "8x8", "--normalize", Normalize, "--seed", "5", "-o", cli]);
        Assert.AreEqual(0, code, stderr + stdout);

        // The zoo's way (FoundationZooBuilder): the first samples preprocessed and written, then the estimator on them.
        var data = FineTuner.Subset(DatasetLoader.Load(Val), 12);
        var preprocessed = ImagePreprocessing.Parse("8x8", 3, Normalize)!.Apply(data);
        var prefix = Path.Combine(scratch.Path, "fisher");
        NpyFile.Write(prefix + "_images.npy", NpyArray.From<float>(preprocessed.Values, [preprocessed.Count, .. preprocessed.SampleShape.Select(d => (long)d)]));
        NpyFile.Write(prefix + "_labels.npy", NpyArray.From<long>([.. preprocessed.Labels.Select(l => (long)l)], preprocessed.Count));
        var inProcess = Path.Combine(scratch.Path, "in-process.npz");
        FisherFile.Compute(new FisherOptions { Model = Model, Data = prefix, Output = inProcess, Seed = 5 });

        var a = NpyFile.ReadNpz(cli);
        var b = NpyFile.ReadNpz(inProcess);
        CollectionAssert.AreEquivalent(b.Keys.ToList(), a.Keys.ToList());
        foreach (var (name, array) in b)
        {
            CollectionAssert.AreEqual(array.ToSingleArray(), a[name].ToSingleArray(), name);
            Assert.IsTrue(array.ToSingleArray().Any(v => v > 0), $"{name}: a Fisher of zeros would prove nothing");
        }
    }

    [TestMethod]
    [DataRow("--resize", "0x8")]
    [DataRow("--normalize", "1,2:3")]
    public void BadPreprocessingIsOneLineAndNothingWritten(string option, string value)
    {
        using var scratch = new Scratch();
        var output = Path.Combine(scratch.Path, "f.npz");
        var (code, stdout, stderr) = Run(["fisher", Model, "-d", Val, "--samples", "4", option, value, "-o", output]);
        Assert.AreEqual(1, code, stdout);
        Assert.HasCount(1, stderr.Trim().Split('\n'), stderr);
        StringAssert.Contains(stderr, value);
        Assert.IsFalse(File.Exists(output));
    }

    [TestMethod]
    public void FinetuneAndFisherDeclareTheSameDataOptions()
    {
        string[] dataOptions = ["--resize", "--channels", "--normalize", "--vocab", "--max-length", "--uncased", "--text-column", "--pair-column", "--label-column"];
        foreach (var command in new[] { Recycling.Cli.Commands.FinetuneCommand.Create(), Recycling.Cli.Commands.FisherCommand.Create() })
        {
            var options = command.Options.Select(o => o.Name).ToList();
            foreach (var option in dataOptions)
            {
                CollectionAssert.Contains(options, option, $"{command.Name} lacks {option}");
            }
        }
    }
}
