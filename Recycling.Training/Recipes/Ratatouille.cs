using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.RegularExpressions;
using Recycling.MLNet.Data;
using Recycling.MLNet.Diagnostics;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.IO;
using Recycling.Training.Ops;

namespace Recycling.Training.Recipes;

/// <summary>What <see cref="Ratatouille.Run"/> recycles, on which data, with which seeds and hyperparameter draws.</summary>
/// <remarks>The shared head is probed on the base's features, and the DiWA runs start from the base; the auxiliaries'
/// bodies are the ratatouille starts. The training's learning rate is the centre of the drawn ones, its weight decay
/// replaced by the drawn one.</remarks>
public sealed record RatatouilleOptions : AuxiliaryRecipeInputs
{
    public RatatouilleOptions()
    {
    }

    /// <summary>The shared inputs with the base and the auxiliaries.</summary>
    [SetsRequiredMembers]
    public RatatouilleOptions(RecipeInputs inputs, string @base, IReadOnlyList<string> auxiliaries)
        : base(inputs, @base, auxiliaries)
    {
    }

    /// <summary>Target runs per method and seed; null: one from the base plus one per auxiliary (fewer: the first auxiliaries; more: the starts cycle).</summary>
    public int? Runs { get; init; }

    /// <summary>Learning rates are drawn log-uniformly in [lr / √spread, lr · √spread]; 1: no draw.</summary>
    public double LearningRateSpread { get; init; } = 3;

    /// <summary>Weight decays drawn from (uniformly, one per run).</summary>
    public IReadOnlyList<double> WeightDecays { get; init; } = [0, 1e-4, 1e-3];

    /// <summary>Steps of the short head-only probe that adapts the shared head to each auxiliary body.</summary>
    public int ProbeSteps { get; init; } = 20;

    public double ProbeLearningRate { get; init; } = 1e-2;

    public int ProbeBatchSize { get; init; } = 128;

    /// <summary>Greedy soups accept an ingredient when val does not drop (DiWA, ratatouille) or only when it rises.</summary>
    public GreedyRule Rule { get; init; } = GreedyRule.AllowTies;
}

/// <summary>The recipe's outcome: the shared-head model, every target run, and the report (written to the recipe folder).</summary>
public sealed record RatatouilleResult(string SharedHead, IReadOnlyList<RecipeRun> Runs, RecipeReport Report);

/// <summary>
/// Model ratatouille (Ramé et al. 2022) and its DiWA baseline, under one budget: (1) one linear-probe head fitted on
/// the base's features of the target training data; (2) each auxiliary body gets that head, adapted by a short
/// head-only probe on its own features; (3) the base and each auxiliary start are fine-tuned on the target; (4) the
/// target runs are averaged uniformly and greedily; (5) DiWA: as many runs from the base (with the shared head), with
/// the same seeds and hyperparameter draws, averaged the same way. Run i of both methods uses draw i, so the methods
/// differ only in where run i starts; run 0 of ratatouille starts from the base and is DiWA's run 0 (run once).
/// </summary>
public static class Ratatouille
{
    public const string RatatouilleMethod = "ratatouille";

    public const string DiwaMethod = "DiWA";

    /// <summary>The two pools together (the zoo reference's "ratatouille": DiWA and auxiliary-start runs averaged).</summary>
    public const string UnionMethod = "ratatouille+DiWA";

    internal const string SharedHeadKind = "ratatouille-shared-head";
    internal const string StartKind = "ratatouille-start";
    internal const string TargetKind = "finetune-own-head";

