using Recycling.Onnx.Numpy;
using Recycling.Tests.Reliability;

namespace Recycling.Tests.Cli;

/// <summary>
/// Mistakes on the command line and in JSON inputs, through the real `recycle` process: exit 1 and one line on standard
/// error that names the option, file or key, never a stack trace, help text, or an error split over lines.
/// </summary>
[TestClass]
public sealed class ErrorLineTests
{
    private static readonly string Models = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "models"));

    private static string Model(string name) => Path.Combine(Models, name + ".onnx");

    private static string Val => Path.Combine(Models, "data", "val");

    [TestMethod]
    public void UsageMistakesAreOneLine()
    {
        AssertOneLine(["eval", Model("cnn_base"), "--bogus", "-d", Val], "error: unknown option '--bogus' (see recycle eval --help)");
        AssertOneLine(["merge", Model("cnn_base"), Model("cnn_base"), "--lambda", "abc", "-o", "x.onnx"], "error: --lambda abc: expected a number (see recycle merge --help)");
        AssertOneLine(["merge", Model("cnn_base")], "error: --output is required (see recycle merge --help)");
        AssertOneLine(["eval", Model("cnn_base"), "-d", Val, "--device", "tpu"], "error: --device tpu: use cpu, cuda or auto");
        AssertOneLine(["economics", "heatmap", "--r-count", "100000", "--alpha-count", "100000"], "error: --r-count 100000 × --alpha-count 100000 = 10,000,000,000 cells: a heatmap grid holds at most 250,000");
    }

    [TestMethod]
    public void FoundationSeedsMistakesAreOneLine()
    {
        var scratch = Path.Combine(Path.GetTempPath(), $"recycling-seeds-{Guid.NewGuid():N}");
        try
        {
            AssertOneLine(["demo", "--seeds", "2", "-o", Path.Combine(scratch, "report")], "error: --seeds applies to --foundation zoos only");
            AssertOneLine(["zoo", "build", "resnet18", "--seeds", "0", "--cache", scratch], "error: --seeds 0: use 1 to 100");
        }
        finally
        {
            if (Directory.Exists(scratch))
            {
                Directory.Delete(scratch, recursive: true);
            }
        }
    }

    [TestMethod]
    public void FoldersAndOddPathsAreNamed()
    {
        AssertOneLine(["inspect", Models], $"error: {Models}: is a folder, not a model file");
        AssertOneLine(["eval", Models, "-d", Val], $"error: {Models}: is a folder, not a model file");
        var odd = Path.Combine(Path.GetTempPath(), "line\nbreak it's.onnx");
        AssertOneLine(["inspect", odd], $"error: '{Path.GetTempPath()}line\\nbreak it\\'s.onnx': ");
    }

    [TestMethod]
    public void NullsAndWrongTypesInJsonInputsNameFileAndKey()
    {
        var folder = Directory.CreateTempSubdirectory("recycle-json-input-").FullName;
        try
        {
            var certificates = Path.Combine(folder, "certificates.json");
            File.WriteAllText(certificates, """{"certificates": [{"name": null, "data": "val"}]}""");
            AssertOneLine(["certify", Model("cnn_base"), "-c", certificates], $"error: {certificates}: certificates[0].name must be a string, found null");
            File.WriteAllText(certificates, """{"certificates": [{"name": "a", "data": "val", "minAccuracy": "high"}]}""");
            AssertOneLine(["certify", Model("cnn_base"), "-c", certificates], $"error: {certificates}: certificates[0].minAccuracy must be a number, found a string");
            File.WriteAllText(certificates, "[1, 2]");
            AssertOneLine(["certify", Model("cnn_base"), "-c", certificates], $"error: {certificates}: not a certificate file (the document must be a JSON object, found an array)");

            var zoo = Path.Combine(folder, "zoo.json");
            File.WriteAllText(zoo, """{"models": [{"name": "m", "file": "m.onnx", "architecture": "cnn", "role": "target", "task": "t", "num_classes": 10, "accuracy": null}]}""");
            AssertOneLine(["demo", "--zoo", zoo, "-o", Path.Combine(folder, "report")], $"error: {zoo}: models[0].accuracy must be an object, found null");
            File.WriteAllText(zoo, """{"models": [{"name": "m", "file": 7, "accuracy": {"val": 1, "ood_test": 2}}]}""");
            AssertOneLine(["demo", "--zoo", zoo, "-o", Path.Combine(folder, "report")], $"error: {zoo}: models[0].file must be a string, found the number 7");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>A wrong input shape for `run` is refused before ONNX Runtime (whose message spans three lines).</summary>
    [TestMethod]
    public void WrongInputShapeIsOneLine()
    {
        var folder = Directory.CreateTempSubdirectory("recycle-run-shape-").FullName;
        try
        {
            var input = Path.Combine(folder, "x.npy");
            NpyFile.Write(input, new NpyArray(NpyDType.Float32, [2, 3], new byte[24]));
            AssertOneLine(["run", Model("cnn_base"), "-i", input, "-o", Path.Combine(folder, "out")], $"error: --input {input}: the model's input wants Float [");
            Assert.IsFalse(Directory.Exists(Path.Combine(folder, "out")));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void OptionsAMethodIgnoresAreWarned()
    {
        var folder = Directory.CreateTempSubdirectory("recycle-ignored-").FullName;
        try
        {
            var (exit, _, stderr, _) = RecycleProcess.Run(["merge", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "--density", "0.3", "--t", "0.2", "--lambda", "0.5", "-o", Path.Combine(folder, "m.onnx")]);
            Assert.AreEqual(0, exit, stderr);
            var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.HasCount(3, lines, stderr);
            // The lists of methods that read each option come from the registry (it grows as methods are added).
            StringAssert.StartsWith(lines[0], "warning: --lambda is ignored by --method linear (it applies to breadcrumbs, breadcrumbs_ties, dare_average, dare_linear, dare_ties, ");
            StringAssert.Contains(lines[0], "task_arithmetic, ties");
            StringAssert.StartsWith(lines[1], "warning: --density is ignored by --method linear (it applies to breadcrumbs, breadcrumbs_ties, dare_average, dare_linear, dare_ties, ");
            Assert.AreEqual("warning: --t is ignored by --method linear (it applies to nearswap, slerp)", lines[2]);

            (exit, _, stderr, _) = RecycleProcess.Run(["merge", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "--base", Model("cnn_base"), "-m", "ties", "--density", "0.3", "--lambda", "0.5", "-o", Path.Combine(folder, "t.onnx")]);
            Assert.AreEqual(0, exit, stderr);
            Assert.DoesNotContain("warning", stderr);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static void AssertOneLine(string[] args, string expectedStart)
    {
        var (exit, _, stderr, _) = RecycleProcess.Run(args);
        var command = string.Join(' ', args);
        Assert.AreEqual(1, exit, $"recycle {command}: {stderr}");
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.HasCount(1, lines, $"recycle {command}:\n{stderr}");
        StringAssert.StartsWith(lines[0], expectedStart, $"recycle {command}");
    }
}
