using Recycling.Cli;
using static Recycling.Tests.Cli.ZooSplit;

namespace Recycling.Tests.Cli;

/// <summary>
/// `interpolate -o` and `diversity -o`: a folder receives CSV, PNG and JSON; a file's extension picks one format; other
/// extensions and inputs named as outputs are one error line naming -o, before any work; --csv/--plot still work.
/// </summary>
[TestClass]
public sealed class ReportOutputTests
{
    private static string _folder = "";

    private static string Small => Path.Combine(_folder, "small");

    [ClassInitialize]
    public static void WriteSplit(TestContext context)
    {
        _ = context;
        RequireZoo();
        _folder = Directory.CreateTempSubdirectory("recycle-report-").FullName;
        Write(Small, 40);
    }

    [ClassCleanup]
    public static void DeleteFolder()
    {
        if (Directory.Exists(_folder))
        {
            Directory.Delete(_folder, recursive: true);
        }
    }

    [TestMethod]
    public void AFolderReceivesCsvPngAndJson()
    {
        var folder = Path.Combine(_folder, "lmc");
        var (stdout, _) = Run(0, "interpolate", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "-d", Small, "--points", "3", "-o", folder);
        StringAssert.Contains(stdout, "loss barrier");
        var csv = File.ReadAllLines(Path.Combine(folder, "interpolation.csv"));
        Assert.AreEqual("model_a,model_b,lambda,accuracy,loss", csv[0]);
        Assert.HasCount(4, csv);
        AssertPng(Path.Combine(folder, "interpolation.png"));
        using var json = JsonSchemaCheck.Validate("interpolate", File.ReadAllText(Path.Combine(folder, "interpolation.json")));
        Assert.AreEqual(3, json.RootElement.GetProperty("points").GetArrayLength());
        // The file's numbers are the printed JSON's.
        var (printed, _) = Run(0, "interpolate", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "-d", Small, "--points", "3", "--json");
        Assert.AreEqual(printed.Trim(), File.ReadAllText(Path.Combine(folder, "interpolation.json")).Trim());

        var diversity = Path.Combine(_folder, "div");
        Run(0, "diversity", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), Model("cnn_target_rat08"), "-d", Small, "-o", diversity);
        Assert.HasCount(4, File.ReadAllLines(Path.Combine(diversity, "diversity.csv")));
        Assert.HasCount(4, File.ReadAllLines(Path.Combine(diversity, "diversity_disagreement.csv")));
        AssertPng(Path.Combine(diversity, "diversity.png"));
        using var matrix = JsonSchemaCheck.Validate("diversity", File.ReadAllText(Path.Combine(diversity, "diversity.json")));
        Assert.AreEqual(3, matrix.RootElement.GetProperty("ratioError").GetArrayLength());
    }

    [TestMethod]
    public void TheExtensionPicksOneFormat()
    {
        var png = Path.Combine(_folder, "curve.png");
        Run(0, "interpolate", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "-d", Small, "--points", "2", "-o", png);
        AssertPng(png);
        var json = Path.Combine(_folder, "matrix.json");
        Run(0, "diversity", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "-d", Small, "-o", json);
        using (JsonSchemaCheck.Validate("diversity", File.ReadAllText(json)))
        {
        }

        var csv = Path.Combine(_folder, "matrix.csv");
        Run(0, "diversity", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "-d", Small, "-o", csv);
        Assert.IsTrue(File.Exists(Path.Combine(_folder, "matrix_disagreement.csv")));
        Assert.IsFalse(File.Exists(Path.Combine(_folder, "matrix.png")));

        // The older names still work, hidden from help.
        var legacy = Path.Combine(_folder, "legacy.csv");
        Run(0, "interpolate", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "-d", Small, "--points", "2", "--csv", legacy);
        Assert.HasCount(3, File.ReadAllLines(legacy));
        var (help, _) = Run(0, "interpolate", "--help");
        StringAssert.Contains(help, "-o, --output");
        Assert.DoesNotContain("--csv", help);
    }

    [TestMethod]
    public void BadOutputsAreOneLineBeforeAnyWork()
    {
        var text = Path.Combine(_folder, "curve.txt");
        var (_, error) = Run(1, "interpolate", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "-d", Small, "-o", text);
        Assert.AreEqual($"error: --output {text}: give a .csv, .png or .json file, or a folder (a name without extension)", error.Trim());
        Assert.IsFalse(File.Exists(text));

        // An input reached through a link with a report's extension is refused by name, and left as it was.
        var model = Model("cnn_target_diwa01");
        var bytes = File.ReadAllBytes(model);
        var link = Path.Combine(_folder, "model-link.png");
        File.CreateSymbolicLink(link, model);
        (_, error) = Run(1, "interpolate", Model("cnn_target_diwa00"), model, "-d", Small, "-o", link);
        Assert.AreEqual(1, error.Trim().Split('\n').Length, error);
        StringAssert.StartsWith(error, $"error: --output {link}: ");
        CollectionAssert.AreEqual(bytes, File.ReadAllBytes(model));

        var file = Path.Combine(_folder, "plain-file");
        File.WriteAllText(file, "x");
        (_, error) = Run(1, "interpolate", Model("cnn_target_diwa00"), Model("cnn_target_diwa01"), "-d", Small, "-o", file);
        Assert.AreEqual($"error: --output {file}: is a file, not a folder", error.Trim());
    }

    private static void AssertPng(string path)
    {
        var bytes = File.ReadAllBytes(path);
        CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4], path);
    }

    private static (string Stdout, string Stderr) Run(int expected, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.AreEqual(expected, RecycleCli.Run(args, stdout, stderr), $"recycle {string.Join(' ', args)}: {stderr}");
        return (stdout.ToString(), stderr.ToString());
    }
}
