using Recycling.Onnx;
using Recycling.Training.Ops;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training;

/// <summary>One labelled batch: the graph inputs and the class indices.</summary>
internal sealed record Batch(IReadOnlyDictionary<string, Tensor> Feeds, Tensor Labels) : IDisposable
{
    public void Dispose()
    {
        foreach (var feed in Feeds.Values)
        {
            feed.Dispose();
        }

        Labels.Dispose();
    }
}

/// <summary>Cross-entropy training of one graph output with a PyTorch optimizer over the program's trainable parameters.</summary>
internal sealed class Trainer : IDisposable
{
    private readonly OnnxProgram _program;
    private readonly string _output;
    private readonly TrainingSettings _settings;
    private readonly ParameterOptimizer _optimizer;
    private readonly List<TorchSharp.Modules.Parameter> _trainable;

    public Trainer(OnnxProgram program, string output, TrainingSettings settings)
    {
        _program = program;
        _output = output;
        _settings = settings;
        _trainable = [.. program.Trainable];
        if (_trainable.Count == 0)
        {
            throw new RecyclingException("no parameter is left to train (check --freeze / --train-only)");
        }

        _optimizer = settings.Optimizer is OptimizerKind.Sgd or OptimizerKind.Adam or OptimizerKind.AdamW
            ? new ParameterOptimizer(settings.Optimizer, _trainable, settings.EffectiveWeightDecay, settings.Momentum, settings.Nesterov)
            : throw new ArgumentOutOfRangeException(nameof(settings));
        NativeHeap.KeepFreedMemory();
    }

    /// <summary>One optimizer step at the settings' learning rate.</summary>
    public double Step(Batch batch) => Step(batch, _settings.LearningRate);

    /// <summary>One optimizer step on <paramref name="batch"/> at <paramref name="learningRate"/>; returns the batch's mean loss before the step.</summary>
    public double Step(Batch batch, double learningRate)
    {
        using var scope = NewDisposeScope();
        var context = new OpContext { Training = true, BatchNorm = _settings.BatchNorm };
        var logits = Logits(batch, context);
        var loss = F.cross_entropy(logits, batch.Labels, label_smoothing: _settings.LabelSmoothing);
        _optimizer.ZeroGrad();
        loss.backward();
        if (_settings.MaxGradNorm is { } max)
        {
            nn.utils.clip_grad_norm_(_trainable, max);
        }

        _optimizer.Step(learningRate);
        return loss.ToDouble();
    }

    /// <summary>Eval-mode loss sum and correct count over <paramref name="batch"/>.</summary>
    public (double LossSum, int Correct) Evaluate(Batch batch)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = Logits(batch, new OpContext());
        var loss = F.cross_entropy(logits, batch.Labels, reduction: nn.Reduction.Sum).ToDouble();
        var correct = logits.argmax(1).eq(batch.Labels).sum().item<long>();
        return (loss, (int)correct);
    }

    public Tensor Logits(Batch batch, OpContext context)
    {
        var logits = _program.Forward(batch.Feeds, context, [_output])[_output];
        if (logits.dim() != 2)
        {
            logits = logits.reshape(logits.shape[0], -1);
        }

        // A float16/bfloat16 model's logits: the loss in float32, as mixed-precision training computes it.
        return logits.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? logits.to(ScalarType.Float32) : logits;
    }

    /// <summary>The optimizer's state (momentum buffers, Adam moments and step counts), for a checkpoint.</summary>
    public byte[] OptimizerState() => _optimizer.State();

    /// <summary>Restores what <see cref="OptimizerState"/> returned (of an optimizer over the same parameters).</summary>
    public void LoadOptimizerState(byte[] state) => _optimizer.LoadState(state);

    public void Dispose() => _optimizer.Dispose();
}
