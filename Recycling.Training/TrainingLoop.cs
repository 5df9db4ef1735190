using System.Diagnostics;
using System.Text.Json;
using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>
/// The epochs of a fine-tuning run: batches in file or seeded order, the learning rate of every step
/// (<see cref="LearningRates"/>), validation after each epoch, the JSON log, and the weights left in the program at the
/// end: the last epoch's, the best epoch's by validation accuracy, or the average of the last epochs' end weights.
/// </summary>
internal sealed class TrainingLoop
{
    private static readonly JsonSerializerOptions LogStyle = new(JsonStyle.Options) { WriteIndented = false };

    private readonly OnnxProgram _program;
    private readonly BatchFeeder _feeder;
    private readonly FineTuneOptions _options;
    private readonly Dataset _train;
    private readonly Dataset? _validation;

    public TrainingLoop(OnnxProgram program, BatchFeeder feeder, FineTuneOptions options, Dataset train, Dataset? validation)
    {
        _program = program;
        _feeder = feeder;
        _options = options;
        _train = train;
        _validation = validation;
    }

    public int StepsPerEpoch => (_train.Count + _options.BatchSize - 1) / _options.BatchSize;

    /// <summary>Optimizer steps of the whole run: the epochs', or fewer when <see cref="FineTuneOptions.MaxSteps"/> stops it earlier.</summary>
    public int TotalSteps => (int)Math.Min((long)_options.Epochs * StepsPerEpoch, _options.MaxSteps ?? int.MaxValue);

    /// <summary>Epochs that run (the last one partial when the step limit ends it).</summary>
    public int EpochsRun => (TotalSteps + StepsPerEpoch - 1) / StepsPerEpoch;

    /// <summary>Trains; returns the epochs' reports and the epochs whose weights the program holds afterwards.</summary>
    public (IReadOnlyList<EpochReport> Reports, IReadOnlyList<int> Kept) Run(string output, Action<string>? progress, IProgress<string>? status)
    {
        var settings = _options.Settings;
        manual_seed(_options.Seed);
        var random = new Random(_options.Seed);
        var reports = new List<EpochReport>();
        var log = _options.Log is null ? null : new List<string>();
        var logInputs = InputFiles.Of([_options.Model], [.. DatasetLoader.Files(_options.Train), .. _options.Validation is null ? [] : DatasetLoader.Files(_options.Validation)]);
        if (_options.Log is not null)
        {
            OutputFile.Prepare(_options.Log, logInputs, "--log");
        }

        var total = TotalSteps;
        var averageFrom = _options.AverageEpochs is { } k ? Math.Max(1, EpochsRun - k + 1) : int.MaxValue;
        Snapshot? best = null, sum = null;
        var bestEpoch = 0;
        var bestAccuracy = double.NegativeInfinity;
        var step = 0;
        using (var trainer = new Trainer(_program, output, settings))
        {
            for (var epoch = 1; epoch <= EpochsRun; epoch++)
            {
                var order = Enumerable.Range(0, _train.Count).ToArray();
                if (_options.Shuffle)
                {
                    random.Shuffle(order);
                }

                var clock = Stopwatch.StartNew();
                double lossSum = 0, learningRate = 0;
                int seen = 0, epochSteps = 0;
                for (var start = 0; start < order.Length && step < total; start += _options.BatchSize)
                {
                    var indices = order.AsSpan(start, Math.Min(_options.BatchSize, order.Length - start)).ToArray();
                    using var batch = _feeder.Batch(_train, indices);
                    learningRate = settings.LearningRate * LearningRates.Factor(settings.Schedule, settings.WarmupSteps, total, step);
                    var loss = trainer.Step(batch, learningRate);
                    lossSum += loss * indices.Length;
                    seen += indices.Length;
                    step++;
                    epochSteps++;
                    status?.Report(FormattableString.Invariant($"epoch {epoch}/{EpochsRun}: step {epochSteps}/{Math.Min(StepsPerEpoch, total - step + epochSteps)}, loss {loss:F4}, {seen / Math.Max(clock.Elapsed.TotalSeconds, 1e-9):F0} samples/s"));
                }

                if (!double.IsFinite(lossSum) || !AllFinite())
                {
                    throw new RecyclingException($"training diverged in epoch {epoch} (a loss or a weight is not finite); lower --lr or clip gradients (--clip-grad-norm); nothing was written");
                }

                var speed = seen / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                var (valLoss, valAccuracy) = _validation is null ? ((double?)null, (double?)null) : Evaluate(trainer, _validation);
                var report = new EpochReport(epoch, epochSteps, lossSum / Math.Max(seen, 1), valLoss, valAccuracy, speed) { LearningRate = learningRate };
                reports.Add(report);
                progress?.Invoke(FineTuner.Describe(report));
                if (log is not null)
                {
                    log.Add(JsonSerializer.Serialize(report, LogStyle));
                    OutputFile.Prepare(_options.Log!, logInputs, "--log").WriteAllText(string.Join('\n', log) + "\n");
                }

                if (_options.Keep == KeepWeights.Best && valAccuracy >= bestAccuracy)
                {
                    // Ties go to the later epoch: equal accuracy after more training (usually a lower loss).
                    best?.Dispose();
                    best = Snapshot.Take(_program, ScalarType.Float32);
                    (bestEpoch, bestAccuracy) = (epoch, valAccuracy.Value);
                }

                if (epoch >= averageFrom)
                {
                    sum = sum is null ? Snapshot.Take(_program, ScalarType.Float64) : sum.Add(_program);
                }
            }
        }

        if (best is not null)
        {
            using (best)
            {
                best.Restore(_program, 1);
            }

            return (reports, [bestEpoch]);
        }

        if (sum is not null)
        {
            var count = EpochsRun - averageFrom + 1;
            using (sum)
            {
                sum.Restore(_program, 1.0 / count);
            }

            return (reports, [.. Enumerable.Range(averageFrom, count)]);
        }

        return (reports, [EpochsRun]);
    }