    public static RatatouilleResult Run(RatatouilleOptions options, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        Validate(options);
        CheckAligned(options);
        var clock = Stopwatch.StartNew();
        var store = new RunStore(options.Folder, options.Parallelism);
        var at = options.Training.FeatureAt ?? "";

        // (1) the shared linear-probe head on the base's features
        var head = store.RunAll([Spec(SharedHeadKind, "shared head (probe on base features)", options, new() { ["model"] = options.Base }, HeadProbe.Stamp(new() { ["at"] = at }))], ExecuteSharedHead, progress)[0];

        // (2) each auxiliary body a run starts from gets the shared head, after a short head-only probe (per seed: its data order)
        var count = options.Runs ?? options.Auxiliaries.Count + 1;
        var used = Counts(options.Auxiliaries.Count, options.Runs).Bodies;
        var startSpecs = options.Seeds.SelectMany(seed => options.Auxiliaries.Take(used).Select(aux => Spec(StartKind, $"start {Name(aux)} seed {seed}", options,
            new() { ["model"] = aux, ["head"] = head.Model },
            new()
            {
                ["at"] = at,
                ["steps"] = Inv(options.ProbeSteps),
                ["lr"] = Inv(options.ProbeLearningRate),
                ["batch_size"] = Inv(options.ProbeBatchSize),
                ["seed"] = Inv(seed),
            }))).ToList();
        var starts = store.RunAll(startSpecs, ExecuteStart, progress);

        // (3), (5) target fine-tunings: run i of each method with draw i
        var plan = new List<(string Method, string Start, int Seed, string Name, RunSpec Spec)>();
        for (var s = 0; s < options.Seeds.Count; s++)
        {
            var seed = options.Seeds[s];
            var draws = Draws(options, seed, count);
            for (var i = 0; i < count; i++)
            {
                plan.Add((DiwaMethod, options.Base, seed, $"diwa{i:00}", TargetSpec(options, $"DiWA seed {seed} run {i}", head.Model, draws[i])));
            }

            for (var i = 0; i < count; i++)
            {
                var init = i % (options.Auxiliaries.Count + 1);
                var (start, model) = init == 0 ? (options.Base, head.Model) : (options.Auxiliaries[init - 1], starts[(s * used) + init - 1].Model);
                plan.Add((RatatouilleMethod, start, seed, $"rat{i:00}-{Name(start)}", TargetSpec(options, $"ratatouille seed {seed} run {i} from {Name(start)}", model, draws[i])));
            }
        }

        var keys = plan.Select(p => store.Key(p.Spec)).ToList();
        var unique = keys.Select((k, i) => (k, i)).GroupBy(x => x.k).Select(g => g.First().i).ToList();
        var done = store.RunAll([.. unique.Select(i => plan[i].Spec)], ExecuteTarget, progress);
        var byKey = unique.Select((i, u) => (keys[i], done[u])).ToDictionary(x => x.Item1, x => x.Item2, StringComparer.Ordinal);
        var runs = plan.Select((p, i) => new RecipeRun(p.Method, p.Start, p.Seed, byKey[keys[i]])).ToList();

        // (4) soups, ensembles and individual figures per seed and method
        var splits = Splits(options);
        var scores = new List<RecipeScore>();
        var soups = new List<RecipeSoup>();
        var curves = new List<(string Method, string Split, double[] Accuracy)>();
        foreach (var seed in options.Seeds)
        {
            progress?.Invoke($"seed {seed}: soups and ensembles");
            var mine = plan.Select((p, i) => (p, Key: keys[i])).Where(x => x.p.Seed == seed).ToList();
            var members = mine.Select(x => x.Key).Distinct().ToList();
            var names = members.Select(k => mine.First(x => x.Key == k).p.Name).ToList();
            using var set = new ModelSet([.. members.Select(k => byKey[k].Model)], names: names);
            var methods = new[] { RatatouilleMethod, DiwaMethod, UnionMethod };
            foreach (var method in methods)
            {
                var pool = mine.Where(x => method == UnionMethod || x.p.Method == method).Select(x => members.IndexOf(x.Key)).Distinct().ToList();
                var (methodScores, soup, curve) = Evaluate(set, pool, method, seed, splits, options.Rule);
                scores.AddRange(methodScores);
                soups.Add(soup);
                curves.AddRange(curve.Select(c => (method, c.Split, c.Accuracy)));
            }
        }

        var report = new RecipeReport
        {
            Recipe = "ratatouille",
            Title = "Model ratatouille and its DiWA baseline",
            Splits = [.. splits.Select(s => s.Label)],
            Scores = scores,
            Runs = runs,
            Soups = soups,
            Curves = [.. curves.GroupBy(c => (c.Method, c.Split)).Select(g => new IngredientCurve(g.Key.Method, [.. Enumerable.Range(0, g.Min(c => c.Accuracy.Length)).Select(k => g.Average(c => c.Accuracy[k]))]) { Split = g.Key.Split })],
            Settings = Settings(options, count, head),
            Notes = Notes(options, count),
            Seconds = clock.Elapsed.TotalSeconds,
        };
        report.Write(options.Folder);
        return new RatatouilleResult(head.Model, runs, report);
    }

