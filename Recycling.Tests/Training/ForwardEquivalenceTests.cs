using Recycling.Onnx.Numpy;
using Recycling.Tests.Zoo;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Training;

/// <summary>The executor's eval-mode outputs equal ONNX Runtime's and PyTorch's on real exports:
/// max |ours − reference| ≤ 1e-5 · max |reference| (fp32; convolution and matmul algorithms differ in summation order).</summary>
[TestClass]
public sealed class ForwardEquivalenceTests
{
    private const double Tolerance = 1e-5;

    [TestMethod]
    [DataRow("cnn_base.onnx")]
    [DataRow("vit_base.onnx")]
    [DataRow("cnn_target_diwa00.onnx")]
    [DataRow("vit_target_rat08.onnx")]
    public void ZooModelsMatchOnnxRuntime(string file)
    {
        var path = Path.Combine(ZooPaths.ModelsDirectory, file);
        var feeds = new Dictionary<string, TorchSharp.torch.Tensor> { ["input"] = RandomImages(5, 7) };
        var ours = RunTorch(path, feeds);
        var ort = RunOrt(path, feeds);
        foreach (var (name, expected) in ort)
        {
            Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(ours[name], expected), $"{file} output {name}");
        }
    }

    [TestMethod]
    [DataRow("cnn", "default")]
    [DataRow("cnn", "nofold")]
    [DataRow("cnn", "opset17")]
    [DataRow("cnn", "preserve")]
    [DataRow("mlp", "default")]
    [DataRow("mlp", "nofold")]
    [DataRow("mlp", "opset17")]
    [DataRow("transformer", "default")]
    [DataRow("transformer", "nofold")]
    [DataRow("transformer", "opset17")]
    public void TorchMergeFixturesMatchPyTorchAndOnnxRuntime(string architecture, string variant)
    {
        var folder = Path.Combine(Fixtures.Root, "torch-merge", architecture);
        var path = Path.Combine(folder, variant, "base.onnx");
        var feeds = new Dictionary<string, TorchSharp.torch.Tensor> { ["input"] = ToTorch(NpyFile.Read(Path.Combine(folder, "input.npy"))) };
        var ours = RunTorch(path, feeds);
        var logits = ours.Keys.Single(k => k.Contains("logits", StringComparison.Ordinal) || ours.Count == 1);
        var torchLogits = NpyFile.Read(Path.Combine(folder, "logits_base.npy")).ToSingleArray();
        Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(ours[logits], torchLogits), $"{architecture}/{variant} against PyTorch");
        var ort = RunOrt(path, feeds);
        Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(ours[logits], ort[logits]), $"{architecture}/{variant} against ONNX Runtime");
    }

    [TestMethod]
    [DataRow("cnn_default.onnx", "cnn")]
    [DataRow("cnn_preserve.onnx", "cnn")]
    [DataRow("transformer_default.onnx", "transformer")]
    [DataRow("transformer_opset17.onnx", "transformer")]
    [DataRow("transformer_external.onnx", "transformer")]
    public void TorchIoFixturesMatchPyTorch(string file, string stem)
    {
        var feeds = new Dictionary<string, TorchSharp.torch.Tensor> { ["input"] = ToTorch(NpyFile.Read(Fixtures.TorchIoFile($"{stem}_input.npy"))) };
        var ours = RunTorch(Fixtures.TorchIoFile(file), feeds);
        var expected = NpyFile.Read(Fixtures.TorchIoFile($"{stem}_logits.npy")).ToSingleArray();
        Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(ours["logits"], expected), file);
    }
}
