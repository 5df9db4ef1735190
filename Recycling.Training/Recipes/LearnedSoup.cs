using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Training.Ops;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Recipes;

/// <summary>What <see cref="LearnedSoup.Run"/> mixes, on which held-out data, and how α is trained.</summary>
public sealed record LearnedSoupOptions
{
    public const int DefaultEpochs = 5;

    public const double DefaultLearningRate = 0.05;

    /// <summary>Fine-tuned exports of one base with the same head (the ingredients).</summary>
    public required IReadOnlyList<string> Models { get; init; }

    /// <summary>Held-out labelled data the mixing weights are trained on (the split a greedy soup selects on).</summary>
    public required Dataset Validation { get; init; }

    /// <summary>Written model (the soup θ(α) in the first ingredient's graph); null: not written.</summary>
    public string? Output { get; init; }

    /// <summary>The class-score output (default "logits", else the only output).</summary>
    public string? OutputName { get; init; }

    /// <summary>One α per ingredient and layer (the initializers read by one node) instead of one per ingredient.</summary>
    public bool ByLayer { get; init; }

    public int Epochs { get; init; } = DefaultEpochs;

    /// <summary>Adam's learning rate on α.</summary>
    public double LearningRate { get; init; } = DefaultLearningRate;

    public int BatchSize { get; init; } = 64;

    /// <summary>Seed of the batch order.</summary>
    public int Seed { get; init; }

    /// <summary>Where LibTorch trains α (the ingredients' stacked weights live there too).</summary>
    public TrainingDevice Device { get; init; } = TrainingDevice.Cpu;
}

/// <summary>The mixing weights softmax(α) of one layer (or of the whole model), one per ingredient.</summary>
public sealed record LearnedSoupLayer(string Layer, IReadOnlyList<string> Initializers, IReadOnlyList<double> Weights);

/// <summary>The soup after one epoch, in eval mode on the whole held-out set.</summary>
public sealed record LearnedSoupEpoch(int Epoch, double TrainLoss, double ValidationLoss, double ValidationAccuracy);

/// <summary>
/// The learned soup: <see cref="Weights"/> are softmax(α) of the whole model, or with <see cref="LearnedSoupOptions.ByLayer"/>
/// each ingredient's weight averaged over the layers (unweighted); <see cref="Layers"/> has every layer's own weights.
/// </summary>
public sealed record LearnedSoupResult(IReadOnlyList<string> Models, IReadOnlyList<double> Weights, IReadOnlyList<LearnedSoupLayer> Layers,
    IReadOnlyList<LearnedSoupEpoch> Epochs, string? Output, double? OnnxRuntimeGap, int MixedTensors, double Seconds, long PeakWorkingSetBytes);

/// <summary>
/// Learned soups (Wortsman et al. 2022): θ(α) = Σᵢ softmax(α)ᵢ θᵢ over aligned ingredients, α trained by Adam on the
/// cross-entropy of held-out data through the differentiable executor (ingredient weights fixed, only α learns).
/// α starts at zero: the uniform soup. BatchNorm running statistics are mixed with the same weights as their
/// layer, so the model written is exactly the function evaluated, but no gradient flows through them (torch's
/// batch_norm does not differentiate running statistics). Tensors equal in every ingredient are kept as they are.
/// </summary>
public static class LearnedSoup
{
    private const int CheckSamples = 64;

    public static LearnedSoupResult Run(LearnedSoupOptions options, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        Validate(options);
        var device = TrainingDevices.Resolve(options.Device, progress);
        var clock = Stopwatch.StartNew();
        using var aligned = AlignedModels.Open(options.Models);
        return Mix(options, aligned.Plan, device, clock, progress);
    }