    /// <summary>
    /// Per seed: the auxiliary bodies the ratatouille runs start from (the first <c>runs − 1</c>, all when the starts
    /// cycle) and the fine-tunings trained: <c>runs</c> DiWA runs and <c>runs</c> ratatouille runs, less the
    /// ratatouille runs that start from the base (runs 0, A+1, 2(A+1), ...: the same start and draw as DiWA's run i, so trained once).
    /// </summary>
    internal static (int Runs, int Bodies, int FineTunings) Counts(int auxiliaries, int? runs)
    {
        var count = runs ?? auxiliaries + 1;
        var fromBase = (count + auxiliaries) / (auxiliaries + 1);
        return (count, Math.Min(auxiliaries, count - 1), (2 * count) - fromBase);
    }

    /// <summary>One draw of a target run: its seed (data order) and its learning rate and weight decay.</summary>
    internal sealed record Draw(int Seed, double LearningRate, double WeightDecay);

    /// <summary>The draws of one recipe seed: a System.Random seeded by it, three numbers per run in run order.</summary>
    internal static IReadOnlyList<Draw> Draws(RatatouilleOptions options, int seed, int count)
    {
        var random = new Random(seed);
        var draws = new List<Draw>();
        for (var i = 0; i < count; i++)
        {
            var u = random.NextDouble();
            var lr = options.Training.LearningRate * Math.Pow(options.LearningRateSpread, u - 0.5);
            var wd = options.WeightDecays[random.Next(options.WeightDecays.Count)];
            draws.Add(new Draw(random.Next(), lr, wd));
        }

        return draws;
    }

    private static void Validate(RatatouilleOptions o)
    {
        if (o.Auxiliaries.Count < 1 || o.Seeds.Count == 0 || o.Seeds.Distinct().Count() != o.Seeds.Count)
        {
            throw new RecyclingException($"ratatouille needs at least one auxiliary model and one or more distinct seeds (got {o.Auxiliaries.Count} and {string.Join(",", o.Seeds)})");
        }

        if (o.Runs is < 2 || o.ProbeSteps < 1 || o.ProbeBatchSize < 1 || !(o.ProbeLearningRate > 0) || double.IsInfinity(o.ProbeLearningRate))
        {
            throw new RecyclingException($"runs per method ({o.Runs}) must be at least 2, probe steps ({o.ProbeSteps}) and batch ({o.ProbeBatchSize}) at least 1, the probe learning rate ({o.ProbeLearningRate}) > 0");
        }

        if (!(o.LearningRateSpread >= 1) || double.IsInfinity(o.LearningRateSpread) || o.WeightDecays.Count == 0 || o.WeightDecays.Any(w => !(w >= 0) || double.IsInfinity(w)))
        {
            throw new RecyclingException("the learning-rate spread must be at least 1 and the weight decays a non-empty list of numbers >= 0");
        }

        if (o.Training.Epochs < 1 || o.Training.BatchSize < 1 || !(o.Training.LearningRate > 0) || double.IsInfinity(o.Training.LearningRate))
        {
            throw new RecyclingException($"epochs ({o.Training.Epochs}) and batch size ({o.Training.BatchSize}) must be at least 1 and the learning rate ({o.Training.LearningRate}) > 0");
        }

        var inputs = new[] { o.Base }.Concat(o.Auxiliaries).Select(Path.GetFullPath).ToList();
        if (inputs.Distinct(StringComparer.Ordinal).Count() != inputs.Count)
        {
            throw new RecyclingException("ratatouille: the base and the auxiliary models must be different files (one is given twice)");
        }
    }

    /// <summary>Refuses, before any training, auxiliaries whose bodies do not align with the base (another architecture or base).</summary>
    private static void CheckAligned(RatatouilleOptions options)
    {
        using var aligned = AlignedModels.Open(options.Auxiliaries, options.Base, HeadPolicy.Drop);
    }

