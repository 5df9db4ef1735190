using Recycling.Cli;
using Recycling.MLNet.Data;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Zoo;

namespace Recycling.Tests.Training;

/// <summary>
/// The acceptance line exactly as the issue gives it (`--train PREFIX`, SGD and AdamW, BatchNorm train and frozen) on a
/// zoo model, then `recycle run` on the written file: its logits on held-out images are as close to PyTorch's float64
/// run of the same epoch as PyTorch's own float32 run is (within twice that gap: 63 steps amplify fp32 rounding, to 2.3e-2
/// relative for SGD and 2.5e-3 for AdamW; ours measured 6.3e-3 and 3.2e-4; scripts/training/make_acceptance_fixture.py).
/// The zoo CNN has its BatchNorm folded into the convolutions, so train and frozen land on the same values. SGD at lr 0.05
/// overshoots on this model (in PyTorch too: mean train loss 6.72, val accuracy 17.5 %); the reference has that.
/// </summary>
[TestClass]
public sealed class FinetuneAcceptanceTests
{
    [TestMethod]
    [DataRow("sgd", "train")]
    [DataRow("sgd", "frozen")]
    [DataRow("adamw", "train")]
    public void TheAcceptanceLineTrainsAZooModelThatRecycleRunRuns(string optimizer, string batchNorm)
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-accept-").FullName;
        try
        {
            var model = Path.Combine(ZooPaths.ModelsDirectory, "cnn_target_diwa00.onnx");
            var train = Path.Combine(ZooPaths.ModelsDirectory, "data", "probe_train");
            var output = Path.Combine(scratch, "OUT.onnx");
            string[] settings = optimizer == "sgd"
                ? ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0", "--weight-decay", "0"]
                : ["--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "0.01"];
            var (code, text) = Recycle(["finetune", model, "--train", train, "--epochs", "1", "--batch-size", "32", .. settings,
                "--no-shuffle", "--batchnorm", batchNorm, "-o", output]);
            Assert.AreEqual(0, code, text);

            var val = DatasetLoader.Load(Path.Combine(ZooPaths.ModelsDirectory, "data", "val"));
            const int count = 256;
            var images = Path.Combine(scratch, "images.npy");
            NpyFile.Write(images, NpyArray.From<float>(val.Values.AsSpan(0, count * val.SampleSize), [count, .. val.SampleShape.Select(d => (long)d)]));
            var (runCode, runText) = Recycle(["run", output, "--input", images, "-o", Path.Combine(scratch, "run")]);
            Assert.AreEqual(0, runCode, runText);
            var logits = NpyFile.Read(Path.Combine(scratch, "run", "logits.npy")).ToSingleArray();
            var reference = NpyFile.ReadNpz(Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", "acceptance_diwa00.npz"));
            var exact = reference[optimizer + ":f64"].ToSingleArray();
            var pytorchGap = TrainingSupport.RelativeGap(reference[optimizer].ToSingleArray(), exact);
            Assert.IsLessThanOrEqualTo(2 * pytorchGap, TrainingSupport.RelativeGap(logits, exact), $"{optimizer} {batchNorm}: PyTorch float32 is {pytorchGap:G3} from float64");
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    private static (int Code, string Text) Recycle(string[] args)
    {
        using var output = new StringWriter();
        var code = RecycleCli.Run(args, output, output);
        return (code, output.ToString());
    }
}
