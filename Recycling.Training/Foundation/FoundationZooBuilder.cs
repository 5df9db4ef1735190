using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Numpy;
using Recycling.Training.Ops;
using Recycling.Training.Recipes;

namespace Recycling.Training.Foundation;

/// <summary>
/// A built zoo: its zoo.json (what <see cref="ModelZoo.Open"/> and the study read), one per seed replica of the
/// targets (<see cref="ZooScale.Seeds"/>; the first is <paramref name="ZooJson"/>), and every run behind them.
/// </summary>
internal sealed record BuiltZoo(string ZooJson, IReadOnlyList<RunRecord> Runs, double Seconds)
{
    public IReadOnlyList<string> SeedZooJsons { get; init; } = [ZooJson];
}

/// <summary>
/// Builds a foundation zoo with the toolkit itself, every step a content-addressed run (<see cref="RunStore"/>) in
/// CACHE/zoos/NAME/runs/KEY, so a second build reuses every finished run and a killed build resumes:
/// 1. base: the pretrained model with a linear-probe head (ML.NET L-BFGS on its features at the cut over the target
///    training images) — the shared head of model ratatouille;
/// 2. auxiliary fine-tunings: the base body with a new K-way head (initialised by a probe: LP-FT) trained on each
///    auxiliary task;
/// 3. ratatouille starts: each auxiliary body with the shared head attached, then a short head-only probe of it on
///    the target training images;
/// 4. target fine-tunings, every parameter but BatchNorm trained, from the base (DiWA-style, seeds 0..N-1) and from
///    each ratatouille start, the learning rate drawn log-uniformly and the weight decay from a set per seed.
/// Each target run also writes its diagonal Fisher (fisher.npz beside model.onnx). The data are the first images of
/// each shipped split (CACHE/zoos/NAME/SCALE/data), and zoo.json records every model with its role, parent and
/// hyperparameters, and for targets the val accuracy the training loop reported and the OOD accuracy of the
/// TorchSharp executor on the written model: the numbers ONNX Runtime must reproduce in the study.
/// </summary>
internal static class FoundationZooBuilder
{
    private const string BaseKind = "foundation-base";
    private const string FineTuneKind = "foundation-finetune";
    private const string GraftKind = "foundation-graft";
    private const string FeaturesKind = "foundation-features";

    /// <summary>The target-training images the Fisher is estimated on, stored preprocessed (float32) so the estimator feeds them as they are.</summary>
    private const string FisherSplit = "fisher";

    /// <summary>Each target run's diagonal Fisher, beside its model.onnx.</summary>
    public const string FisherFileName = "fisher.npz";

    /// <summary>Target seeds of replica r are SeedStride·r + i: replica 0 keeps seeds 0..N-1 (and the runs a one-seed build made).</summary>
    private const int SeedStride = 1000;

    /// <summary>CACHE/zoos/NAME (CACHE: <see cref="FoundationModels.DefaultCache"/> unless given).</summary>
    public static string Root(FoundationZooSpec spec, string? cache) => Path.Combine(Path.GetFullPath(cache ?? FoundationModels.DefaultCache), "zoos", spec.Name);

    /// <summary>The zoo.json a finished build of <paramref name="scale"/> wrote, or null.</summary>
    public static string? Existing(FoundationZooSpec spec, ZooScale scale, string? cache)
    {
        var path = Path.Combine(Root(spec, cache), scale.Name, "zoo.json");
        return File.Exists(path) ? path : null;
    }

