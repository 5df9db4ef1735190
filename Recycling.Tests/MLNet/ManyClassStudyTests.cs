using System.Text.Json;
using Recycling.MLNet.Data;
using Recycling.MLNet.Study;
using Recycling.Onnx.Numpy;
using Recycling.Tests.Training;
using Recycling.Training;
using Recycling.Training.Foundation;

namespace Recycling.Tests.MLNet;

/// <summary>
/// The recycling study on a zoo of 26 classes (as the MiniLM zoo's noun supersenses; the study once probed over 10)
/// and with a degenerate Fisher file (all zero, or an infinite or NaN entry, as the full MiniLM build wrote): real
/// small models (the BatchNorm CNN fixture fine-tuned by <see cref="FineTuner"/>, 26-way heads), real Fisher files
/// (<see cref="FisherFile"/>), ONNX Runtime scoring. The zoo is built once per class (seconds).
/// </summary>
[TestClass]
public sealed class ManyClassStudyTests
{
    private const int Classes = 26;
    private const string Architecture = "tiny26";
    private const string Ood = "the same images with three times the pixel noise (in domain: noise 1)";

    private static readonly StudyOptions Fast = new() { InterpolationPoints = 3, TaskArithmeticLambdas = [0.5], TiesLambdas = [1.0], DareLambdas = [0.05] };

    private static string _folder = "";
    private static string _zooJson = "";
    private static ArchitectureStudy _healthy = null!;

    [ClassInitialize]
    public static void Build(TestContext context)
    {
        _ = context;
        _folder = Directory.CreateTempSubdirectory("recycling-26-classes-").FullName;
        var auxiliaries = TinyZoo.Create(Path.Combine(_folder, "aux"), ingredients: 2);
        var train = WriteSplit(Path.Combine(_folder, "probe_train"), 128, seed: 11, noise: 1);
        WriteSplit(Path.Combine(_folder, "val"), 64, seed: 12, noise: 1);
        WriteSplit(Path.Combine(_folder, "ood_test"), 64, seed: 13, noise: 3);

        // The base: the CNN with a 26-way head (LP-FT); two DiWA targets from it and one from an auxiliary body with a 26-way head of its own.
        var head = new HeadSpec { Classes = Classes, At = TinyZooFixture.FeatureAt, Init = HeadInit.Probe };
        var basePath = FineTune(TinyZoo.BaseFixture, train, "base.onnx", seed: 0, lr: 0.01, head);
        var targets = new[]
        {
            (Name: "diwa00", Init: "base", Path: FineTune(basePath, train, "diwa00.onnx", seed: 1, lr: 0.02, null)),
            (Name: "diwa01", Init: "base", Path: FineTune(basePath, train, "diwa01.onnx", seed: 2, lr: 0.05, null)),
            (Name: "rat02", Init: "aux0", Path: FineTune(auxiliaries.Ingredients[0], train, "rat02.onnx", seed: 3, lr: 0.02, head)),
        };
        foreach (var t in targets)
        {
            var fisher = Path.Combine(_folder, $"{t.Name}.fisher.npz");
            FisherFile.Compute(new FisherOptions { Model = t.Path, Data = train, Samples = 16, Output = fisher, Seed = 5 });
            FoundationZooBuilder.CompleteFisher(t.Path, fisher);
        }

        object Model(string name, string file, string role, string? init, int classes, string? fisher) =>
            new { name, file, architecture = Architecture, role, init, task = role, num_classes = classes, fisher };
        var models = new List<object> { Model("base", basePath, "base", null, Classes, null) };
        models.AddRange(auxiliaries.Ingredients.Select((a, i) => Model($"aux{i}", a, "auxiliary", "base", 4, null)));
        models.AddRange(targets.Select(t => Model(t.Name, t.Path, "target", t.Init, Classes, $"{t.Name}.fisher.npz")));
        _zooJson = WriteZoo("zoo.json", models);
        _healthy = RecyclingStudy.Run(ModelZoo.Open(_zooJson), Architecture, Fast);
    }

    [ClassCleanup]
    public static void Cleanup() => Directory.Delete(_folder, recursive: true);

    /// <summary>
    /// Every row of the study on 26 classes, the probes among them: their classifiers have 26 outputs and reach
    /// labels above 9 (a probe over 10 classes refused the labels 10..25, so the study stopped).
    /// </summary>
    [TestMethod]
    public void TheStudyProbesOverTheTargetsClasses()
    {
        var zoo = ModelZoo.Open(_zooJson);
        Assert.IsGreaterThanOrEqualTo(20, zoo.Split("val").ClassCount, "labels reach well above 9");
        var methods = _healthy.Rows.Select(r => r.Method).ToList();
        foreach (var expected in new[] { "best individual (by val)", "ensemble all (mean probabilities)", "uniform soup (DiWA)", "ratatouille uniform", "task arithmetic", "Fisher merge", "fusing + LP", "base + LP" })
        {
            CollectionAssert.Contains(methods, expected);
        }

        Assert.IsFalse(_healthy.Notes.Any(n => n.StartsWith("Fisher merge skipped", StringComparison.Ordinal)), string.Join("\n", _healthy.Notes));
        Assert.HasCount(4, _healthy.Ranking, "base, two auxiliaries and the fused body");

        // The study's base + LP is the probe over the targets' 26 classes: the same probe fitted here on the same features.
        var probe = Recycling.MLNet.Probing.BaseRanking.Rank([zoo.Model("base").Path], includeFused: false, zoo.FeatureOutput, zoo.Split("probe_train"), [zoo.Split("val"), zoo.Split("ood_test")], classCount: Classes)[0];
        var row = _healthy.Rows.Single(r => r.Method == "base + LP");
        Assert.AreEqual(probe.Evaluations["val"].Accuracy, row.Val, 1e-9);
        Assert.AreEqual(probe.Evaluations["ood_test"].Accuracy, row.Ood, 1e-9);
        // 64 val images of 26 classes: above chance is what this tiny set can show (the rows' presence and the equality above are the checks).
        Assert.IsGreaterThan(100.0 / Classes, row.Val, "the probe over 26 classes is above chance (3.8%)");

        var report = Path.Combine(_folder, "report");
        StudyReport.Write(report, [_healthy], zoo, _healthy.Seconds);
        var readme = File.ReadAllText(Path.Combine(report, "README.md"));
        StringAssert.Contains(readme, $"OOD test: {Ood})");

        // A zoo built in .NET records no PyTorch reference: the tables have no reference columns and no empty cells.
        StringAssert.Contains(readme, "| method | detail | val | OOD |\n");
        StringAssert.Contains(readme, "| rank | model | probe val | probe OOD |\n");
        StringAssert.Contains(readme, "| mean individual | 3 targets |");
        StringAssert.Contains(readme, "| uniform soup (DiWA) | 2 targets from the base |");
        Assert.DoesNotContain("torch", readme);
        Assert.IsFalse(readme.Split('\n').Any(l => l.StartsWith('|') && l.Contains("|  |", StringComparison.Ordinal)), readme);
    }