    private static RunSpec Spec(string kind, string label, RatatouilleOptions options, Dictionary<string, string> models, Dictionary<string, string> parameters)
    {
        var data = TargetRuns.DataRoles(options.Train, options.Validation, options.Tests);
        return new RunSpec { Kind = kind, Label = label, Models = models, Data = data, Parameters = parameters, Device = options.Training.Device };
    }

    private static RunSpec TargetSpec(RatatouilleOptions options, string label, string start, Draw draw)
    {
        var t = options.Training;
        return Spec(TargetKind, label, options, new() { ["model"] = start }, new()
        {
            ["optimizer"] = t.Optimizer.ToString(),
            ["lr"] = Inv(draw.LearningRate),
            ["weight_decay"] = Inv(draw.WeightDecay),
            ["epochs"] = Inv(t.Epochs),
            ["batch_size"] = Inv(t.BatchSize),
            ["batchnorm"] = t.BatchNorm.ToString(),
            ["seed"] = Inv(draw.Seed),
        });
    }

    /// <summary>Writes the base with a new linear head fitted by a linear probe (ML.NET L-BFGS) on its features of the train data.</summary>
    private static IReadOnlyDictionary<string, double> ExecuteSharedHead(RunSpec spec, string output)
    {
        using var original = OnnxModel.Open(spec.Models["model"]);
        var train = TrainingData.For(original, null).Load(spec.Data["train"]);
        var preprocessing = NoPreprocessing(original, train);
        var at = spec.Parameters["at"];
        var device = TrainingDevices.Resolve(spec.Device);
        using var prepared = PreparedModel.Prepare(original, new HeadSpec { At = at.Length == 0 ? null : at, Init = HeadInit.Probe }, train, preprocessing, device);
        using var program = OnnxProgram.Load(prepared.Model, new ParameterSelection(), device: device);
        var feeder = BatchFeeder.For(program, original.Path, train, preprocessing);
        var head = prepared.InitializeHead(program, feeder, train, HeadInit.Probe, seed: 0);
        HeadAttachment.Write(original, output, head);
        return TargetRuns.Figures(spec, output);
    }

    /// <summary>Writes an auxiliary body with the shared head, the head then trained alone (body and BatchNorm statistics frozen) for a few AdamW steps.</summary>
    private static IReadOnlyDictionary<string, double> ExecuteStart(RunSpec spec, string output)
    {
        var p = spec.Parameters;
        var shared = ReadHead(spec.Models["head"]);
        var folder = Path.GetDirectoryName(Path.GetFullPath(output))!;
        var start = Path.Combine(folder, "start-with-shared-head.onnx");
        (string Weight, string Bias) names;
        int samples;
        using (var aux = OnnxModel.Open(spec.Models["model"]))
        {
            var train = TrainingData.For(aux, null).Load(spec.Data["train"]);
            samples = train.Count;
            NoPreprocessing(aux, train);
            var at = p["at"].Length == 0 ? HeadAttachment.DefaultCut(aux) : p["at"];
            names = HeadAttachment.Write(aux, start, shared with { At = at })!.Value;
        }

        try
        {
            var steps = int.Parse(p["steps"], CultureInfo.InvariantCulture);
            var batch = int.Parse(p["batch_size"], CultureInfo.InvariantCulture);
            var batches = Math.Max(1, (samples + batch - 1) / batch);
            FineTuner.Run(new FineTuneOptions
            {
                Model = start,
                Train = spec.Data["train"],
                Output = output,
                BatchSize = batch,
                MaxSteps = steps,
                Epochs = (steps + batches - 1) / batches,
                Seed = int.Parse(p["seed"], CultureInfo.InvariantCulture),
                Device = spec.Device,
                Parameters = new ParameterSelection { TrainOnly = new Regex($"^(?:{Regex.Escape(names.Weight)}|{Regex.Escape(names.Bias)})$", RegexOptions.CultureInvariant) },
                Settings = new TrainingSettings
                {
                    Optimizer = OptimizerKind.AdamW,
                    LearningRate = double.Parse(p["lr"], CultureInfo.InvariantCulture),
                    WeightDecay = 0,
                    BatchNorm = BatchNormMode.Frozen,
                },
            });
        }
        finally
        {
            OutputFile.TryDelete(start);
        }

        return TargetRuns.Figures(spec, output);
    }

