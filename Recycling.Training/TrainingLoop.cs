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

    /// <summary>
    /// Trains; returns the epochs' reports, the epochs whose weights the program holds afterwards and the step the run
    /// resumed at (null: it started from the beginning). With a <paramref name="checkpoint"/>, the state is saved at
    /// every epoch end and whenever <see cref="Checkpoint.Due"/> says so, and a checkpoint of this run is resumed.
    /// </summary>
    public (IReadOnlyList<EpochReport> Reports, IReadOnlyList<int> Kept, int? ResumedAt) Run(string output, Action<string>? progress, IProgress<string>? status,
        Checkpoint? checkpoint = null, Action<string>? notice = null)
    {
        var settings = _options.Settings;
        manual_seed(_options.Seed);
        if (_program.Device.type == TorchSharp.DeviceType.CUDA)
        {
            // Dropout on the GPU draws from CUDA's generators, which manual_seed may leave alone.
            cuda.manual_seed_all(_options.Seed);
        }
        var random = new Random(_options.Seed);
        var log = _options.Log is null ? null : new List<string>();
        var logInputs = InputFiles.Of([_options.Model], [.. DatasetLoader.Files(_options.Train), .. _options.Validation is null ? [] : DatasetLoader.Files(_options.Validation)]);
        if (_options.Log is not null)
        {
            OutputFile.Prepare(_options.Log, logInputs, "--log");
        }

        var total = TotalSteps;
        var averageFrom = _options.AverageEpochs is { } k ? Math.Max(1, EpochsRun - k + 1) : int.MaxValue;
        using var trainer = new Trainer(_program, output, settings);
        using var state = checkpoint?.Resume(_program, trainer, notice ?? progress) ?? new TrainingState();
        int? resumedAt = null;
        if (state.Step > 0 || state.Epoch > 1)
        {
            resumedAt = state.Step;
            (notice ?? progress)?.Invoke(FormattableString.Invariant($"resuming from checkpoint {JsonSerializer.Serialize(checkpoint!.Path)} at step {state.Step} of {total} (epoch {Math.Min(state.Epoch, EpochsRun)} of {EpochsRun})"));
            log?.AddRange(state.Reports.Select(r => JsonSerializer.Serialize(r, LogStyle)));
        }

        for (var epoch = 1; epoch <= EpochsRun; epoch++)
        {
            var order = Enumerable.Range(0, _train.Count).ToArray();
            if (_options.Shuffle)
            {
                random.Shuffle(order);
            }

            if (epoch < state.Epoch)
            {
                continue; // finished before the checkpoint: only its data order is replayed, so that the seeded orders continue
            }

            var clock = Stopwatch.StartNew();
            for (var start = state.Start; start < order.Length && state.Step < total; start += _options.BatchSize)
            {
                var indices = order.AsSpan(start, Math.Min(_options.BatchSize, order.Length - start)).ToArray();
                using var batch = _feeder.Batch(_train, indices);
                state.LearningRate = settings.LearningRate * LearningRates.Factor(settings.Schedule, settings.WarmupSteps, total, state.Step);
                var loss = trainer.Step(batch, state.LearningRate);
                if (!double.IsFinite(loss))
                {
                    throw new RecyclingException(FormattableString.Invariant($"training diverged: the training loss of step {state.Step + 1} (epoch {epoch}) is {loss}; lower --lr or clip gradients (--clip-grad-norm); nothing was written"));
                }

                state.LossSum += loss * indices.Length;
                state.Seen += indices.Length;
                state.Step++;
                state.EpochSteps++;
                state.Start = start + indices.Length;
                var seconds = state.Seconds + clock.Elapsed.TotalSeconds;
                status?.Report(FormattableString.Invariant($"epoch {epoch}/{EpochsRun}: step {state.EpochSteps}/{Math.Min(StepsPerEpoch, total - state.Step + state.EpochSteps)}, loss {loss:F4}, {state.Seen / Math.Max(seconds, 1e-9):F0} samples/s"));
                var epochEnds = state.Start >= order.Length || state.Step >= total;
                if (!epochEnds && checkpoint is not null && checkpoint.Due(state.Step))
                {
                    state.Seconds = seconds;
                    clock.Restart();
                    checkpoint.Save(state, _program, trainer);
                }
            }

            if (!double.IsFinite(state.LossSum) || !AllFinite())
            {
                throw new RecyclingException($"training diverged in epoch {epoch} (a loss or a weight is not finite); lower --lr or clip gradients (--clip-grad-norm); nothing was written");
            }

            var speed = state.Seen / Math.Max(state.Seconds + clock.Elapsed.TotalSeconds, 1e-9);
            var (valLoss, valAccuracy) = _validation is null ? ((double?)null, (double?)null) : Evaluate(trainer, _validation);
            if (valLoss is { } vl && !double.IsFinite(vl))
            {
                throw new RecyclingException(FormattableString.Invariant($"training diverged: the validation loss after epoch {epoch} (step {state.Step}) is {vl}; lower --lr or clip gradients (--clip-grad-norm); nothing was written"));
            }

            var report = new EpochReport(epoch, state.EpochSteps, state.LossSum / Math.Max(state.Seen, 1), valLoss, valAccuracy, speed) { LearningRate = state.LearningRate };
            state.Reports.Add(report);
            progress?.Invoke(FineTuner.Describe(report));
            if (log is not null)
            {
                log.Add(JsonSerializer.Serialize(report, LogStyle));
                OutputFile.Prepare(_options.Log!, logInputs, "--log").WriteAllText(string.Join('\n', log) + "\n");
            }

            if (_options.Keep == KeepWeights.Best && valAccuracy >= state.BestAccuracy)
            {
                // Ties go to the later epoch: equal accuracy after more training (usually a lower loss).
                state.Best?.Dispose();
                state.Best = Snapshot.Take(_program, null);
                (state.BestEpoch, state.BestAccuracy) = (epoch, valAccuracy.Value);
            }

            if (epoch >= averageFrom)
            {
                state.Sum = state.Sum is null ? Snapshot.Take(_program, ScalarType.Float64) : state.Sum.Add(_program);
            }

            state.NextEpoch();
            checkpoint?.Save(state, _program, trainer);
        }

        if (state.Best is not null)
        {
            state.Best.Restore(_program, 1);
            return (state.Reports, [state.BestEpoch], resumedAt);
        }

        if (state.Sum is not null)
        {
            var count = EpochsRun - averageFrom + 1;
            state.Sum.Restore(_program, 1.0 / count);
            return (state.Reports, [.. Enumerable.Range(averageFrom, count)], resumedAt);
        }

        return (state.Reports, [EpochsRun], resumedAt);
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
    internal sealed class Snapshot : IDisposable
    {
        private readonly Dictionary<string, Tensor> _values;

        private Snapshot(Dictionary<string, Tensor> values) => _values = values;

        public IEnumerable<KeyValuePair<string, Tensor>> Values => _values;

        /// <summary>A snapshot that owns <paramref name="values"/>.</summary>
        public static Snapshot From(IEnumerable<KeyValuePair<string, Tensor>> values) => new(values.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal));

        /// <param name="type">The copies' type (float64 for a sum); null: each tensor's own.</param>
        public static Snapshot Take(OnnxProgram program, ScalarType? type)
        {
            using var noGrad = no_grad();
            return new Snapshot(Tensors(program).ToDictionary(p => p.Key, p => p.Value.detach().to(type ?? p.Value.dtype, copy: true), StringComparer.Ordinal));
        }

        public Snapshot Add(OnnxProgram program)
        {
            using var noGrad = no_grad();
            foreach (var (name, tensor) in Tensors(program))
            {
                using var wide = tensor.detach().to(_values[name].dtype);
                _values[name].PlusInPlace(wide);
            }

            return this;
        }

        /// <summary>Writes the values times <paramref name="scale"/> into the program's tensors.</summary>
        public void Restore(OnnxProgram program, double scale)
        {
            using var noGrad = no_grad();
            foreach (var (name, tensor) in Tensors(program))
            {
                using var scaled = _values[name].Times(scale);
                tensor.copy_(scaled);
            }
        }

        /// <summary>Copies the values into the program's tensors, which must be exactly these (names, shapes, types).</summary>
        public void Load(OnnxProgram program)
        {
            var targets = Tensors(program).ToList();
            if (targets.Count != _values.Count)
            {
                throw new InvalidDataException($"{_values.Count} tensors where the model trains {targets.Count}");
            }

            using var noGrad = no_grad();
            foreach (var (name, tensor) in targets)
            {
                if (!_values.TryGetValue(name, out var value) || value.dtype != tensor.dtype || !value.shape.SequenceEqual(tensor.shape))
                {
                    throw new InvalidDataException($"tensor '{name}' is missing or has another shape or type");
                }

                tensor.copy_(value);
            }
        }

        public void Dispose()
        {
            foreach (var tensor in _values.Values)
            {
                tensor.Dispose();
            }
        }

        /// <summary>The program's trainable parameters and its BatchNorm buffers, by name.</summary>
        public static IEnumerable<KeyValuePair<string, Tensor>> Tensors(OnnxProgram program) =>
            program.Parameters.Where(p => p.Value.requires_grad).Select(p => new KeyValuePair<string, Tensor>(p.Key, p.Value)).Concat(program.Buffers);
    }
}