    private (double Loss, double Accuracy) Evaluate(Trainer trainer, Dataset data)
    {
        double loss = 0;
        var correct = 0;
        for (var start = 0; start < data.Count; start += _options.BatchSize)
        {
            using var batch = _feeder.Batch(data, [.. Enumerable.Range(start, Math.Min(_options.BatchSize, data.Count - start))]);
            var (l, c) = trainer.Evaluate(batch);
            loss += l;
            correct += c;
        }

        return (loss / data.Count, (double)correct / data.Count);
    }

    private bool AllFinite()
    {
        using var scope = NewDisposeScope();
        return _program.Trainable.All(p => p.isfinite().all().item<bool>());
    }

    /// <summary>Copies of the trainable parameters and the BatchNorm buffers, by name (a sum of several when added to).</summary>
    private sealed class Snapshot : IDisposable
    {
        private readonly Dictionary<string, Tensor> _values;

        private Snapshot(Dictionary<string, Tensor> values) => _values = values;

        public static Snapshot Take(OnnxProgram program, ScalarType type)
        {
            using var noGrad = no_grad();
            return new Snapshot(Tensors(program).ToDictionary(p => p.Key, p => p.Value.detach().to(type, copy: true), StringComparer.Ordinal));
        }

        public Snapshot Add(OnnxProgram program)
        {
            using var noGrad = no_grad();
            foreach (var (name, tensor) in Tensors(program))
            {
                using var wide = tensor.detach().to(_values[name].dtype);
                _values[name].add_(wide);
            }

            return this;
        }

        /// <summary>Writes the values times <paramref name="scale"/> into the program's tensors.</summary>
        public void Restore(OnnxProgram program, double scale)
        {
            using var noGrad = no_grad();
            foreach (var (name, tensor) in Tensors(program))
            {
                using var scaled = _values[name].mul(scale);
                tensor.copy_(scaled);
            }
        }

        public void Dispose()
        {
            foreach (var tensor in _values.Values)
            {
                tensor.Dispose();
            }
        }

        private static IEnumerable<KeyValuePair<string, Tensor>> Tensors(OnnxProgram program) =>
            program.Parameters.Where(p => p.Value.requires_grad).Select(p => new KeyValuePair<string, Tensor>(p.Key, p.Value)).Concat(program.Buffers);
    }
}