    private static LearnedSoupResult Mix(LearnedSoupOptions options, AlignmentPlan plan, Device device, Stopwatch clock, Action<string>? progress)
    {
        var template = plan.Template;
        var t = plan.Inputs.ToList().IndexOf(template);
        using var program = OnnxProgram.Load(template, new ParameterSelection { TrainOnly = new Regex("(?!)", RegexOptions.None, TimeSpan.FromSeconds(1)) }, device: device);
        var data = options.Validation;
        var feeder = BatchFeeder.For(program, template.Path, data);
        var output = FineTuner.ChooseOutput(program, template.Path, options.OutputName);
        feeder.CheckLabels(program, output, data, null);

        using var scope = NewDisposeScope();
        var stacks = Stacks(plan, t, program);
        var layerOf = LayerOfInitializer(template);
        var layers = options.ByLayer
            ? stacks.Keys.GroupBy(name => layerOf.GetValueOrDefault(name, name)).Select(g => (Name: g.Key, Members: g.ToList())).ToList()
            : [("all", stacks.Keys.ToList())];
        var n = plan.Inputs.Count;
        var alpha = new TorchSharp.Modules.Parameter(zeros([layers.Count, n], device: device));
        using var optimizer = new ParameterOptimizer(OptimizerKind.Adam, [alpha], weightDecay: 0);

        Dictionary<string, Tensor> Mixed(Tensor weights)
        {
            var mixed = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            for (var l = 0; l < layers.Count; l++)
            {
                foreach (var name in layers[l].Members)
                {
                    var stack = stacks[name];
                    var shape = new long[stack.dim()];
                    Array.Fill(shape, 1L);
                    shape[0] = n;
                    // torch's batch_norm does not differentiate its running statistics: they follow α without gradient.
                    var w = program.Buffers.ContainsKey(name) ? weights[l].detach() : weights[l];
                    mixed[name] = (w.reshape(shape) * stack).sum(0L);
                }
            }

            return mixed;
        }

        var random = new Random(options.Seed);
        var epochs = new List<LearnedSoupEpoch>();
        for (var epoch = 1; epoch <= options.Epochs; epoch++)
        {
            var order = Enumerable.Range(0, data.Count).ToArray();
            random.Shuffle(order);
            double lossSum = 0;
            for (var start = 0; start < order.Length; start += options.BatchSize)
            {
                using var stepScope = NewDisposeScope();
                var indices = order.AsSpan(start, Math.Min(options.BatchSize, order.Length - start)).ToArray();
                using var batch = feeder.Batch(data, indices);
                var logits = Logits(program, batch, output, Mixed(F.softmax(alpha, 1)));
                var loss = F.cross_entropy(logits, batch.Labels);
                optimizer.ZeroGrad();
                loss.backward();
                optimizer.Step(options.LearningRate);
                lossSum += loss.item<float>() * indices.Length;
            }

            if (!double.IsFinite(lossSum) || !alpha.isfinite().all().item<bool>())
            {
                throw new RecyclingException($"the learned soup diverged in epoch {epoch} (a loss or a mixing weight is not finite); lower the learning rate");
            }

            var (valLoss, valAccuracy) = Evaluate(program, feeder, data, output, () => Mixed(F.softmax(alpha, 1)), options.BatchSize);
            var report = new LearnedSoupEpoch(epoch, lossSum / data.Count, valLoss, valAccuracy);
            epochs.Add(report);
            progress?.Invoke(string.Create(CultureInfo.InvariantCulture,
                $"learned soup epoch {epoch}: train loss {report.TrainLoss:F4}, val loss {valLoss:F4}, val accuracy {valAccuracy * 100:F2}%"));
        }

        double[][] weights;
        using (no_grad())
        {
            var w = F.softmax(alpha, 1).to(ScalarType.Float64).cpu();
            weights = [.. Enumerable.Range(0, layers.Count).Select(l => w[l].data<double>().ToArray())];
        }

        double? gap = null;
        if (options.Output is { } path)
        {
            Dictionary<string, Tensor> final;
            using (no_grad())
            {
                final = Mixed(F.softmax(alpha, 1));
            }

            Write(template, path, final, options, weights, layers.Select(l => l.Name).ToList());
            gap = CompareWithOnnxRuntime(program, feeder, output, path, FineTuner.Subset(data, CheckSamples), final);
            if (gap > FineTuner.OnnxRuntimeTolerance)
            {
                throw new RecyclingException($"{path}: ONNX Runtime's outputs differ from the learned soup's by {gap:G3} (relative), more than {FineTuner.OnnxRuntimeTolerance:G1}; the written model is not trustworthy");
            }
        }

        var overall = Enumerable.Range(0, n).Select(i => weights.Average(w => w[i])).ToList();
        var layerReports = layers.Select((l, k) => new LearnedSoupLayer(l.Name, l.Members, weights[k])).ToList();
        using var process = Process.GetCurrentProcess();
        return new LearnedSoupResult([.. plan.Inputs.Select(m => m.Path)], overall, layerReports, epochs, options.Output is null ? null : Path.GetFullPath(options.Output),
            gap, stacks.Count, clock.Elapsed.TotalSeconds, process.PeakWorkingSet64);
    }