    /// <summary>Fine-tunes every parameter of the start model (its own head included) on the train data.</summary>
    private static IReadOnlyDictionary<string, double> ExecuteTarget(RunSpec spec, string output)
    {
        FineTuner.Run(TargetRuns.FineTuning(spec, output));
        return TargetRuns.Figures(spec, output);
    }

    /// <summary>The linear head a shared-head model ends with: the Gemm that computes "logits", reading the cut value directly or through the Flatten <see cref="HeadAttachment"/> adds.</summary>
    internal static LinearHead ReadHead(string path)
    {
        using var model = OnnxModel.Open(path);
        var graph = model.Proto.Graph;
        var gemm = graph.Node.SingleOrDefault(n => n.OpType == "Gemm" && n.Output.Contains(HeadAttachment.Logits));
        if (gemm is null || gemm.Input.Count < 3)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: no Gemm head computing '{HeadAttachment.Logits}'");
        }

        var flatten = graph.Node.SingleOrDefault(n => n.OpType == "Flatten" && n.Output.Contains(gemm.Input[0]) && n.Output[0].StartsWith("head.flatten", StringComparison.Ordinal));
        float[] Read(string name) => model.Tensors.FirstOrDefault(t => t.Kind == TensorKind.Initializer && t.Name == name)?.ReadFloat32()
            ?? throw new RecyclingException($"{MessageText.Path(path)}: the head's tensor '{name}' is missing");
        var weight = Read(gemm.Input[1]);
        var bias = Read(gemm.Input[2]);
        return new LinearHead(flatten?.Input[0] ?? gemm.Input[0], bias.Length, bias.Length == 0 ? 0 : weight.Length / bias.Length, weight, bias);
    }

    /// <summary>The recipe writes heads into the models' own graphs, so inputs must need no resizing or channel copies.</summary>
    private static ImagePreprocessing? NoPreprocessing(OnnxModel model, Dataset train) =>
        PreparedModel.Preprocessing(model, train, null) is null ? null
            : throw new RecyclingException($"{MessageText.Path(model.Path)}: the training data need preprocessing (resize or grey to RGB) for this model; ratatouille needs data in the model's input shape");

    private static (IReadOnlyList<RecipeScore> Scores, RecipeSoup Soup, IReadOnlyList<(string Split, double[] Accuracy)> Curves) Evaluate(
        ModelSet set, IReadOnlyList<int> pool, string method, int seed, IReadOnlyList<(string Label, Dataset Data)> splits, GreedyRule rule)
    {
        var val = splits[0].Data;
        var individual = pool.Select(i => splits.Select(s => set.Evaluate(i, s.Data).Accuracy).ToArray()).ToList();
        var best = Enumerable.Range(0, pool.Count).OrderByDescending(i => individual[i][0]).ThenBy(i => i).First();
        var greedy = set.GreedySoup(val, rule, pool);
        IReadOnlyDictionary<string, double> Row(Func<int, double> value) => splits.Select((s, k) => (s.Label, k)).ToDictionary(x => x.Label, x => value(x.k), StringComparer.Ordinal);
        var scores = new List<RecipeScore>
        {
            new($"{method} best individual", seed, Row(k => individual[best][k])) { Detail = set.Names[pool[best]] },
            new($"{method} mean individual", seed, Row(k => individual.Average(a => a[k]))) { Detail = MessageText.Count(pool.Count, "run") },
            new($"{method} ensemble", seed, Row(k => set.EvaluateEnsemble(pool.ToList(), splits[k].Data).Accuracy)) { Detail = "output probabilities" },
            new($"{method} uniform soup", seed, Row(k => set.EvaluateUniform(pool.ToList(), splits[k].Data).Accuracy)) { Detail = MessageText.Count(pool.Count, "run") },
            new($"{method} greedy soup", seed, Row(k => set.EvaluateUniform(greedy.AcceptedIndices.ToList(), splits[k].Data).Accuracy)) { Detail = $"{greedy.Accepted.Count}/{pool.Count} kept ({greedy.RuleSymbol})" },
        };
        var soup = new RecipeSoup(method, seed, greedy.RuleSymbol, [.. pool.Select(i => set.Names[i])], greedy.Order, greedy.OrderValAccuracy, greedy.Accepted, greedy.ValAccuracy);

        // uniform soups of the top-k runs by val, k = 1..K
        var ranked = Enumerable.Range(0, pool.Count).OrderByDescending(i => individual[i][0]).ThenBy(i => i).Select(i => pool[i]).ToList();
        var curves = splits.Select(s => (s.Label, Enumerable.Range(1, ranked.Count).Select(k => set.EvaluateUniform(ranked.Take(k).ToList(), s.Data).Accuracy).ToArray())).ToList();
        return (scores, soup, curves);
    }

    private static List<(string Label, Dataset Data)> Splits(RatatouilleOptions options)
    {
        var splits = new List<(string Label, Dataset Data)> { ("val", DatasetLoader.Load(options.Validation)) };
        var labels = RecipeReport.TestLabels(options.Tests);
        splits.AddRange(options.Tests.Select((t, i) => (labels[i], DatasetLoader.Load(t))));
        return splits;
    }

    private static Dictionary<string, string> Settings(RatatouilleOptions o, int count, RunRecord head)
    {
        var t = o.Training;
        return new Dictionary<string, string>
        {
            ["base"] = Path.GetFullPath(o.Base),
            ["auxiliaries"] = string.Join(", ", o.Auxiliaries.Select(Name)),
            ["train"] = o.Train,
            ["val"] = o.Validation,
            ["tests"] = string.Join(", ", o.Tests),
            ["seeds"] = string.Join(", ", o.Seeds),
            ["runs per method and seed"] = Inv(count),
            ["fine-tuning"] = string.Create(CultureInfo.InvariantCulture, $"{t.Optimizer}, {t.Epochs} epochs, batch {t.BatchSize}, BatchNorm {t.BatchNorm}, head at '{(t.FeatureAt ?? "features")}'"),
            ["learning rate"] = string.Create(CultureInfo.InvariantCulture, $"log-uniform in [{t.LearningRate / Math.Sqrt(o.LearningRateSpread):G3}, {t.LearningRate * Math.Sqrt(o.LearningRateSpread):G3}]"),
            ["weight decay"] = "one of " + string.Join(", ", o.WeightDecays.Select(w => w.ToString("G", CultureInfo.InvariantCulture))),
            ["short probe"] = string.Create(CultureInfo.InvariantCulture, $"head only, {o.ProbeSteps} AdamW steps, lr {o.ProbeLearningRate:G}, batch {o.ProbeBatchSize}, weight decay 0, BatchNorm statistics frozen"),
            ["greedy rule"] = o.Rule == GreedyRule.AllowTies ? ">=" : ">",
            ["shared head"] = string.Create(CultureInfo.InvariantCulture, $"{head.Model} (base + probe head: val {head.Figures["val"] * 100:F2}%)"),
        };
    }

    private static List<string> Notes(RatatouilleOptions o, int count) =>
    [
        "A seed of the recipe draws, with System.Random(seed), one (learning rate, weight decay, data-order seed) per run index; "
            + "run i of DiWA and run i of ratatouille use the same draw, so they differ only in their start. The seed also orders the data of the short head probes. "
            + "The shared head is one deterministic L-BFGS probe, the same for every seed.",
        string.Create(CultureInfo.InvariantCulture, $"ratatouille: {count} runs per seed, run i starting from the base (i = 0) or auxiliary i (with the shared head after its short probe), cycling; ")
            + "its run from the base is DiWA's run 0 (same start, same draw: one fine-tuning, in both pools).",
        string.Create(CultureInfo.InvariantCulture, $"DiWA: {count} runs per seed from the base with the shared head. {UnionMethod}: both pools together (the zoo reference's \"ratatouille\" pool)."),
        "best individual: the run with the best val accuracy; greedy soup: runs sorted by val, each added when the soup's val accuracy is not lower (>=) or higher (>), one pass. "
            + "Val accuracies of best individual and greedy soup are in-sample (chosen on val); other data sets are held out.",
    ];

    private static string Name(string path) => Path.GetFileNameWithoutExtension(path);

    private static string Inv(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    private static string Inv(int value) => value.ToString(CultureInfo.InvariantCulture);
}