    /// <param name="device">Where the runs train (not part of their identity: runs made on the CPU are reused on a GPU and back).</param>
    public static BuiltZoo Build(FoundationZooSpec spec, ZooScale scale, string? cache = null, string? dataFolder = null, int? parallelism = null, Action<string>? progress = null,
        TrainingDevice device = TrainingDevice.Cpu)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(scale);
        device = TrainingDevices.Choose(device, progress);
        List<RunSpec> On(IEnumerable<RunSpec> specs) => [.. specs.Select(s => s with { Device = device })];
        if (scale.Auxiliaries < 0 || scale.Auxiliaries > spec.Auxiliaries.Count || scale.DiwaRuns < 1)
        {
            throw new RecyclingException($"{spec.Name} zoo: {scale.Auxiliaries} auxiliary tasks (the spec has {spec.Auxiliaries.Count}) and {scale.DiwaRuns} DiWA runs (at least 1)");
        }

        if (scale.Seeds is < 1 or > 100)
        {
            throw new RecyclingException($"{spec.Name} zoo: {scale.Seeds} seeds (1 to 100)");
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var fetched = FoundationModels.Fetch(spec.FoundationModel, cache, progress);
        var model = fetched.Model;
        if (spec.Text is { } text)
        {
            // The vocabulary travels with the fetched model; the prepared models (new output, new heads) no longer match its hash.
            spec = spec with { Text = text with { Vocab = fetched.Vocabulary } };
        }

        var root = Root(spec, cache);
        var folder = Path.Combine(root, scale.Name);
        var data = Materialise(spec, scale, dataFolder ?? spec.FindData(), Path.Combine(folder, "data"));
        var store = new RunStore(root, parallelism);
        model = WithFeatures(spec, store, model, progress);
        var tasks = spec.Auxiliaries.Take(scale.Auxiliaries).ToList();
        var preprocessing = spec.Preprocessing?.ToString() ?? "";

        // 1. The base with the shared probe head, and the auxiliary fine-tunings (independent: one batch of runs).
        var baseSpec = new RunSpec
        {
            Kind = BaseKind,
            Label = $"{spec.Name}_base",
            Models = new Dictionary<string, string> { ["model"] = model },
            Data = new Dictionary<string, string> { ["train"] = data[spec.TargetTrain] },
            Parameters = HeadProbe.Stamp(new Dictionary<string, string> { ["at"] = spec.Cut, ["classes"] = Invariant(spec.Classes), ["preprocessing"] = preprocessing, ["seed"] = "0" }),
        };
        AddSpecParameters(spec, baseSpec);

        var auxSpecs = tasks.Select((t, k) => FineTune($"{spec.Name}_aux_{t.Name}", model, data[t.Split], null, null, spec.AuxiliaryTraining, scale.AuxiliaryEpochs,
            seed: 100 + k, draw: false, head: $"new:{t.Classes}", spec.Cut, preprocessing)).ToList();
        auxSpecs.ForEach(a => AddSpecParameters(spec, a));

        progress?.Invoke($"{spec.Name} zoo ({scale.Name}): base probe head and {MessageText.Count(auxSpecs.Count, "auxiliary fine-tuning")}");
        var first = store.RunAll(On([baseSpec, .. auxSpecs]), (s, output) => Execute(spec, s, output), progress);
        var baseRun = first[0];
        var auxRuns = first.Skip(1).ToList();

        // 2. Ratatouille starts: each auxiliary body with the shared head, the head probed briefly on the target.
        var graftSpecs = tasks.Select((t, k) => new RunSpec
        {
            Kind = GraftKind,
            Label = $"{spec.Name}_start_{t.Name}",
            Models = new Dictionary<string, string> { ["model"] = auxRuns[k].Model, ["head"] = baseRun.Model },
            Data = new Dictionary<string, string> { ["train"] = data[spec.TargetTrain] },
            Parameters = new Dictionary<string, string>
            {
                ["at"] = spec.Cut,
                ["steps"] = Invariant(scale.RatatouilleProbeSteps),
                ["lr"] = Invariant(spec.RatatouilleProbeLearningRate),
                ["batch_size"] = Invariant(spec.TargetTraining.BatchSize),
                ["seed"] = Invariant(200 + k),
                ["preprocessing"] = preprocessing,
            },
        }).ToList();
        graftSpecs.ForEach(g => AddSpecParameters(spec, g));
        var grafts = graftSpecs.Count == 0 ? [] : store.RunAll(On(graftSpecs), (s, output) => Execute(spec, s, output), progress);

        // 3. Target fine-tunings: DiWA from the base, ratatouille from each start; seeds number them in that order.
        //    Each further seed replica repeats them with other seeds (new learning-rate and decay draws, new data
        //    order) from the same starts, and gets a zoo.json of its own: the study's spread over seeds.
        var starts = Enumerable.Range(0, scale.DiwaRuns).Select(i => (Name: $"{spec.Name}_target_diwa{i:00}", Start: baseRun.Model, Init: $"{spec.Name}_base"))
            .Concat(tasks.Select((t, k) => (Name: $"{spec.Name}_target_rat{scale.DiwaRuns + k:00}", Start: grafts[k].Model, Init: $"{spec.Name}_aux_{t.Name}")))
            .ToList();
        var targetSpecs = Enumerable.Range(0, scale.Seeds).SelectMany(r => starts.Select((s, i) => FineTune(r == 0 ? s.Name : $"{s.Name}_seed{r}", s.Start,
            data[spec.TargetTrain], data[spec.Validation], data[spec.Ood], spec.TargetTraining, scale.TargetEpochs,
            seed: (SeedStride * r) + i, draw: true, head: "keep", spec.Cut, preprocessing))).Select(s => s with { Data = new Dictionary<string, string>(s.Data) { ["fisher"] = data[FisherSplit] } }).ToList();
        targetSpecs.ForEach(t => AddSpecParameters(spec, t));
        progress?.Invoke($"{spec.Name} zoo ({scale.Name}): {MessageText.Count(targetSpecs.Count, "target fine-tuning")}");
        var targets = store.RunAll(On(targetSpecs), (s, output) => Execute(spec, s, output), progress);

        if (spec.Text is not null)
        {
            // The study scores through ONNX Runtime from arrays: the evaluation splits tokenised, beside their text.
            data = TextZooData.Tokenize(model, spec.Text, data, [spec.ProbeTrain, spec.Validation, spec.Ood]);
        }

        var zooJsons = Enumerable.Range(0, scale.Seeds).Select(r => Path.Combine(folder, r == 0 ? "zoo.json" : $"zoo-seed{r}.json")).ToList();
        for (var r = 0; r < scale.Seeds; r++)
        {
            WriteZooJson(zooJsons[r], spec, scale, r, data, baseRun, tasks, auxRuns, auxSpecs, starts,
                [.. targets.Skip(r * starts.Count).Take(starts.Count)], [.. targetSpecs.Skip(r * starts.Count).Take(starts.Count)], clock.Elapsed.TotalSeconds);
        }

        return new BuiltZoo(zooJsons[0], [baseRun, .. auxRuns, .. grafts, .. targets], clock.Elapsed.TotalSeconds) { SeedZooJsons = zooJsons };
    }

