using System.Text.Json;
using System.Text.RegularExpressions;
using Recycling.Cli.Commands;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Tests.Cli;
using Recycling.Training;
using Recycling.Training.Recipes;
using static Recycling.Tests.Training.TinyZooFixture;

namespace Recycling.Tests.Training;

/// <summary>
/// Recipe files (`recycle recipe run FILE.yml`): parse errors name the file, line and key; paths are relative to the
/// file; a tiny recipe of each kind runs on the tiny zoo; lo-fi's soups are the averages of its runs; the shipped
/// example recipes parse and a tiny version of each runs on the real zoo.
/// </summary>
[TestClass]
public sealed class RecipeFileTests
{
    private static TinyZooFixture _fixture = null!;

    [ClassInitialize]
    public static void Build(TestContext context)
    {
        _ = context;
        _fixture = new TinyZooFixture("recipe-files", ingredients: 2);
    }

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    /// <summary>The tiny zoo's files as a recipe in <paramref name="subfolder"/> sees them (relative paths).</summary>
    private static string Relative(string subfolder, string path) => Path.GetRelativePath(Path.Combine(_fixture.Folder, subfolder), path).Replace('\\', '/');

    private static string Write(string subfolder, string name, string text)
    {
        var folder = Path.Combine(_fixture.Folder, subfolder);
        Directory.CreateDirectory(folder);
        var path = Path.Combine(folder, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static string TinyData(string subfolder, bool train = true) =>
        $"data:\n{(train ? $"  train: {Relative(subfolder, _fixture.Zoo.Train)}\n" : "")}  val: {Relative(subfolder, _fixture.Zoo.ValidationPrefix)}\n";

    private static string TinyFinetune => $"finetune:\n  epochs: 1\n  batch_size: 16\n  lr: 0.01\n  at: \"{FeatureAt}\"\n";

    [TestMethod]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\nepochs: 3\n", 4, "epochs: unknown key")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\nDATA\nsoups: [uniform]\n", 7, "soups: a fuse recipe does not use soups")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\nDATA\nfinetune:\n  epochs: abc\n", 8, "finetune.epochs: abc is not a whole number")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\nDATA\nfinetune:\n  lr: -1\n", 8, "finetune.lr: -1 is below the minimum 0")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\nDATA\nfinetune:\n  lr: 0\n", 8, "finetune.lr: must be above 0")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\nDATA\nfinetune:\n  optimizer: rmsprop\n", 8, "finetune.optimizer: rmsprop is not one of sgd, adam, adamw")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\nDATA\nfinetune:\n  momentum: 0.9\n", 8, "finetune.momentum: unknown key")]
    [DataRow("recipe: fuse\nbase: missing.onnx\nauxiliaries: [A1, A2]\nDATA", 2, "base: missing.onnx not found (paths are relative to the recipe file)")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries:\n  - A1\n  - nothing*.onnx\nDATA", 5, "auxiliaries: 'nothing*.onnx' matches no file")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1]\nDATA", 3, "auxiliaries: at least 2 models (got 1)")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\ndata:\n  train: nowhere/split\n", 5, "data.train: nowhere/split: no data found")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\ndata:\n  val: VAL\n", 4, "data.train: missing: a fuse recipe fine-tunes on data.train")]
    [DataRow("recipe: fuse\nauxiliaries: [A1, A2]\nDATA", 1, "base: missing: a fuse recipe needs base")]
    [DataRow("recipe: fuse\nbase: B\nauxiliaries: [A1, A2]\nDATA\nbaselines: [intertraining]\n", 7, "baselines: fuse always fine-tunes the base")]
    [DataRow("recipe: lofi\nbase: B\nDATA\nseeds: 1\n", 6, "seeds: 1 is below the minimum 2")]
    [DataRow("recipe: lofi\nbase: B\nDATA\nseeds: [0, 1, 0]\n", 6, "seeds: a seed is listed twice")]
    [DataRow("recipe: lofi\nbase: B\nDATA\nsoups: [greedy, greedy_ties]\n", 6, "soups: one greedy rule")]
    [DataRow("recipe: learned_soup\nmodels: [A1, A2]\nDATA", 4, "data.train: a learned_soup recipe trains nothing on data.train")]
    [DataRow("recipe: learned_soup\nmodels: [A1, A2]\ndata:\n  val: VAL\nlearned_soup:\n  by_layer: maybe\n", 6, "learned_soup.by_layer: maybe is not one of true, false")]
    [DataRow("recipe: ratatouille\nbase: B\nauxiliaries: [A1, A2]\nDATA\nsoups: [uniform]\n", 7, "soups: ratatouille always reports the uniform and a greedy soup")]
    [DataRow("recipe: ratatouille\nbase: B\nauxiliaries: [A1, A2]\nDATA\nratatouille:\n  runs: 1\n", 8, "ratatouille.runs: 1 is below the minimum 2")]
    [DataRow("recipe: ratatouille\nbase: B\nauxiliaries: [A1, A2]\nDATA\nratatouille:\n  diwa: true\n", 8, "ratatouille.diwa: unknown key")]
    [DataRow("recipe: soup\n", 1, "recipe: soup is not a recipe")]
    [DataRow("recipe: cold_fusion\nbase: B\ncontributors:\n  - name: a\n    train: TRAIN\nDATA", 4, "contributors: at least 2 contributors (got 1)")]
    [DataRow("recipe: cold_fusion\nbase: B\ncontributors:\n  - name: a\n    train: TRAIN\n  - name: a\n    train: TRAIN\nDATA", 6, "contributors[1].name: a names two contributors")]
    [DataRow("recipe: cold_fusion\nbase: B\ncontributors:\n  - name: a\n    train: TRAIN\n  - name: b\n    train: TRAIN\n    finetune:\n      lr: fast\nDATA", 9, "contributors[1].finetune.lr: fast is not a number")]
    [DataRow("recipe: cold_fusion\nbase: B\ncontributors:\n  - name: a\n    train: TRAIN\n  - train: TRAIN\nDATA", 6, "contributors[1]: missing: a contributor needs name")]
    [DataRow("recipe: cold_fusion\nbase: B\ncontributors:\n  - name: a\n    train: TRAIN\n  - name: b\n    train: TRAIN\nDATA\nrounds: 0\n", 11, "rounds: 0 is below the minimum 1")]
    [DataRow("base: B\n", 1, "recipe: missing")]
    [DataRow("recipe: merge\nmerge:\n  merge_method: linear\n  models:\n    - model: A1\n    - model: A2\n  parameters:\n    density: 0.5\n", 8, "parameters.density: linear has no parameter density")]
    [DataRow("recipe: merge\nmerge:\n  merge_method: bogus\n  models:\n    - model: A1\n", 3, "merge_method:")]
    [DataRow("recipe: merge\nmerge:\n  merge_method: linear\n  models:\n    - model: A3.onnx\n", 5, "models[0].model: A3.onnx not found")]
    [DataRow("recipe: merge\nmerge: [a, b]\n", 2, "merge: a mergekit merge config")]
    [DataRow("recipe: fuse\nbase: [unclosed\n", 3, "not valid YAML")]
    public void ParseErrorsNameFileLineAndKey(string template, int line, string expected)
    {
        const string sub = "errors";
        var text = template.Replace("DATA", TinyData(sub).TrimEnd('\n'), StringComparison.Ordinal)
            .Replace("VAL", Relative(sub, _fixture.Zoo.ValidationPrefix), StringComparison.Ordinal)
            .Replace("TRAIN", Relative(sub, _fixture.Zoo.Train), StringComparison.Ordinal)
            .Replace("A1", Relative(sub, _fixture.Zoo.Ingredients[0]), StringComparison.Ordinal)
            .Replace("A2", Relative(sub, _fixture.Zoo.Ingredients[1]), StringComparison.Ordinal)
            .Replace("base: B", $"base: {Relative(sub, _fixture.Zoo.Base)}", StringComparison.Ordinal);
        var path = Write(sub, "my recipe.yml", text);
        var error = Assert.ThrowsExactly<RecyclingException>(() => RecipeFile.Load(path)).Message;
        StringAssert.StartsWith(error, $"{MessageText.Path(path)}:{line}: ", error);
        StringAssert.Contains(error, expected, error);
        Assert.DoesNotContain("\n", error);

        var cli = TrainingSupport.Run(["recipe", "check", path]);
        Assert.AreEqual(1, cli.Code);
        Assert.AreEqual(error, cli.Stderr.Trim().Replace("error: ", "", StringComparison.Ordinal));
    }

    /// <summary>Paths are relative to the recipe file (not the current folder); a * pattern expands in name order.</summary>
    [TestMethod]
    public void PathsAreRelativeToTheFile()
    {
        const string sub = "deep/er";
        var pattern = Relative(sub, Path.Combine(Path.GetDirectoryName(_fixture.Zoo.Ingredients[0])!, "ft*.onnx"));
        var path = Write(sub, "fuse.yml", $"recipe: fuse\nbase: {Relative(sub, _fixture.Zoo.Base)}\nauxiliaries: {pattern}\n{TinyData(sub)}");
        var recipe = RecipeFile.Load(path);
        Assert.AreEqual(Path.GetFullPath(_fixture.Zoo.Base), recipe.Base);
        CollectionAssert.AreEqual(_fixture.Zoo.Ingredients.Select(Path.GetFullPath).ToList(), recipe.Auxiliaries.ToList());
        Assert.AreEqual(Path.GetFullPath(_fixture.Zoo.Train), recipe.Train);
    }

    /// <summary>
    /// `recipe run` of a fuse recipe: the report folder (README, CSV, JSON, PNG) with one row per run, and a second
    /// call reuses every fine-tuning.
    /// </summary>
    [TestMethod]
    public void FuseRecipeRunsAndResumes()
    {
        const string sub = "fuse";
        var path = Write(sub, "fuse.yml", $"recipe: fuse\nbase: {Relative(sub, _fixture.Zoo.Base)}\nauxiliaries: [{Relative(sub, _fixture.Zoo.Ingredients[0])}, {Relative(sub, _fixture.Zoo.Ingredients[1])}]\n{TinyData(sub)}{TinyFinetune}seeds: 1\nparallel: 1\n");
        var output = Path.Combine(_fixture.Folder, "fuse-out");
        var first = TrainingSupport.Run(["recipe", "run", path, "-o", output]);
        Assert.AreEqual(0, first.Code, first.Stderr);
        foreach (var file in new[] { "README.md", "summary.csv", "results.csv", "runs.csv", "fuse.json", "fuse.png", Fusing.FusedFile })
        {
            Assert.IsTrue(File.Exists(Path.Combine(output, file)), file);
        }

        var csv = File.ReadAllLines(Path.Combine(output, "results.csv"));
        Assert.HasCount(4, csv);
        CollectionAssert.AreEquivalent(new[] { "fused", "base", "intertraining" }, csv.Skip(1).Select(l => l.Split(',')[1]).ToArray());
        StringAssert.Contains(File.ReadAllText(Path.Combine(output, "README.md")), "| fused | 1 | ");
        Assert.DoesNotContain("reused", first.Stdout);

        var second = TrainingSupport.Run(["recipe", "run", path, "-o", output]);
        Assert.AreEqual(0, second.Code, second.Stderr);
        Assert.AreEqual(3, second.Stdout.Split('\n').Count(l => l.Contains(": reused ", StringComparison.Ordinal)), second.Stdout);

        var json = TrainingSupport.Run(["recipe", "run", path, "-o", output, "--json"]);
        Assert.AreEqual(0, json.Code, json.Stderr);
        using var document = JsonSchemaCheck.Validate("recipe", json.Stdout);
        Assert.AreEqual("fuse", document.RootElement.GetProperty("name").GetString());
        Assert.AreEqual(3, document.RootElement.GetProperty("runs").EnumerateArray().Count(r => r.GetProperty("reused").GetBoolean()), "the JSON alone on stdout, every run reused");
    }

    /// <summary>
    /// Lo-fi: the uniform soup written is the elementwise mean of the runs' tensors (computed here in double); the
    /// strict greedy soup starts from the best run by val and scores at least its val accuracy; run into the folder
    /// of a fusing with the same training and seeds, every lo-fi run is one of fusing's base runs, reused.
    /// </summary>
    [TestMethod]
    public void LofiSoupsAverageTheRunsAndShareFusingsBaseRuns()
    {
        var lofi = _fixture.Inputs("lofi", 0, 1, 2) with { Parallelism = 1 };
        Fusing.Run(new FusingOptions(lofi, _fixture.Zoo.Base, _fixture.Zoo.Ingredients) { Intertraining = false });
        var result = Lofi.Run(new LofiOptions(lofi, _fixture.Zoo.Base));
        Assert.IsTrue(result.Runs.All(r => r.Run.Reused), "lo-fi's runs are fusing's base runs");
        Assert.HasCount(2, result.Soups);

        var uniform = result.Soups.Single(s => s.Name == "uniform soup");
        Assert.HasCount(3, uniform.Members);
        var runs = result.Runs.Select(r => OnnxModel.Open(r.Run.Model)).ToList();
        try
        {
            using var soup = OnnxModel.Open(uniform.Model);
            var compared = 0;
            foreach (var tensor in soup.Tensors.Where(t => t.Kind == TensorKind.Initializer && t.DataType == OnnxDataType.Float))
            {
                var values = tensor.ReadFloat32();
                var inputs = runs.Select(r => r.Tensors.Single(t => t.Name == tensor.Name).ReadFloat32()).ToList();
                for (var i = 0; i < values.Length; i++)
                {
                    var mean = inputs.Average(v => (double)v[i]);
                    Assert.AreEqual(mean, values[i], 1e-6 * Math.Max(1, Math.Abs(mean)), $"{tensor.Name}[{i}]");
                }

                compared++;
            }

            Assert.IsGreaterThan(4, compared);
        }
        finally
        {
            runs.ForEach(r => r.Dispose());
        }

        var greedy = result.Soups.Single(s => s.Name.StartsWith("greedy", StringComparison.Ordinal));
        var best = result.Runs.MaxBy(r => r.Run.Figures["val"])!;
        Assert.AreEqual(best.Run.Label, greedy.Members[0]);
        Assert.IsGreaterThanOrEqualTo(best.Run.Figures["val"] - 1e-12, greedy.Figures["val"]);
        Assert.AreEqual(TargetRuns.Accuracy(uniform.Model, _fixture.Zoo.Validation), uniform.Figures["val"]);
    }

    /// <summary>finetune.average_epochs reaches the fine-tuner: the run equals FineTuner with AverageEpochs, and differs from the last epoch's weights.</summary>
    [TestMethod]
    public void AverageEpochsPassesThroughToTheFineTuner()
    {
        const string sub = "average";
        var path = Write(sub, "lofi.yml", $"recipe: lofi\nbase: {Relative(sub, _fixture.Zoo.Base)}\n{TinyData(sub)}{TinyFinetune.Replace("epochs: 1", "epochs: 2\n  average_epochs: 2", StringComparison.Ordinal)}seeds: [0, 1]\nsoups: [uniform]\n");
        var recipe = RecipeFile.Load(path);
        Assert.AreEqual(2, recipe.Training.AverageEpochs);
        var folder = Path.Combine(_fixture.Folder, "average-out");
        var result = Lofi.Run(recipe.ToLofi(folder) with { Parallelism = 1 });
        var run = result.Runs.Single(r => r.Seed == 0).Run;
        StringAssert.Contains(File.ReadAllText(Path.Combine(run.Folder, RunStore.RecordFile)), "\"average_epochs\": \"2\"");

        var direct = Path.Combine(_fixture.Folder, "average-direct.onnx");
        var last = Path.Combine(_fixture.Folder, "average-last.onnx");
        foreach (var (output, average) in new[] { (direct, (int?)2), (last, (int?)null) })
        {
            FineTuner.Run(new FineTuneOptions
            {
                Model = _fixture.Zoo.Base, Train = _fixture.Zoo.Train, Output = output, Epochs = 2, BatchSize = 16, Seed = 0, AverageEpochs = average,
                Head = new HeadSpec { At = FeatureAt, Init = HeadInit.Probe },
                Settings = new TrainingSettings { Optimizer = OptimizerKind.AdamW, LearningRate = 0.01 },
            });
        }

        Assert.IsLessThan(1e-5, TrainingSupport.RelativeGap(Logits(run.Model), Logits(direct)));
        Assert.IsGreaterThan(1e-3, TrainingSupport.RelativeGap(Logits(run.Model), Logits(last)), "averaging two epochs must change the weights");
    }

    /// <summary>A learned soup recipe writes the learned soup and reports it beside the uniform and greedy soups.</summary>
    [TestMethod]
    public void LearnedSoupRecipeRuns()
    {
        const string sub = "learned";
        var path = Write(sub, "learned.yml", $"recipe: learned_soup\nmodels: [{Relative(sub, _fixture.Zoo.Ingredients[0])}, {Relative(sub, _fixture.Zoo.Ingredients[1])}]\n{TinyData(sub, train: false)}learned_soup:\n  epochs: 1\n  batch_size: 16\n");
        var output = Path.Combine(_fixture.Folder, "learned-out");
        var run = TrainingSupport.Run(["recipe", "run", path, "-o", output, "--json"]);
        Assert.AreEqual(0, run.Code, run.Stderr);
        using (var json = JsonSchemaCheck.Validate("recipe", run.Stdout))
        {
            Assert.AreEqual(JsonValueKind.Null, json.RootElement.GetProperty("scores")[0].GetProperty("seed").ValueKind, "the uniform soup is of no seed");
        }

        Assert.IsTrue(File.Exists(Path.Combine(output, "learned-soup.onnx")));
        var methods = File.ReadAllLines(Path.Combine(output, "results.csv")).Skip(1).Select(l => l.Split(',')[1]).ToList();
        CollectionAssert.AreEqual(new[] { "uniform", "greedy (>)", "learned" }, methods);
    }

    /// <summary>The merge recipe's merge: part is a mergekit config: the model equals `recycle merge --config` of the same text in its own file.</summary>
    [TestMethod]
    public void MergeRecipeEqualsMergeConfig()
    {
        const string sub = "merge";
        var config = $"merge_method: linear\nmodels:\n  - model: {Relative(sub, _fixture.Zoo.Ingredients[0])}\n    parameters:\n      weight: 0.25\n  - model: {Relative(sub, _fixture.Zoo.Ingredients[1])}\n    parameters:\n      weight: 0.75\n";
        var recipePath = Write(sub, "merge.yml", $"recipe: merge\nmerge:\n{string.Concat(config.Split('\n').Where(l => l.Length > 0).Select(l => $"  {l}\n"))}{TinyData(sub, train: false)}");
        var configPath = Write(sub, "config.yml", config);
        var output = Path.Combine(_fixture.Folder, "merge-out");
        var run = TrainingSupport.Run(["recipe", "run", recipePath, "-o", output]);
        Assert.AreEqual(0, run.Code, run.Stderr);
        var merged = Path.Combine(_fixture.Folder, "merge-config.onnx");
        var direct = TrainingSupport.Run(["merge", "--config", configPath, "-o", merged]);
        Assert.AreEqual(0, direct.Code, direct.Stderr);
        Assert.AreEqual(0, TrainingSupport.RelativeGap(Logits(Path.Combine(output, "merged.onnx")), Logits(merged)));
        Assert.IsGreaterThan(1e-4, TrainingSupport.RelativeGap(Logits(merged), Logits(_fixture.Zoo.Ingredients[1])));
        var rows = File.ReadAllLines(Path.Combine(output, "results.csv")).Skip(1).ToList();
        Assert.HasCount(3, rows);
        StringAssert.StartsWith(rows[0], "merge,merged,,linear,");

        var json = TrainingSupport.Run(["recipe", "run", recipePath, "-o", output, "--json"]);
        Assert.AreEqual(0, json.Code, json.Stderr);
        using var document = JsonSchemaCheck.Validate("recipe", json.Stdout);
        Assert.AreEqual("merge", document.RootElement.GetProperty("recipe").GetString());
        CollectionAssert.AreEqual(new[] { "merged", "input model", "input model" }, document.RootElement.GetProperty("scores").EnumerateArray().Select(r => r.GetProperty("method").GetString()).ToArray());
    }

    /// <summary>
    /// `recipe check` of a ratatouille recipe names the auxiliary bodies and counts the fine-tunings it will train:
    /// the shipped file's runs: 5 starts from the first 4 of its 8 auxiliaries; with runs: 4 and two auxiliaries the
    /// starts cycle (base, aux 1, aux 2, base) and run 3 from the base is DiWA's run 3, so one seed trains 6 target
    /// runs, as many as the run folder then holds beside the shared head and the two head-only probes.
    /// </summary>
    [TestMethod]
    public void RatatouilleCheckCountsTheBodiesAndRunsItTrains()
    {
        var shipped = TrainingSupport.Run(["recipe", "check", Path.Combine(Recycling.Tests.Zoo.ZooPaths.RepositoryRoot, "models", "recipes", "ratatouille-cnn.yml")]);
        Assert.AreEqual(0, shipped.Code, shipped.Stderr);
        StringAssert.Contains(shipped.Stdout, "5 target runs per method and seed, ratatouille's from the base and the first 4 of the 8 auxiliary bodies", shipped.Stdout);
        StringAssert.Contains(shipped.Stdout, "27 fine-tunings (3 seed(s)", shipped.Stdout);

        const string sub = "ratatouille-cycle";
        var path = Write(sub, "cycle.yml", $"recipe: ratatouille\nbase: {Relative(sub, _fixture.Zoo.Base)}\nauxiliaries: [{Relative(sub, _fixture.Zoo.Ingredients[0])}, {Relative(sub, _fixture.Zoo.Ingredients[1])}]\n{TinyData(sub)}{TinyFinetune}seeds: 1\nparallel: 1\nratatouille:\n  runs: 4\n  probe_steps: 2\n");
        var check = TrainingSupport.Run(["recipe", "check", path]);
        Assert.AreEqual(0, check.Code, check.Stderr);
        StringAssert.Contains(check.Stdout, "4 target runs per method and seed, ratatouille's from the base and the 2 auxiliary bodies (the starts cycle)", check.Stdout);
        StringAssert.Contains(check.Stdout, "6 fine-tunings (1 seed(s)", check.Stdout);

        var output = Path.Combine(_fixture.Folder, "ratatouille-cycle-out");
        var run = TrainingSupport.Run(["recipe", "run", path, "-o", output]);
        Assert.AreEqual(0, run.Code, run.Stderr);
        Assert.HasCount(1 + 2 + 6, Directory.GetDirectories(Path.Combine(output, "runs")), "the shared head, two head-only probes and the 6 fine-tunings announced");
    }

    /// <summary>
    /// The shipped example recipes (models/recipes) parse, and a tiny version of each runs on the real zoo: fine-tunings
    /// cut to one optimizer step and the fewest seeds, the learned soup to two ingredients and one epoch.
    /// </summary>
    [TestMethod]
    public void ShippedExamplesParseAndATinyVersionRuns()
    {
        var folder = Path.Combine(Recycling.Tests.Zoo.ZooPaths.RepositoryRoot, "models", "recipes");
        var files = Directory.GetFiles(folder, "*.yml").Order(StringComparer.Ordinal).ToList();
        Assert.IsGreaterThanOrEqualTo(4, files.Count);
        foreach (var name in DemoRecipes.Files)
        {
            Assert.IsTrue(File.Exists(Path.Combine(folder, name)), name);
        }

        foreach (var file in files)
        {
            var recipe = RecipeFile.Load(file);
            Assert.AreEqual(0, TrainingSupport.Run(["recipe", "check", file]).Code, file);
            var text = File.ReadAllText(file);
            var tiny = recipe.Kind switch
            {
                RecipeKind.Fuse => text.Replace("seeds: 3", "seeds: 1", StringComparison.Ordinal),
                RecipeKind.Lofi => text.Replace("seeds: 3", "seeds: 2", StringComparison.Ordinal),
                RecipeKind.Ratatouille => text.Replace("seeds: 3", "seeds: 1", StringComparison.Ordinal).Replace("runs: 5", "runs: 2", StringComparison.Ordinal).Replace("probe_steps: 20", "probe_steps: 2", StringComparison.Ordinal),
                RecipeKind.LearnedSoup => text.Replace("epochs: 5", "epochs: 1", StringComparison.Ordinal)
                    .Replace("models: ../cnn_target_*.onnx", "models: [../cnn_target_diwa00.onnx, ../cnn_target_rat08.onnx]", StringComparison.Ordinal),
                _ => text,
            };
            if (recipe.Kind is not (RecipeKind.LearnedSoup or RecipeKind.Merge))
            {
                tiny = Regex.Replace(tiny, @"(?m)^  epochs: \d+\n", "  epochs: 1\n  max_steps: 1\n");
            }

            var small = RecipeFile.Parse(tiny, file);
            var output = Path.Combine(_fixture.Folder, "examples", Path.GetFileNameWithoutExtension(file));
            var (report, _) = RecipeCommand.Run(small, Path.GetFileNameWithoutExtension(file), output, parallel: 2, progress: null);
            Assert.IsNotEmpty(report.Scores, file);
            Assert.IsTrue(report.Scores.All(r => r.Accuracy.Count == 2 && r.Accuracy.Values.All(v => v is > 5 and <= 100)), file);
        }
    }

    /// <summary>
    /// A cold_fusion recipe: rows for rounds 0..R (one per seed), the ColD fusion report beside the recipe's, and a
    /// contributor's own finetune: keys over the recipe's reach its runs (lr 0.001 for contributor b only).
    /// </summary>
    [TestMethod]
    public void ColdFusionRecipeRuns()
    {
        const string sub = "cold";
        var train = Relative(sub, _fixture.Zoo.Train);
        var path = Write(sub, "cold.yml", $"recipe: cold_fusion\nbase: {Relative(sub, _fixture.Zoo.Base)}\ncontributors:\n  - name: a\n    train: {train}\n  - name: b\n    train: {train}\n    finetune:\n      lr: 0.001\n{TinyData(sub)}{TinyFinetune}rounds: 2\nseeds: 1\nparallel: 1\n");
        var recipe = RecipeFile.Load(path);
        Assert.AreEqual(0.01, recipe.Training.LearningRate);
        Assert.AreEqual(0.001, recipe.Contributors[1].Training!.LearningRate);
        Assert.AreEqual(FeatureAt, recipe.Contributors[1].Training!.FeatureAt, "a contributor's finetune: starts from the recipe's");
        var output = Path.Combine(_fixture.Folder, "cold-out");
        var run = TrainingSupport.Run(["recipe", "run", path, "-o", output]);
        Assert.AreEqual(0, run.Code, run.Stderr);
        var methods = File.ReadAllLines(Path.Combine(output, "results.csv")).Skip(1).Select(l => l.Split(',')[1]).ToList();
        CollectionAssert.AreEqual(new[] { "round 0: probe", "round 1: probe", "round 2: probe" }, methods);
        Assert.IsTrue(File.Exists(Path.Combine(output, ColdFusionReport.Name + ".png")));
        StringAssert.Contains(File.ReadAllText(Path.Combine(output, "README.md")), "### Target score per round");
        var records = Directory.GetFiles(Path.Combine(output, "runs"), RunStore.RecordFile, SearchOption.AllDirectories).Select(File.ReadAllText).ToList();
        Assert.AreEqual(2, records.Count(r => r.Contains("\"lr\": \"0.001\"", StringComparison.Ordinal)), "contributor b's two rounds ran at its own lr");
        Assert.AreEqual(2, records.Count(r => r.Contains("\"lr\": \"0.01\"", StringComparison.Ordinal)), "contributor a's two rounds ran at the recipe's lr");
    }

    /// <summary>
    /// `demo --recipes` runs the zoo's demo recipe files (here a zoo.json whose recipes/ name the tiny zoo) into one
    /// folder: lo-fi's runs are fusing's base runs, reused; the report has both recipes and the zoo's reference.
    /// </summary>
    [TestMethod]
    public void DemoRecipesRunsTheZoosRecipeFiles()
    {
        const string sub = "demo-zoo/recipes";
        var zoo = Path.Combine(_fixture.Folder, "demo-zoo", "zoo.json");
        var recipes = Path.Combine(_fixture.Folder, sub);
        Directory.CreateDirectory(recipes);
        File.WriteAllText(zoo, "{\"reference\": {\"cnn\": {\"base_lp\": {\"val\": 73.05, \"ood_test\": 32.8}}}}");
        var common = $"base: {Relative(sub, _fixture.Zoo.Base)}\n{TinyData(sub)}  test: [{Relative(sub, _fixture.Zoo.ValidationPrefix)}]\n{TinyFinetune}seeds: 2\nparallel: 1\n";
        Write(sub, DemoRecipes.Files[0], $"recipe: fuse\nauxiliaries: [{Relative(sub, _fixture.Zoo.Ingredients[0])}, {Relative(sub, _fixture.Zoo.Ingredients[1])}]\nbaselines: [base]\n{common}");
        Write(sub, DemoRecipes.Files[1], $"recipe: lofi\n{common}");
        Write(sub, DemoRecipes.Files[2], $"recipe: ratatouille\nauxiliaries: [{Relative(sub, _fixture.Zoo.Ingredients[0])}, {Relative(sub, _fixture.Zoo.Ingredients[1])}]\nratatouille:\n  runs: 2\n  probe_steps: 2\n{common}");
        var output = Path.Combine(_fixture.Folder, "demo-out");
        var run = TrainingSupport.Run(["demo", "--recipes", "--zoo", zoo, "-o", output]);
        Assert.AreEqual(0, run.Code, run.Stderr);
        Assert.AreEqual(2, run.Stdout.Split('\n').Count(l => l.StartsWith("lofi seed ", StringComparison.Ordinal) && l.Contains(": reused ", StringComparison.Ordinal)), run.Stdout);
        var readme = File.ReadAllText(Path.Combine(output, "README.md"));
        StringAssert.Contains(readme, "## fuse-cnn (fuse, ");
        StringAssert.Contains(readme, "## lofi-cnn (lofi, ");
        StringAssert.Contains(readme, "| base + linear probe | 73.05 | 32.80 |");
        StringAssert.Contains(readme, "## ratatouille-cnn (ratatouille, ");
        Assert.IsTrue(File.Exists(Path.Combine(output, "lofi-cnn.png")));
        Assert.IsTrue(File.Exists(Path.Combine(output, "ratatouille-cnn", "README.md")), "ratatouille's own report, in its subfolder");
        var results = File.ReadAllLines(Path.Combine(output, "results.csv"));
        var columns = results[0].Split(',');
        var testName = Path.GetFileName(_fixture.Zoo.ValidationPrefix);
        Assert.AreEqual(1, columns.Count(c => c.Contains(testName, StringComparison.Ordinal)), $"one column for the test set, whichever recipe scored it: {results[0]}");

        var refused = TrainingSupport.Run(["demo", "--recipes", "--zoo", zoo, "--arch", "cnn", "-o", output]);
        Assert.AreEqual(1, refused.Code);
        StringAssert.Contains(refused.Stderr, "--arch does not apply to demo --recipes");
    }

    private static float[] Logits(string model)
    {
        using var scorer = OnnxScorer.Open(model, new ScoringOptions { Threads = 1 });
        return scorer.Run(_fixture.Zoo.Validation, "logits").Data;
    }
}
