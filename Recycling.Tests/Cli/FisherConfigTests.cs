using Recycling.Onnx;
using Recycling.Tests.Zoo;

namespace Recycling.Tests.Cli;

/// <summary>
/// Fisher merging from a mergekit-style config: each model's Fisher file under its <c>parameters: {fisher: FILE}</c>
/// (relative to the config) merges bit for bit as <c>--fisher</c> does; a missing, misplaced or unreadable Fisher
/// entry is one error line naming the file, line and key.
/// </summary>
[TestClass]
public sealed class FisherConfigTests
{
    private static string Zoo(string file) => Path.Combine(ZooPaths.ModelsDirectory, file);

    [TestMethod]
    public void ConfigFisherFilesMergeAsTheFlagsBitForBit()
    {
        var folder = Directory.CreateTempSubdirectory("recycle-fisher-config-").FullName;
        try
        {
            string[] names = ["cnn_target_diwa00", "cnn_target_diwa01", "cnn_target_rat08"];
            string Relative(string file) => Path.GetRelativePath(folder, Zoo(file));
            var config = Path.Combine(folder, "fisher.yml");
            File.WriteAllText(config, $"""
                merge_method: fisher
                models:
                  - model: {Relative(names[0] + ".onnx")}
                    parameters: {"{"}fisher: {Relative(names[0] + ".fisher.npz")}{"}"}
                  - model: {Relative(names[1] + ".onnx")}
                    parameters:
                      weight: 0.5
                      fisher: {Relative(names[1] + ".fisher.npz")}
                  - model: {Relative(names[2] + ".onnx")}
                    parameters: {"{"}weight: 2, fisher: {Relative(names[2] + ".fisher.npz")}{"}"}
                parameters:
                  fisher_floor: 1e-5
                """);
            var fromConfig = Path.Combine(folder, "config.onnx");
            var fromFlags = Path.Combine(folder, "flags.onnx");
            var (exit, stdout, stderr) = Run(["merge", "--config", config, "-o", fromConfig]);
            Assert.AreEqual(0, exit, stderr + stdout);
            (exit, stdout, stderr) = Run(["merge", .. names.Select(n => Zoo(n + ".onnx")), "-m", "fisher", "--fisher", .. names.Select(n => Zoo(n + ".fisher.npz")),
                "--weights", "1", "0.5", "2", "--param", "fisher_floor=1e-5", "-o", fromFlags]);
            Assert.AreEqual(0, exit, stderr + stdout);

            using var a = OnnxModel.Open(fromConfig);
            using var b = OnnxModel.Open(fromFlags);
            using var first = OnnxModel.Open(Zoo(names[0] + ".onnx"));
            var floats = a.Tensors.Where(t => t.DataType == OnnxDataType.Float).ToList();
            Assert.IsGreaterThan(4, floats.Count);
            var differsFromFirst = false;
            foreach (var tensor in floats)
            {
                var bytes = tensor.ReadRawBytes();
                CollectionAssert.AreEqual(b.Tensors.Single(t => t.Path == tensor.Path).ReadRawBytes(), bytes, tensor.Name);
                differsFromFirst |= !first.Tensors.Single(t => t.Path == tensor.Path).ReadRawBytes().AsSpan().SequenceEqual(bytes);
            }

            Assert.IsTrue(differsFromFirst, "the merge is not just the first model");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void MissingOrMisplacedFisherEntriesNameFileLineAndKey()
    {
        var folder = Directory.CreateTempSubdirectory("recycle-fisher-config-").FullName;
        try
        {
            var config = Path.Combine(folder, "bad.yml");
            var output = Path.Combine(folder, "out.onnx");
            string a = Zoo("cnn_target_diwa00.onnx"), b = Zoo("cnn_target_diwa01.onnx"), fa = Zoo("cnn_target_diwa00.fisher.npz");

            File.WriteAllText(config, $"merge_method: fisher\nmodels:\n  - model: {a}\n    parameters: {{fisher: {fa}}}\n  - model: {b}\n");
            AssertOneLine(["merge", "--config", config, "-o", output], $"error: {config}:5: models[1].parameters.fisher: fisher needs a Fisher file for every model");

            File.WriteAllText(config, $"merge_method: fisher\nmodels:\n  - model: {a}\n    parameters: {{fisher: {fa}}}\n  - model: {b}\n    parameters:\n      fisher: missing.npz\n");
            AssertOneLine(["merge", "--config", config, "-o", output], $"error: {config}:7: models[1].parameters.fisher: missing.npz not found");

            File.WriteAllText(config, $"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{fisher: {fa}}}\n  - model: {b}\n");
            AssertOneLine(["merge", "--config", config, "-o", output], $"error: {config}:4: models[0].parameters.fisher: linear uses no Fisher information");

            File.WriteAllText(config, $"merge_method: fisher\nmodels:\n  - model: {a}\n  - model: {b}\nparameters:\n  fisher: {fa}\n");
            AssertOneLine(["merge", "--config", config, "-o", output], $"error: {config}:6: parameters.fisher: Fisher files are per model");

            File.WriteAllText(config, $"merge_method: fisher\nmodels:\n  - model: {a}\n    parameters:\n      fisher:\n        - filter: conv\n          value: 1\n");
            AssertOneLine(["merge", "--config", config, "-o", output], $"error: {config}:6: models[0].parameters.fisher: one file per model");

            File.WriteAllText(config, $"merge_method: fisher\nmodels:\n  - model: {a}\n    parameters: {{fisher: {fa}}}\n");
            AssertOneLine(["merge", "--config", config, "--fisher", fa, "-o", output], $"error: --config {config} sets the method, base and parameters: drop --fisher");
            Assert.IsFalse(File.Exists(output));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static (int Exit, string Stdout, string Stderr) Run(string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var exit = Recycling.Cli.RecycleCli.Run(args, stdout, stderr);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    private static void AssertOneLine(string[] args, string expectedStart)
    {
        var (exit, _, stderr) = Run(args);
        var command = string.Join(' ', args);
        Assert.AreEqual(1, exit, $"recycle {command}: {stderr}");
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.HasCount(1, lines, $"recycle {command}:\n{stderr}");
        StringAssert.StartsWith(lines[0], expectedStart, $"recycle {command}");
    }
}
