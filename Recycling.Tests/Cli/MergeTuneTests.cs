using System.Globalization;
using System.Text.Json;
using Recycling.Cli;
using Recycling.Onnx;
using static Recycling.Tests.Cli.ZooSplit;

namespace Recycling.Tests.Cli;

/// <summary>
/// `merge --tune`: the values chosen on val are written into the model and its lineage, the written model scores what
/// the tuning measured in memory (checked by `eval` on the file), and it is at least as good on val as the method's
/// default merge (also written and evaluated from its file). Bad specifications are one line, before any work.
/// </summary>
[TestClass]
public sealed class MergeTuneTests
{
    private static string _folder = "";

    private static string Val => Path.Combine(_folder, "val");

    private static string[] Targets => [.. new[] { "cnn_target_diwa00", "cnn_target_diwa01", "cnn_target_rat08", "cnn_target_rat09" }.Select(Model)];

    [ClassInitialize]
    public static void WriteSplit(TestContext context)
    {
        _ = context;
        RequireZoo();
        _folder = Directory.CreateTempSubdirectory("recycle-tune-").FullName;
        Write(Val, 300);
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
    public void TunedLambdaIsWrittenAndAtLeastAsGoodAsTheDefaultOnVal()
    {
        var tuned = Path.Combine(_folder, "ta.onnx");
        var (stdout, _) = Run(0, [.. Targets, "--base", Model("cnn_base"), "-m", "task-arithmetic", "--tune", "lambda", "--val", Val, "--tune-points", "5", "--tune-rounds", "2", "-o", tuned, "--json"]);
        using var json = JsonSchemaCheck.Validate("merge", stdout);
        var tuning = json.RootElement.GetProperty("tuning");
        double lambda = tuning.GetProperty("chosen").GetProperty("lambda").GetDouble();
        Assert.AreEqual(1.0, tuning.GetProperty("defaults").GetProperty("lambda").GetDouble());
        var points = tuning.GetProperty("points").EnumerateArray().ToList();
        // The default, 5 grid values (1 among them), then at most 2 per round.
        Assert.IsTrue(points.Count is >= 5 and <= 9, $"{points.Count} candidates");
        var best = points.Single(p => p.GetProperty("values").GetProperty("lambda").GetDouble() == lambda);
        double tunedVal = best.GetProperty("val").GetProperty("accuracy").GetDouble();
        Assert.AreEqual(points.Max(p => p.GetProperty("val").GetProperty("accuracy").GetDouble()), tunedVal);
        StringAssert.Contains(json.RootElement.GetProperty("method").GetString(), $"lambda {lambda.ToString(CultureInfo.InvariantCulture)}");

        // The written model is the chosen candidate, its lineage says so, and the curve lies beside it.
        Assert.AreEqual(tunedVal, Accuracy(tuned), 1e-9);
        using (var model = OnnxModel.Open(tuned))
        {
            using var lineage = JsonDocument.Parse(model.Metadata["recycling.tuning"]);
            Assert.AreEqual(lambda, lineage.RootElement.GetProperty("values").GetProperty("lambda").GetDouble());
            Assert.AreEqual("accuracy", lineage.RootElement.GetProperty("metric").GetString());
            Assert.AreEqual(Val, lineage.RootElement.GetProperty("data").GetString());
        }

        Assert.HasCount(points.Count + 1, File.ReadAllLines(Path.Combine(_folder, "ta.tune.csv")));
        Assert.IsGreaterThan(1000L, new FileInfo(Path.Combine(_folder, "ta.tune.png")).Length);

        // The default (λ = 1 over 4 task vectors), merged to a file and evaluated on its own.
        var plain = Path.Combine(_folder, "ta-default.onnx");
        Run(0, [.. Targets, "--base", Model("cnn_base"), "-m", "task-arithmetic", "-o", plain]);
        double defaultVal = Accuracy(plain);
        Assert.IsGreaterThanOrEqualTo(defaultVal, tunedVal);
        Console.WriteLine($"task arithmetic on 4 CNN targets, 300 val samples: default λ 1 {defaultVal:F2}%, tuned λ {lambda} {tunedVal:F2}%");
    }

    /// <summary>TIES with λ and density tuned together, chosen by log-loss: the printed curve has both columns and the best is the lowest loss.</summary>
    [TestMethod]
    public void TwoParametersByLoss()
    {
        var output = Path.Combine(_folder, "ties.onnx");
        var (stdout, _) = Run(0, [.. Targets.Take(3), "--base", Model("cnn_base"), "-m", "ties", "--tune", "lambda=0.2:1.4,density", "--val", Val, "--metric", "loss",
            "--tune-points", "3", "--tune-rounds", "1", "-o", output, "--json"]);
        using var json = JsonSchemaCheck.Validate("merge", stdout);
        var tuning = json.RootElement.GetProperty("tuning");
        CollectionAssert.AreEqual(new[] { "lambda", "density" }, tuning.GetProperty("parameters").EnumerateArray().Select(p => p.GetString()).ToArray());
        var losses = tuning.GetProperty("points").EnumerateArray().Select(p => p.GetProperty("val").GetProperty("logLoss").GetDouble()).ToList();
        var chosen = tuning.GetProperty("chosen");
        var best = tuning.GetProperty("points").EnumerateArray().First(p =>
            p.GetProperty("values").GetProperty("lambda").GetDouble() == chosen.GetProperty("lambda").GetDouble()
            && p.GetProperty("values").GetProperty("density").GetDouble() == chosen.GetProperty("density").GetDouble());
        Assert.AreEqual(losses.Min(), best.GetProperty("val").GetProperty("logLoss").GetDouble());
        foreach (var p in tuning.GetProperty("points").EnumerateArray().Where(p => !p.GetProperty("refinement").GetBoolean() && p.GetProperty("values").GetProperty("lambda").GetDouble() != 1))
        {
            Assert.IsTrue(p.GetProperty("values").GetProperty("lambda").GetDouble() is 0.2 or 0.8 or 1.4, p.ToString());
        }
    }

    [TestMethod]
    public void BadSpecificationsAreOneLine()
    {
        string[] merge = [.. Targets.Take(2), "--base", Model("cnn_base"), "-o", Path.Combine(_folder, "bad.onnx")];
        AssertError([.. merge, "-m", "ties", "--tune", "lambda,speed", "--val", Val], "error: --tune speed: not a tunable parameter; a method's numeric parameters are: ");
        AssertError([.. merge, "-m", "average", "--tune", "density", "--val", Val], "error: --tune density: --method linear does not read it (it applies to ");
        AssertError([.. merge, "-m", "task-arithmetic", "--tune", "lambda"], "error: --tune needs --val DATA: the labelled data the values are chosen on");
        AssertError([.. merge, "-m", "task-arithmetic", "--tune", "lambda=2:1", "--val", Val], "error: --tune lambda=2:1: give LOW:HIGH with LOW <= HIGH, both finite");
        AssertError([.. merge, "-m", "ties", "--tune", "density=0.5:1.5", "--val", Val], "error: --tune density=0.5:1.5: give LOW:HIGH with LOW <= HIGH, both in [0, 1]");
        AssertError([.. merge, "-m", "ties", "--tune", "lambda=a:b", "--val", Val], "error: --tune lambda=a:b: give a range as NAME=LOW:HIGH, e.g. lambda=0:1.5");
        AssertError([.. merge, "-m", "ties", "--tune", "lambda,,density", "--val", Val], "error: --tune lambda,,density: give parameter names separated by commas");
        AssertError([.. merge, "-m", "ties", "--tune", "lambda", "--val", Val, "--metric", "f1"], "error: --metric f1: use accuracy or loss");
        AssertError([.. merge, "-m", "ties", "--tune", "lambda", "--val", Val, "--tune-points", "1"], "error: --tune-points 1: at least 2 values per parameter");
        AssertError([.. merge, "-m", "ties", "--tune", "lambda,density", "--val", Val, "--tune-points", "1000"], "error: --tune-points 1000: 1000^2 = 1,000,000 candidates; the grid holds at most 10,000");
        AssertError([.. merge, "-m", "ties", "--tune", "lambda", "--val", Val, "--tune-rounds", "1000000000"], "error: --tune-rounds 1000000000: use 0 to 30");
        AssertError([.. merge, "-m", "ties", "--tune", "lambda", "--val", Path.Combine(_folder, "missing")], "error: ");
        AssertError([.. merge, "-m", "ties", "--tune", "lambda", "--val", Val, "--plot", Path.Combine(_folder, "bad.onnx")], $"error: --plot {Path.Combine(_folder, "bad.onnx")}: is the merged model's path (-o)");
        Assert.IsFalse(File.Exists(Path.Combine(_folder, "bad.onnx")));

        // Tuning options without --tune are ignored with a warning.
        var (_, error) = Run(0, [.. merge, "-m", "task-arithmetic", "--lambda", "0.3", "--metric", "loss"]);
        Assert.AreEqual("warning: --metric is ignored without --tune", error.Trim());
    }

    private static double Accuracy(string model)
    {
        var (stdout, _) = Run(0, "eval", model, "-d", Val, "--json");
        using var json = JsonDocument.Parse(stdout);
        return json.RootElement[0].GetProperty("accuracy").GetDouble();
    }

    private static void AssertError(string[] args, string start)
    {
        var (_, error) = Run(1, ["merge", .. args]);
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.HasCount(1, lines, error);
        StringAssert.StartsWith(lines[0], start);
    }

    private static (string Stdout, string Stderr) Run(int expected, params string[] args)
    {
        if (args[0] != "eval" && args[0] != "merge")
        {
            args = ["merge", .. args];
        }

        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.AreEqual(expected, RecycleCli.Run(args, stdout, stderr), $"recycle {string.Join(' ', args)}: {stderr}");
        return (stdout.ToString(), stderr.ToString());
    }
}