    /// <summary>For each template initializer the program reads (parameters and BatchNorm statistics) whose values differ across ingredients: the ingredients' values stacked on a new first axis.</summary>
    private static Dictionary<string, Tensor> Stacks(AlignmentPlan plan, int template, OnnxProgram program)
    {
        var mixable = program.Parameters.Keys.Concat(program.Buffers.Keys).ToHashSet(StringComparer.Ordinal);
        var stacks = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var sources = new Dictionary<string, AlignedParameter>(StringComparer.Ordinal);
        foreach (var p in plan.Parameters.Where(p => p.IsFloat))
        {
            var own = p.Tensors[template];
            if (p.IsHead)
            {
                throw new RecyclingException($"{plan.Inputs[0].Path}: tensor '{own.Name}' has different shapes across the ingredients; a learned soup mixes models with the same head");
            }

            var values = p.Tensors.Select(x => TensorConversion.ToTorch(x, CPU)).ToList();
            if (values.All(v => Same(v, values[0])))
            {
                values.ForEach(v => v.Dispose());
                continue;
            }

            if (own.Kind != TensorKind.Initializer || own.Path != $"graph/initializer[{own.Name}]" || !mixable.Contains(own.Name) || values[0].dtype != ScalarType.Float32)
            {
                values.ForEach(v => v.Dispose());
                throw new RecyclingException($"{plan.Inputs[template].Path}: tensor '{own.Name}' ({own.Path}, {own.DataType}) differs across the ingredients but is not a float32 initializer of the main graph; a learned soup cannot mix it");
            }

            if (sources.TryGetValue(own.Name, out var previous))
            {
                // Two aligned parameters read the same template initializer: the other ingredients must store them equally.
                if (previous.Tensors.Zip(p.Tensors).Any(pair => !Same(TensorConversion.ToTorch(pair.First, CPU), TensorConversion.ToTorch(pair.Second, CPU))))
                {
                    throw new RecyclingException($"{plan.Inputs[template].Path}: initializer '{own.Name}' is shared by two parameters that other ingredients store with different values; use another ingredient first");
                }

                values.ForEach(v => v.Dispose());
                continue;
            }

            sources[own.Name] = p;
            stacks[own.Name] = TensorConversion.MovedTo(stack(values), program.Device);
            values.ForEach(v => v.Dispose());
        }

        return stacks;
    }

    private static bool Same(Tensor a, Tensor b) => a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    /// <summary>The layer of each initializer: the first node that reads it (Conv weight and bias, a BatchNorm's four tensors are one layer).</summary>
    private static Dictionary<string, string> LayerOfInitializer(OnnxModel model)
    {
        var graph = model.Proto.Graph;
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var layerOf = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var index = 0; index < graph.Node.Count; index++)
        {
            var node = graph.Node[index];
            var label = node.Name.Length > 0 ? node.Name : $"{node.OpType} #{index}";
            foreach (var input in node.Input.Where(initializers.Contains))
            {
                layerOf.TryAdd(input, label);
            }
        }