    /// <summary>Settings of the spec that change a run's result, added to its identity when set (image zoos have none of them).</summary>
    private static void AddSpecParameters(FoundationZooSpec spec, RunSpec run)
    {
        var parameters = (Dictionary<string, string>)run.Parameters;
        if (spec.ProbeL2 is { } l2)
        {
            parameters["probe_l2"] = Invariant(l2);
        }

        if (spec.Text is { } text)
        {
            parameters["max_length"] = Invariant(text.MaxLength);
            parameters["uncased"] = text.Uncased?.ToString() ?? "";
        }
    }

    /// <summary>The pretrained model with the value the heads read added by <see cref="FoundationZooSpec.AddFeatures"/> (a run of its own, cached); the model itself when the spec adds none.</summary>
    private static string WithFeatures(FoundationZooSpec spec, RunStore store, string model, Action<string>? progress)
    {
        if (spec.AddFeatures is not { } add)
        {
            return model;
        }

        var run = new RunSpec
        {
            Kind = FeaturesKind,
            Label = $"{spec.Name}_features",
            Models = new Dictionary<string, string> { ["model"] = model },
            Parameters = new Dictionary<string, string> { ["at"] = spec.Cut },
        };
        return store.RunAll([run], (s, output) =>
        {
            add(s.Models["model"], output);
            return new Dictionary<string, double>();
        }, progress)[0].Model;
    }