    /// <summary>
    /// A target's Fisher all zero, or with one infinite or NaN entry: the study skips the Fisher row with a note
    /// naming the problem, and every other row is the healthy study's, value for value.
    /// </summary>
    [TestMethod]
    [DataRow("zero", 0f, "L2 norm 0")]
    [DataRow("infinite", float.PositiveInfinity, "L2 norm Infinity")]
    [DataRow("nan", float.NaN, "L2 norm NaN")]
    public void ADegenerateFisherLosesOnlyTheFisherRow(string name, float value, string expected)
    {
        var healthy = NpyFile.ReadNpz(Path.Combine(_folder, "diwa01.fisher.npz"));
        var broken = Path.Combine(_folder, $"diwa01.{name}.fisher.npz");
        FisherFile.WriteNpz(broken, healthy.Select((p, i) =>
        {
            var values = p.Value.ToSingleArray();
            if (value == 0)
            {
                Array.Clear(values);
            }
            else if (i == 0)
            {
                values[0] = value;
            }

            return (p.Key, p.Value.Shape.ToArray(), values);
        }));

        using var json = JsonDocument.Parse(File.ReadAllText(_zooJson));
        var models = json.RootElement.GetProperty("models").EnumerateArray().Select(m =>
        {
            var copy = JsonSerializer.Deserialize<Dictionary<string, object?>>(m.GetRawText())!;
            if (m.GetProperty("name").GetString() == "diwa01")
            {
                copy["fisher"] = Path.GetFileName(broken);
            }

            return (object)copy;
        }).ToList();
        var study = RecyclingStudy.Run(ModelZoo.Open(WriteZoo($"zoo-{name}.json", models)), Architecture, Fast);

        var note = study.Notes.SingleOrDefault(n => n.StartsWith("Fisher merge skipped", StringComparison.Ordinal));
        Assert.IsNotNull(note, string.Join("\n", study.Notes));
        StringAssert.Contains(note, "model 2", note);
        StringAssert.Contains(note, expected, note);
        var expectedRows = _healthy.Rows.Where(r => r.Method != "Fisher merge").ToList();
        CollectionAssert.AreEqual(expectedRows.Select(r => (r.Method, r.Detail, r.Val, r.Ood)).ToList(), study.Rows.Select(r => (r.Method, r.Detail, r.Val, r.Ood)).ToList());
    }

    private static string FineTune(string model, string train, string file, int seed, double lr, HeadSpec? head) =>
        TinyZoo.FineTune(model, train, Path.Combine(_folder, file), seed, lr, epochs: 1, head);

    private static string WriteZoo(string file, IReadOnlyList<object> models)
    {
        var path = Path.Combine(_folder, file);
        File.WriteAllText(path, JsonSerializer.Serialize(new
        {
            features = TinyZooFixture.FeatureAt,
            accuracy_source = "nothing (no accuracy recorded)",
            ood_description = Ood,
            data = new Dictionary<string, object>
            {
                ["probe_train_images"] = new { file = "probe_train_images.npy" },
                ["val_images"] = new { file = "val_images.npy" },
                ["ood_test_images"] = new { file = "ood_test_images.npy" },
            },
            models,
        }));
        return path;
    }

    /// <summary>3×8×8 images, each channel a random offset in [−1, 1] plus uniform pixel noise; the class is channel 0's offset cut into 26 equal bins.</summary>
    private static string WriteSplit(string prefix, int count, int seed, double noise)
    {
        var random = new Random(seed);
        const int pixels = 8 * 8;
        var images = new float[count * 3 * pixels];
        var labels = new long[count];
        for (var s = 0; s < count; s++)
        {
            for (var c = 0; c < 3; c++)
            {
                var offset = (random.NextDouble() * 2) - 1;
                if (c == 0)
                {
                    labels[s] = Math.Min(Classes - 1, (int)((offset + 1) / 2 * Classes));
                }

                for (var p = 0; p < pixels; p++)
                {
                    images[(((s * 3) + c) * pixels) + p] = (float)(offset + (noise * (random.NextDouble() - 0.5)));
                }
            }
        }

        NpyFile.Write(prefix + "_images.npy", NpyArray.From<float>(images, count, 3, 8, 8));
        NpyFile.Write(prefix + "_labels.npy", NpyArray.From<long>(labels, count));
        return prefix;
    }
}
