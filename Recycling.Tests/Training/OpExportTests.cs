using Recycling.Onnx;
using Recycling.Tests.Zoo;
using Recycling.Training;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// Scaled-down MobileNet, EfficientNet, ResNet, FPN (interpolate, ConvTranspose, GroupNorm, InstanceNorm), ViT and
/// Einsum-attention architectures exported by torch 1.13 at opsets 8 to 17 (scripts/training/make_export_zoo.py):
/// every node converts (what `recycle finetune --check` reports), and the forward pass equals ONNX Runtime's within
/// 1e-5 of the largest output magnitude.
/// </summary>
[TestClass]
public sealed class OpExportTests
{
    private static string Directory => Path.Combine(ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", "exports");

    public static IEnumerable<object[]> Exports =>
        System.IO.Directory.GetFiles(Directory, "*.onnx").Order(StringComparer.Ordinal).Select(f => new object[] { Path.GetFileName(f) });

    [TestMethod]
    public void EveryArchitectureHasItsOpsets()
    {
        var files = Exports.Select(e => (string)e[0]).ToList();
        foreach (var architecture in new[] { "mobilenet", "efficientnet", "resnet", "vit", "attention", "fpn_nearest", "fpn_bilinear", "fpn_bilinear_corners" })
        {
            Assert.IsTrue(files.Any(f => f.StartsWith(architecture + "_opset", StringComparison.Ordinal)), architecture);
        }

        Assert.IsGreaterThanOrEqualTo(40, files.Count);
    }

    [TestMethod]
    [DynamicData(nameof(Exports))]
    public void ConvertsAndMatchesOnnxRuntime(string file)
    {
        var path = Path.Combine(Directory, file);
        using (var model = OnnxModel.Open(path))
        {
            var problems = OnnxProgram.Check(model);
            Assert.IsEmpty(problems, $"{file}: {string.Join("; ", problems)}");
        }

        var random = new Random(file.Length);
        var feeds = file.StartsWith("attention", StringComparison.Ordinal)
            ? new Dictionary<string, Tensor>
            {
                ["input_ids"] = tensor(Enumerable.Range(0, 21).Select(_ => (long)random.Next(50)).ToArray(), [3, 7]),
                ["attention_mask"] = tensor(Enumerable.Range(0, 21).Select(k => k % 7 < 5 || k < 7 ? 1L : 0L).ToArray(), [3, 7]),
            }
            : new Dictionary<string, Tensor> { ["input"] = randn(3, 3, 32, 32, generator: new Generator((ulong)file.Length)) };
        var ours = RunTorch(path, feeds);
        foreach (var (name, expected) in RunOrt(path, feeds))
        {
            Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(ours[name], expected), $"{file} output {name}");
        }
    }
}
