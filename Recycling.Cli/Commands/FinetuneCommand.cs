using System.CommandLine;
using Recycling.Onnx;
using Recycling.Training;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle finetune`: fine-tune an ONNX model's float initializers with TorchSharp on labelled data; `--check` lists the nodes that cannot run.</summary>
internal static class FinetuneCommand
{
    internal static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The .onnx model to fine-tune." };
        var train = new Option<string?>("--data", "-d", "--train") { Description = "Training data. " + DataDescription + DataOptionSet.DataNote };
        var output = new Option<string?>("--output", "-o") { Description = "The fine-tuned .onnx written (the same graph with trained values)." };
        var validation = new Option<string?>("--test") { Description = "Held-out data, evaluated after every epoch (accuracy, loss)." };
        var outputName = new Option<string?>("--output-name") { Description = "The graph output trained with cross-entropy (default: logits, else the only output)." };
        var optimizer = new Option<string>("--optimizer") { Description = "sgd, adam or adamw (PyTorch's defaults).", DefaultValueFactory = _ => "sgd" };
        var lr = new Option<double>("--lr") { Description = "Learning rate.", DefaultValueFactory = _ => 0.01 };
        var momentum = new Option<double>("--momentum") { Description = "SGD momentum.", DefaultValueFactory = _ => 0 };
        var nesterov = new Option<bool>("--nesterov") { Description = "Nesterov momentum (SGD)." };
        var decay = new Option<double?>("--weight-decay") { Description = "Weight decay (default: 0.01 for adamw, 0 otherwise)." };
        var smoothing = new Option<double>("--label-smoothing") { Description = "Cross-entropy label smoothing.", DefaultValueFactory = _ => 0 };
        var clip = new Option<double?>("--clip-grad-norm") { Description = "Clip the global gradient L2 norm to this value." };
        var epochs = new Option<int>("--epochs") { Description = "Passes over the training data.", DefaultValueFactory = _ => 1 };
        var steps = new Option<int?>("--steps") { Description = "Stop after this many optimizer steps in all." };
        var batch = new Option<int>("--batch-size") { Description = "Samples per step (the last partial batch is kept).", DefaultValueFactory = _ => 32 };
        var seed = new Option<int>("--seed") { Description = "Seed of the data order and of dropout.", DefaultValueFactory = _ => 0 };
        var noShuffle = new Option<bool>("--no-shuffle") { Description = "Train in file order every epoch." };
        var batchNorm = new Option<string>("--batchnorm") { Description = "train: batch statistics, running statistics updated as PyTorch does; frozen: stored statistics (affine parameters still train).", DefaultValueFactory = _ => "train" };
        var freeze = new Option<string?>("--freeze") { Description = "Regular expression: initializers whose name matches stay fixed." };
        var trainOnly = new Option<string?>("--train-only") { Description = "Regular expression: only initializers whose name matches train." };
        var head = new Option<string?>("--head") { Description = "new:K: attach a new K-way linear head (output logits) at --at; probe: the same, fitted first by a linear probe on the frozen features (LP-FT), K from the labels." };
        var at = new Option<string?>("--at") { Description = "The value the new head reads, flattened per sample: a graph output or any internal value (default: the output 'features', else the only output). The nodes after it are dropped." };
        var headInit = new Option<string?>("--head-init") { Description = "zeros (default), random (PyTorch nn.Linear init, seeded by --seed) or probe." };
        var schedule = new Option<string>("--schedule") { Description = "Learning rate over the run's steps after the warmup: constant, cosine (to 0) or linear (to 0), as PyTorch's LambdaLR/CosineAnnealingLR step them.", DefaultValueFactory = _ => "constant" };
        var warmup = new Option<int>("--warmup-steps") { Description = "Steps of linear warmup from 0 to --lr (the first step has lr 0, as in PyTorch).", DefaultValueFactory = _ => 0 };
        var keep = new Option<string>("--keep") { Description = "Weights written: last (the last epoch's) or best (the epoch with the highest --test accuracy; ties: the later).", DefaultValueFactory = _ => "last" };
        var average = new Option<int?>("--average-epochs") { Description = "Write the uniform average of the end-of-epoch weights of the last K epochs (BatchNorm statistics too); K >= --epochs: all." };
        var log = new Option<string?>("--log") { Description = "JSON Lines log, one object per epoch, rewritten after each epoch." };
        var external = new Option<bool>("--external-data") { Description = "Store tensors in one data file beside the model (without it: only when the model passes 2 GiB)." };
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Folder of the checkpoint saved at every epoch end and every --checkpoint-every steps (default: OUT.onnx.ckpt beside the output); rerunning the same command resumes from it." };
        var checkpointEvery = new Option<int?>("--checkpoint-every") { Description = "Also save a checkpoint every N optimizer steps (0: only at epoch ends; default: every 5 minutes of training)." };
        var noCheckpoint = new Option<bool>("--no-checkpoint") { Description = "Neither read nor write a checkpoint." };
        var restart = new Option<bool>("--restart") { Description = "Start from the beginning even when a checkpoint of this run exists." };
        var keepCheckpoint = new Option<bool>("--keep-checkpoint") { Description = "Keep the checkpoint after success (by default it is removed)." };
        var oldVal = Legacy<string?>("--val");
        var check = new Option<bool>("--check") { Description = "Only list the nodes that cannot run (op, domain, opset, node); exit 1 when there are any." };
        var device = TrainingDeviceOption();
        var json = JsonOption();
        var command = new Command("finetune", "Fine-tune an ONNX model in .NET (TorchSharp): cross-entropy on labelled data, trained values written back into the same graph.")
        {
            Arguments = { model },
            Options = { train, output, validation, outputName, optimizer, lr, momentum, nesterov, decay, smoothing, clip, epochs, steps, batch, seed, noShuffle, batchNorm, schedule, warmup, keep, average, log, external, freeze, trainOnly, head, at, headInit, checkpoint, checkpointEvery, noCheckpoint, restart, keepCheckpoint, device, check, json, oldVal },
        };
        var dataOptions = new DataOptionSet();
        dataOptions.AddTo(command);

        command.SetAction(parseResult =>
        {
            var path = parseResult.GetValue(model)!;
            var stdout = parseResult.InvocationConfiguration.Output;
            if (parseResult.GetValue(check))
            {
                var problems = FineTuner.Check(path);
                foreach (var problem in problems)
                {
                    stdout.WriteLine(problem);
                }

                stdout.WriteLine(problems.Count == 0 ? $"{path}: every node can run" : $"{path}: {problems.Count} node(s) cannot run");
                return problems.Count == 0 ? 0 : RecycleCli.ErrorExitCode;
            }

            var chosen = ChosenTrainingDevice(parseResult, device);
            var options = new FineTuneOptions
            {
                Model = path,
                Device = chosen,
                Train = parseResult.GetValue(train) ?? throw new RecyclingException("finetune needs --data DATA (or --check)"),
                Output = parseResult.GetValue(output) ?? throw new RecyclingException("finetune needs -o OUT.onnx"),
                Validation = Value(parseResult, validation, oldVal),
                OutputName = parseResult.GetValue(outputName),
                Settings = new TrainingSettings
                {
                    Optimizer = parseResult.GetValue(optimizer)!.ToLowerInvariant() switch
                    {
                        "sgd" => OptimizerKind.Sgd,
                        "adam" => OptimizerKind.Adam,
                        "adamw" => OptimizerKind.AdamW,
                        var other => throw new RecyclingException($"--optimizer {other}: use sgd, adam or adamw"),
                    },
                    LearningRate = parseResult.GetValue(lr),
                    Momentum = parseResult.GetValue(momentum),
                    Nesterov = parseResult.GetValue(nesterov),
                    WeightDecay = parseResult.GetValue(decay),
                    LabelSmoothing = parseResult.GetValue(smoothing),
                    MaxGradNorm = parseResult.GetValue(clip),
                    Schedule = parseResult.GetValue(schedule)!.ToLowerInvariant() switch
                    {
                        "constant" => LearningRateSchedule.Constant,
                        "cosine" => LearningRateSchedule.Cosine,
                        "linear" => LearningRateSchedule.Linear,
                        var other => throw new RecyclingException($"--schedule {other}: use constant, cosine or linear"),
                    },
                    WarmupSteps = parseResult.GetValue(warmup),
                    BatchNorm = parseResult.GetValue(batchNorm)!.ToLowerInvariant() switch
                    {
                        "train" => Training.Ops.BatchNormMode.Train,
                        "frozen" => Training.Ops.BatchNormMode.Frozen,
                        var other => throw new RecyclingException($"--batchnorm {other}: use train or frozen"),
                    },
                },
                Epochs = parseResult.GetValue(epochs),
                MaxSteps = parseResult.GetValue(steps),
                BatchSize = parseResult.GetValue(batch),
                Seed = parseResult.GetValue(seed),
                Shuffle = !parseResult.GetValue(noShuffle),
                Keep = parseResult.GetValue(keep)!.ToLowerInvariant() switch
                {
                    "last" => KeepWeights.Last,
                    "best" => KeepWeights.Best,
                    var other => throw new RecyclingException($"--keep {other}: use last or best"),
                },
                AverageEpochs = parseResult.GetValue(average),
                Log = parseResult.GetValue(log),
                ExternalData = parseResult.GetValue(external) ? ExternalDataMode.External : ExternalDataMode.Auto,
                Parameters = new ParameterSelection
                {
                    Freeze = FineTuner.Pattern(parseResult.GetValue(freeze), "--freeze"),
                    TrainOnly = FineTuner.Pattern(parseResult.GetValue(trainOnly), "--train-only"),
                },
                Text = dataOptions.Text(parseResult),
                Head = parseResult.GetValue(head) is { } spec ? HeadSpec.Parse(spec, parseResult.GetValue(at), parseResult.GetValue(headInit))
                    : parseResult.GetValue(at) is not null || parseResult.GetValue(headInit) is not null ? throw new RecyclingException("--at and --head-init need --head new:K or --head probe")
                    : null,
                Preprocessing = dataOptions.Preprocessing(parseResult),
                Checkpoint = new CheckpointSettings
                {
                    Enabled = !parseResult.GetValue(noCheckpoint),
                    Folder = parseResult.GetValue(checkpoint),
                    EverySteps = parseResult.GetValue(checkpointEvery),
                    Restart = parseResult.GetValue(restart),
                    KeepAfterSuccess = parseResult.GetValue(keepCheckpoint),
                },
            };
            var asJson = parseResult.GetValue(json);
            var notice = asJson ? parseResult.InvocationConfiguration.Error.WriteLine : (Action<string>)stdout.WriteLine;
            var result = WithStatus(asJson, "fine-tuning", status => FineTuner.RunWithNotices(options, asJson ? null : stdout.WriteLine, status, notice));
            if (asJson)
            {
                WriteJson(parseResult, result);
            }
            else
            {
                stdout.WriteLine($"{result.Output}: {result.TrainableTensors} tensors ({result.TrainableValues} values) trained on '{result.TrainedOutput}', {Kept(result.KeptEpochs)}; ONNX Runtime reproduces the trained outputs on {result.CheckedSamples} samples (max relative gap {result.OnnxRuntimeGap:G3})");
            }

            return 0;
        });
        return command;
    }

    private static string Kept(IReadOnlyList<int> epochs) =>
        epochs.Count == 1 ? $"weights of epoch {epochs[0]}" : $"average of epochs {epochs[0]}-{epochs[^1]}";
}
