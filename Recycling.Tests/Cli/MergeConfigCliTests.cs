using Recycling.Onnx;
using Recycling.Tests.Reliability;

namespace Recycling.Tests.Cli;

/// <summary>
/// `recycle merge --config FILE.yml` through the real process: a mergekit config merges exactly as the equivalent
/// flags, its notes go to standard error, and a bad config or a flag it replaces is one error line, exit 1.
/// </summary>
[TestClass]
public sealed class MergeConfigCliTests
{
    private static readonly string Models = Path.GetFullPath(Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-merge", "cnn", "default"));

    [TestMethod]
    public void ConfigMergesAsTheEquivalentFlags()
    {
        var folder = Directory.CreateTempSubdirectory("recycle-config-").FullName;
        try
        {
            var config = Path.Combine(folder, "ties.yml");
            File.WriteAllText(config, $"""
                merge_method: ties
                base_model: {Path.Combine(Models, "base.onnx")}
                models:
                  - model: {Path.Combine(Models, "base.onnx")}
                  - model: {Path.Combine(Models, "ft1.onnx")}
                    parameters: {"{"}weight: 1.0, density: 0.5{"}"}
                  - model: {Path.Combine(Models, "ft2.onnx")}
                    parameters: {"{"}weight: 0.5, density: 0.3{"}"}
                parameters:
                  lambda: 0.8
                tokenizer_source: base
                """);
            var fromConfig = Path.Combine(folder, "config.onnx");
            var fromFlags = Path.Combine(folder, "flags.onnx");
            var (exit, _, stderr, _) = RecycleProcess.Run(["merge", "--config", config, "-o", fromConfig]);
            Assert.AreEqual(0, exit, stderr);
            StringAssert.Contains(stderr, "note: ", "the ignored tokenizer_source is noted");
            (exit, _, stderr, _) = RecycleProcess.Run(["merge", Path.Combine(Models, "ft1.onnx"), Path.Combine(Models, "ft2.onnx"), "--base", Path.Combine(Models, "base.onnx"),
                "-m", "ties", "--weights", "1.0", "0.5", "--param", "density=0.5,0.3", "--lambda", "0.8", "-o", fromFlags]);
            Assert.AreEqual(0, exit, stderr);
            using var a = OnnxModel.Open(fromConfig);
            using var b = OnnxModel.Open(fromFlags);
            foreach (var tensor in a.Tensors.Where(t => t.DataType == OnnxDataType.Float))
            {
                CollectionAssert.AreEqual(b.Tensors.Single(t => t.Path == tensor.Path).ReadFloat32(), tensor.ReadFloat32(), tensor.Name);
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void BadConfigsAndReplacedFlagsAreOneLine()
    {
        var folder = Directory.CreateTempSubdirectory("recycle-config-").FullName;
        try
        {
            var config = Path.Combine(folder, "bad.yml");
            File.WriteAllText(config, $"merge_method: ties\nbase_model: base.onnx\nmodels: [{Path.Combine(Models, "ft1.onnx")}]\n");
            var output = Path.Combine(folder, "out.onnx");
            AssertOneLine(["merge", "--config", config, "-o", output], $"error: {config}:2: base_model: base.onnx not found");
            File.WriteAllText(config, $"merge_method: linear\nmodels:\n  - model: {Path.Combine(Models, "ft1.onnx")}\n    parameters:\n      weight: -x\n");
            AssertOneLine(["merge", "--config", config, "-o", output], $"error: {config}:5: ");
            File.WriteAllText(config, $"merge_method: linear\nmodels:\n  - model: {Path.Combine(Models, "ft1.onnx")}\n");
            AssertOneLine(["merge", "--config", config, "-m", "ties", "-o", output], $"error: --config {config} sets the method, base and parameters: drop --method");
            AssertOneLine(["merge", Path.Combine(Models, "ft1.onnx"), "--config", config, "-o", output], $"error: --config {config} names the models to merge");
            AssertOneLine(["merge", "-o", output], "error: give the models to merge, or --config FILE.yml");
            Assert.IsFalse(File.Exists(output));
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