        return layerOf;
    }

    private static Tensor Logits(OnnxProgram program, Batch batch, string output, IReadOnlyDictionary<string, Tensor> initializers)
    {
        var logits = program.Forward(batch.Feeds, new OpContext(), [output], initializers)[output];
        return logits.dim() == 2 ? logits : logits.reshape(logits.shape[0], -1);
    }

    private static (double Loss, double Accuracy) Evaluate(OnnxProgram program, BatchFeeder feeder, Dataset data, string output, Func<Dictionary<string, Tensor>> mixed, int batchSize)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var initializers = mixed();
        double loss = 0;
        long correct = 0;
        for (var start = 0; start < data.Count; start += batchSize)
        {
            using var batchScope = NewDisposeScope();
            using var batch = feeder.Batch(data, [.. Enumerable.Range(start, Math.Min(batchSize, data.Count - start))]);
            var logits = Logits(program, batch, output, initializers);
            loss += F.cross_entropy(logits, batch.Labels, reduction: nn.Reduction.Sum).item<float>();
            correct += logits.argmax(1).eq(batch.Labels).sum().item<long>();
        }

        return (loss / data.Count, (double)correct / data.Count);
    }

    private static void Write(OnnxModel template, string path, Dictionary<string, Tensor> values, LearnedSoupOptions options, double[][] weights, List<string> layers)
    {
        var metadata = new Dictionary<string, string>
        {
            ["recycling.method"] = options.ByLayer ? "learned soup (by layer)" : "learned soup",
            ["recycling.learned_soup.ingredients"] = JsonSerializer.Serialize(options.Models.Select(m => new { file = Path.GetFileName(m), sha256 = FineTuner.Sha256(m) })),
            ["recycling.learned_soup.weights"] = JsonSerializer.Serialize(layers.Select((l, k) => new { layer = l, weights = weights[k] })),
            ["recycling.learned_soup.settings"] = JsonSerializer.Serialize(new
            {
                data = options.Validation.Name,
                epochs = options.Epochs,
                lr = options.LearningRate,
                batch_size = options.BatchSize,
                seed = options.Seed,
            }),
            ["recycling.version"] = $"Recycling.Training {typeof(LearnedSoup).Assembly.GetName().Version}",
        };
        OnnxWriter.Write(template, path, new OnnxWriteOptions { Metadata = metadata }, tensor =>
            tensor.Kind == TensorKind.Initializer && tensor.Path == $"graph/initializer[{tensor.Name}]" && values.TryGetValue(tensor.Name, out var value)
                ? new TensorReplacement(OnnxDataType.Float, TensorConversion.Float32Bytes(value))
                : null);
    }

    private static double CompareWithOnnxRuntime(OnnxProgram program, BatchFeeder feeder, string output, string path, Dataset data, Dictionary<string, Tensor> initializers)
    {
        float[] ours;
        using (var batch = feeder.Batch(data, [.. Enumerable.Range(0, data.Count)]))
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            ours = TensorConversion.Floats(Logits(program, batch, output, initializers));
        }

        using var scorer = OnnxScorer.Open(path, new ScoringOptions { Threads = 1 });
        var theirs = scorer.Run(data, output).Data;
        return FineTuner.RelativeGap(ours, theirs, path, output, "the learned soup");
    }

    private static void Validate(LearnedSoupOptions o)
    {
        if (o.Models.Count < 2)
        {
            throw new RecyclingException($"a learned soup needs at least two ingredients (got {o.Models.Count})");
        }

        if (o.Epochs < 1 || o.BatchSize < 1 || !(o.LearningRate > 0) || double.IsInfinity(o.LearningRate))
        {
            throw new RecyclingException($"learned soup: epochs ({o.Epochs}) and batch size ({o.BatchSize}) must be at least 1, the learning rate ({o.LearningRate}) > 0");
        }

        if (o.Validation.Count == 0)
        {
            throw new RecyclingException($"{o.Validation.Name}: no samples to learn the soup on");
        }

        if (o.Output is { } output && o.Models.Any(m => Path.GetFullPath(m) == Path.GetFullPath(output)))
        {
            throw new RecyclingException($"{output}: the output would overwrite an ingredient; choose another path");
        }
    }
}