    /// <summary>The learning rate and weight decay of target seed <paramref name="seed"/>: log-uniform in the role's range, a decay from its set.</summary>
    internal static (double LearningRate, double WeightDecay) Draw(RoleTraining training, int seed)
    {
        var random = new Random(seed);
        var u = random.NextDouble();
        var lr = training.LearningRateHigh is { } high ? training.LearningRate * Math.Pow(high / training.LearningRate, u) : training.LearningRate;
        return (double.Parse(lr.ToString("G3", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture), training.WeightDecays[random.Next(training.WeightDecays.Count)]);
    }

    internal static RunSpec FineTune(string label, string model, string train, string? val, string? ood, RoleTraining training, int epochs, int seed, bool draw, string head, string at, string preprocessing)
    {
        var (lr, wd) = draw ? Draw(training, seed) : (training.LearningRate, training.WeightDecays[0]);
        var data = new Dictionary<string, string> { ["train"] = train };
        if (val is not null)
        {
            data["val"] = val;
        }

        if (ood is not null)
        {
            data["ood"] = ood;
        }

        var spec = new RunSpec
        {
            Kind = FineTuneKind,
            Label = label,
            Models = new Dictionary<string, string> { ["model"] = model },
            Data = data,
            Parameters = new Dictionary<string, string>
            {
                ["optimizer"] = training.Optimizer.ToString(),
                ["lr"] = Invariant(lr),
                ["weight_decay"] = Invariant(wd),
                ["epochs"] = Invariant(epochs),
                ["batch_size"] = Invariant(training.BatchSize),
                ["batchnorm"] = training.BatchNorm.ToString(),
                ["head"] = head,
                ["at"] = at,
                ["seed"] = Invariant(seed),
                ["preprocessing"] = preprocessing,
            },
        };
        if (training.Freeze is not null)
        {
            ((Dictionary<string, string>)spec.Parameters)["freeze"] = training.Freeze;
        }

        if (head != "keep")
        {
            HeadProbe.Stamp((Dictionary<string, string>)spec.Parameters);
        }

        return spec;
    }

    /// <summary>Runs one step of the build; its inputs are all in <paramref name="run"/> but the spec's preprocessing, which the run's parameters name.</summary>
    private static IReadOnlyDictionary<string, double> Execute(FoundationZooSpec spec, RunSpec run, string output)
    {
        var p = run.Parameters;
        switch (run.Kind)
        {
            case BaseKind:
                ProbeHead(run.Models["model"], run.Data["train"], output, p["at"], int.Parse(p["classes"], CultureInfo.InvariantCulture), spec.Preprocessing, spec.Text, spec.ProbeL2,
                    int.Parse(p["seed"], CultureInfo.InvariantCulture), TrainingDevices.Resolve(run.Device));
                return new Dictionary<string, double>();
            case GraftKind:
                return Graft(spec, run, output);
            case FineTuneKind:
                return FineTuneRun(spec, run, output);
            default:
                throw new InvalidOperationException(run.Kind);
        }
    }

    /// <summary>Writes <paramref name="model"/> with a linear-probe head at <paramref name="at"/> fitted on <paramref name="train"/>, its batch dynamic and its input the preprocessed size.</summary>
    private static void ProbeHead(string model, string train, string output, string at, int classes, ImagePreprocessing? preprocessing, TextDataOptions? text, double? probeL2, int seed,
        TorchSharp.torch.Device device)
    {
        using var original = OnnxModel.Open(model);
        var data = TrainingData.For(original, text).Load(train);
        var prepared = PreparedModel.Preprocessing(original, data, preprocessing);
        using var withHead = PreparedModel.Prepare(original, new HeadSpec { Classes = classes, At = at, Init = HeadInit.Probe }, data, prepared, device);
        using var program = OnnxProgram.Load(withHead.Model, device: device);
        var feeder = BatchFeeder.For(program, original.Path, data, prepared);
        var head = withHead.InitializeHead(program, feeder, data, HeadInit.Probe, seed, probeL2);
        var sampleShape = prepared?.OutputShape(data.SampleShape, data.Name).Select(d => (long)d).ToArray();
        HeadAttachment.Write(original, output, head, new OnnxWriteOptions { ExternalData = ExternalDataMode.Auto }, sampleShape);
    }

    /// <summary>The auxiliary body with the base's head, then <c>steps</c> head-only steps on the target training data.</summary>
    private static IReadOnlyDictionary<string, double> Graft(FoundationZooSpec spec, RunSpec run, string output)
    {
        var p = run.Parameters;
        var at = p["at"];
        LinearHead head;
        using (var withHead = OnnxModel.Open(run.Models["head"]))
        {
            var weightName = GemmInput(withHead, 1);
            var biasName = GemmInput(withHead, 2);
            var weight = withHead.Tensors.Single(t => t.Name == weightName && t.Kind == TensorKind.Initializer);
            var bias = withHead.Tensors.Single(t => t.Name == biasName && t.Kind == TensorKind.Initializer);
            head = new LinearHead(at, (int)weight.Shape[0], (int)weight.Shape[1], weight.ReadFloat32(), bias.ReadFloat32());
        }

        var scratch = Directory.CreateTempSubdirectory("recycling-graft-").FullName;
        try
        {
            var grafted = Path.Combine(scratch, "grafted.onnx");
            using (var auxiliary = OnnxModel.Open(run.Models["model"]))
            {
                HeadAttachment.Write(auxiliary, grafted, head, new OnnxWriteOptions { ExternalData = ExternalDataMode.Auto });
            }

            var steps = int.Parse(p["steps"], CultureInfo.InvariantCulture);
            if (steps == 0)
            {
                File.Copy(grafted, output, overwrite: true);
                return new Dictionary<string, double>();
            }

            var result = FineTuner.Run(new FineTuneOptions
            {
                Model = grafted,
                Device = run.Device,
                Train = run.Data["train"],
                Output = output,
                Epochs = steps,
                MaxSteps = steps,
                BatchSize = int.Parse(p["batch_size"], CultureInfo.InvariantCulture),
                Seed = int.Parse(p["seed"], CultureInfo.InvariantCulture),
                Preprocessing = spec.Preprocessing,
                Text = spec.Text,
                Parameters = new ParameterSelection { TrainOnly = new Regex($"^({Regex.Escape(GemmInput(grafted, 1))}|{Regex.Escape(GemmInput(grafted, 2))})$") },
                Settings = new TrainingSettings { Optimizer = OptimizerKind.AdamW, LearningRate = double.Parse(p["lr"], CultureInfo.InvariantCulture), WeightDecay = 0, BatchNorm = BatchNormMode.Frozen },
            });
            return new Dictionary<string, double> { ["probe_train_loss"] = result.Epochs[^1].TrainLoss };
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    /// <summary>Input <paramref name="index"/> of the Gemm that computes the logits of <paramref name="model"/>.</summary>
    private static string GemmInput(string model, int index)
    {
        using var m = OnnxModel.Open(model);
        return GemmInput(m, index);
    }

    private static string GemmInput(OnnxModel model, int index) =>
        (model.Proto.Graph.Node.SingleOrDefault(n => n.OpType == "Gemm" && n.Output.Contains(HeadAttachment.Logits))
            ?? throw new RecyclingException($"{MessageText.Path(model.Path)}: no Gemm computes '{HeadAttachment.Logits}'")).Input[index];

    private static IReadOnlyDictionary<string, double> FineTuneRun(FoundationZooSpec spec, RunSpec run, string output)
    {
        var p = run.Parameters;
        var head = p["head"];
        HeadSpec? newHead = null;
        if (head != "keep")
        {
            newHead = new HeadSpec { Classes = int.Parse(head["new:".Length..], CultureInfo.InvariantCulture), At = p["at"], Init = HeadInit.Probe, ProbeL2 = spec.ProbeL2 };
        }

        var validation = run.Data.GetValueOrDefault("val");
        var result = FineTuner.Run(new FineTuneOptions
        {
            Model = run.Models["model"],
            Device = run.Device,
            Train = run.Data["train"],
            Validation = validation,
            Output = output,
            Epochs = int.Parse(p["epochs"], CultureInfo.InvariantCulture),
            BatchSize = int.Parse(p["batch_size"], CultureInfo.InvariantCulture),
            Seed = int.Parse(p["seed"], CultureInfo.InvariantCulture),
            Head = newHead,
            Preprocessing = spec.Preprocessing,
            Text = spec.Text,
            Parameters = new ParameterSelection { Freeze = p.TryGetValue("freeze", out var freeze) ? new Regex(freeze, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1)) : null },
            Settings = new TrainingSettings
            {
                Optimizer = Enum.Parse<OptimizerKind>(p["optimizer"]),
                LearningRate = double.Parse(p["lr"], CultureInfo.InvariantCulture),
                WeightDecay = double.Parse(p["weight_decay"], CultureInfo.InvariantCulture),
                BatchNorm = Enum.Parse<BatchNormMode>(p["batchnorm"]),
            },
        });
        var figures = new Dictionary<string, double>(StringComparer.Ordinal) { ["train_loss"] = result.Epochs[^1].TrainLoss };
        if (validation is not null)
        {
            figures["val"] = result.Epochs[^1].ValidationAccuracy!.Value * 100;
        }

        if (run.Data.GetValueOrDefault("ood") is { } ood)
        {
            figures["ood"] = ExecutorAccuracy(output, ood, spec) * 100;
        }

        if (run.Data.GetValueOrDefault(FisherSplit) is { } fisher)
        {
            var fisherPath = Path.Combine(Path.GetDirectoryName(output)!, FisherFileName);
            FisherFile.Compute(new FisherOptions { Model = output, Data = fisher, Text = spec.Text, Output = fisherPath, Seed = int.Parse(p["seed"], CultureInfo.InvariantCulture), Device = run.Device });
            CompleteFisher(output, fisherPath);
        }

        return figures;
    }

    /// <summary>
    /// Adds a Fisher of ones for every float tensor the estimator has none for: tensors that are no parameters
    /// (constants, BatchNorm statistics under frozen BatchNorm) are the same in every target, so any positive weight
    /// merges them to that same value, and Fisher merging needs an entry for every tensor it merges.
    /// </summary>
    internal static void CompleteFisher(string modelPath, string fisherPath)
    {
        var fisher = NpyFile.ReadNpz(fisherPath).ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
        using var model = OnnxModel.Open(modelPath);
        var missing = model.Tensors.Where(t => t.DataType == OnnxDataType.Float && !fisher.ContainsKey(t.Name)).GroupBy(t => t.Name).Select(g => g.First()).ToList();
        if (missing.Count == 0)
        {
            return;
        }

        var arrays = fisher.Select(f => (f.Key, f.Value.Shape.ToArray(), f.Value.ToSingleArray()))
            .Concat(missing.Select(t => (t.Name, t.Shape.ToArray(), Enumerable.Repeat(1f, (int)t.ElementCount).ToArray())));
        FisherFile.WriteNpz(fisherPath, arrays);
    }

    /// <summary>Accuracy (0..1) of the written model's logits computed by the TorchSharp executor (eval mode), the way the training loop evaluates.</summary>
    private static double ExecutorAccuracy(string modelPath, string split, FoundationZooSpec spec)
    {
        using var model = OnnxModel.Open(modelPath);
        var data = TrainingData.For(model, spec.Text).Load(split);
        var preprocessing = spec.Preprocessing;
        using var program = OnnxProgram.Load(model);
        var prepared = PreparedModel.Preprocessing(model, data, preprocessing);
        var feeder = BatchFeeder.For(program, modelPath, data, prepared);
        var weight = GemmInput(model, 1);
        var classes = (int)model.Tensors.First(t => t.Name == weight).Shape[0];
        var logits = PreparedModel.Features(program, feeder, data, HeadAttachment.Logits, classes);
        var predicted = logits.ArgMax();
        return (double)predicted.Where((p, n) => p == data.Labels[n]).Count() / data.Count;
    }

    /// <summary>The first images of each split the scale uses, copied from the shipped data (uint8 kept); returns split → prefix.</summary>
    private static Dictionary<string, string> Materialise(FoundationZooSpec spec, ZooScale scale, string source, string target)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal)
        {
            [spec.TargetTrain] = scale.TargetImages,
            [spec.ProbeTrain] = scale.ProbeImages,
            [spec.Validation] = scale.EvaluationImages,
            [spec.Ood] = scale.EvaluationImages,
        };
        foreach (var task in spec.Auxiliaries.Take(scale.Auxiliaries))
        {
            counts[task.Split] = scale.AuxiliaryImages;
        }

        if (spec.Text is not null)
        {
            var files = TextZooData.Materialise(counts, source, target);
            files[FisherSplit] = TextZooData.Materialise(new Dictionary<string, int> { [spec.TargetTrain] = scale.FisherImages }, source, Path.Combine(target, FisherSplit))[spec.TargetTrain];
            return files;
        }

        Directory.CreateDirectory(target);
        var prefixes = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (split, count) in counts)
        {
            foreach (var part in new[] { "images", "labels", "domains" })
            {
                var file = Path.Combine(source, $"{split}_{part}.npy.gz");
                var array = NpyFile.Read(file);
                if (array.Shape.Count < 1 || array.Shape[0] < count)
                {
                    throw new RecyclingException($"{MessageText.Path(file)}: {(array.Shape.Count < 1 ? 0 : array.Shape[0])} samples, the {scale.Name} build needs {count}");
                }

                var shape = array.Shape.ToArray();
                var rowBytes = array.Data.Length / shape[0];
                shape[0] = count;
                var bytes = array.Data.AsSpan(0, (int)(rowBytes * count)).ToArray();
                var destination = Path.Combine(target, $"{split}_{part}.npy");
                var subset = new NpyArray(array.DType, shape, bytes);
                if (!File.Exists(destination) || !SameArray(NpyFile.Read(destination), subset))
                {
                    NpyFile.Write(destination, subset);
                }
            }

            prefixes[split] = Path.Combine(target, split);
        }

