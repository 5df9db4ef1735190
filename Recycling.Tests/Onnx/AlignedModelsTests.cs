using Recycling.Onnx;
using Recycling.Onnx.Alignment;

namespace Recycling.Tests.Onnx;

/// <summary>AlignedModels opens a set of models, aligns them, and closes every file it opened, on failure too.</summary>
[TestClass]
public sealed class AlignedModelsTests
{
    private static readonly string Root = Path.Combine(Fixtures.Root, "torch-merge");
    private string _folder = "";

    [TestInitialize]
    public void CreateFolder() => _folder = Directory.CreateTempSubdirectory("recycling-aligned-").FullName;

    [TestCleanup]
    public void RemoveFolder() => Directory.Delete(_folder, recursive: true);

    [TestMethod]
    public void OpensAlignsAndClosesTheInputsAndTheBase()
    {
        var inputs = new[] { Copy("mlp", "ft1"), Copy("mlp", "ft2") };
        var baseModel = Copy("mlp", "base");

        using (var models = AlignedModels.Open(inputs, baseModel))
        {
            CollectionAssert.AreEqual(inputs, models.Inputs.Select(m => m.Path).ToArray());
            Assert.AreEqual(baseModel, models.Base!.Path);
            Assert.AreSame(models.Base, models.Plan.Base);
            CollectionAssert.AreEqual(models.Inputs.ToArray(), models.Plan.Inputs.ToArray());
            Assert.IsTrue(models.Plan.Parameters.Count > 0);
            Assert.HasCount(3, OpenFiles());
        }

        Assert.IsEmpty(OpenFiles());
    }

    [TestMethod]
    public void AFailedAlignmentClosesWhatItOpened()
    {
        var inputs = new[] { Copy("mlp", "ft1"), Copy("transformer", "ft1") };

        Assert.ThrowsExactly<RecyclingException>(() => AlignedModels.Open(inputs));

        Assert.IsEmpty(OpenFiles());
    }

    [TestMethod]
    public void AnUnreadableModelIsNamedAndTheOthersAreClosed()
    {
        var broken = Path.Combine(_folder, "broken.onnx");
        File.WriteAllBytes(broken, [0x08, 0x07, 0x12]);
        var inputs = new[] { Copy("mlp", "ft1"), broken };

        var e = Assert.ThrowsExactly<OnnxFormatException>(() => AlignedModels.Open(inputs, Copy("mlp", "base")));

        StringAssert.Contains(e.Message, "broken.onnx");
        Assert.IsEmpty(OpenFiles());
    }

    private string Copy(string arch, string role)
    {
        var target = Path.Combine(_folder, $"{arch}-{role}.onnx");
        File.Copy(Path.Combine(Root, arch, "default", role + ".onnx"), target);
        return target;
    }

    /// <summary>This process's open descriptors on files of the test's folder (Linux /proc).</summary>
    private List<string> OpenFiles() =>
        [.. Directory.EnumerateFileSystemEntries("/proc/self/fd")
            .Select(fd => { try { return new FileInfo(fd).LinkTarget; } catch (IOException) { return null; } })
            .Where(target => target is not null && target.StartsWith(_folder + "/", StringComparison.Ordinal))
            .Select(target => target!)];
}