        // The Fisher's images, preprocessed (the estimator feeds data as they are).
        var train = DatasetLoader.Load(prefixes[spec.TargetTrain]);
        var first = FineTuner.Subset(train, scale.FisherImages);
        var fisher = spec.Preprocessing?.Apply(first) ?? first;
        var fisherPrefix = Path.Combine(target, FisherSplit);
        var images = NpyArray.From<float>(fisher.Values, [fisher.Count, .. fisher.SampleShape.Select(d => (long)d)]);
        var labels = NpyArray.From<long>([.. fisher.Labels.Select(l => (long)l)], fisher.Count);
        foreach (var (file, array) in new[] { ($"{fisherPrefix}_images.npy", images), ($"{fisherPrefix}_labels.npy", labels) })
        {
            if (!File.Exists(file) || !SameArray(NpyFile.Read(file), array))
            {
                NpyFile.Write(file, array);
            }
        }

        prefixes[FisherSplit] = fisherPrefix;
        return prefixes;
    }

    private static bool SameArray(NpyArray a, NpyArray b) => a.DType == b.DType && a.Shape.SequenceEqual(b.Shape) && a.Data.AsSpan().SequenceEqual(b.Data);

    private static void WriteZooJson(string path, FoundationZooSpec spec, ZooScale scale, int replica, Dictionary<string, string> data, RunRecord baseRun,
        List<AuxiliaryTask> tasks, List<RunRecord> auxRuns, List<RunSpec> auxSpecs, List<(string Name, string Start, string Init)> starts, IReadOnlyList<RunRecord> targets, List<RunSpec> targetSpecs, double seconds)
    {
        object Accuracy(RunRecord r) => new
        {
            val = r.Figures.GetValueOrDefault("val", double.NaN),
            ood_test = r.Figures.GetValueOrDefault("ood", double.NaN),
        };

        var models = new List<object>
        {
            new
            {
                name = $"{spec.Name}_base", file = baseRun.Model, architecture = spec.Name, role = "base", init = (string?)null, task = "pretrained, linear-probe head on the target training images",
                num_classes = spec.Classes, run = baseRun.Key, seconds = baseRun.Seconds, hyperparameters = (object?)null, accuracy = (object?)null, fisher = (string?)null,
            },
        };
        models.AddRange(tasks.Select((t, k) => (object)new
        {
            name = auxRuns[k].Label, file = auxRuns[k].Model, architecture = spec.Name, role = "auxiliary", init = (string?)$"{spec.Name}_base", task = t.Name,
            num_classes = t.Classes, run = auxRuns[k].Key, seconds = auxRuns[k].Seconds, hyperparameters = (object?)auxSpecs[k].Parameters, accuracy = (object?)null, fisher = (string?)null,
        }));
        models.AddRange(targets.Select((r, i) => (object)new
        {
            name = starts[i].Name, file = r.Model, architecture = spec.Name, role = "target", init = (string?)starts[i].Init, task = "target",
            num_classes = spec.Classes, run = r.Key, seconds = r.Seconds, hyperparameters = (object?)targetSpecs[i].Parameters,
            accuracy = (object?)Accuracy(r), fisher = Path.Combine(r.Folder, FisherFileName),
        }));

        var zoo = new
        {
            name = spec.Name,
            description = spec.Description,
            ood_description = spec.OodDescription,
            scale,
            seed_replica = replica,
            features = spec.Cut,
            preprocessing = spec.Preprocessing is { } pre ? new
            {
                resize = pre.Height is null ? null : $"{pre.Height}x{pre.Width}",
                channels = pre.Channels,
                normalize = pre.Mean is null ? null : $"{string.Join(",", pre.Mean.Select(Invariant))}:{string.Join(",", pre.Std!.Select(Invariant))}",
            } : null,
            accuracy_source = "the training loop (TorchSharp)",
            data = new Dictionary<string, object>
            {
                [$"{spec.ProbeTrain}_images"] = new { file = data[spec.ProbeTrain] + "_images.npy" },
                [$"{spec.Validation}_images"] = new { file = data[spec.Validation] + "_images.npy" },
                [$"{spec.Ood}_images"] = new { file = data[spec.Ood] + "_images.npy" },
            },
            build_seconds = seconds,
            models,
        };
        OutputFile.WriteAllText(path, JsonSerializer.Serialize(zoo, new JsonSerializerOptions { WriteIndented = true, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull }));
    }

    private static string Invariant(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    private static string Invariant(float value) => value.ToString("R", CultureInfo.InvariantCulture);

    private static string Invariant(int value) => value.ToString(CultureInfo.InvariantCulture);
}
