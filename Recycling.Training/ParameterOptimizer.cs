using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>
/// SGD (momentum, Nesterov), Adam (L2 weight decay) and AdamW (decoupled weight decay) with PyTorch's update rules and
/// defaults (betas 0.9 and 0.999, eps 1e-8, no dampening), computed as TorchSharp's optimizers compute them. Ours
/// rather than TorchSharp's because their steps pass numbers to LibTorch as implicit Scalars, which a collection on
/// another thread may free mid-call (<see cref="TorchScalars"/>): the crash of concurrent fine-tunings in addcdiv_.
/// </summary>
internal sealed class ParameterOptimizer : IDisposable
{
    private const double Beta1 = 0.9;
    private const double Beta2 = 0.999;
    private const double Epsilon = 1e-8;

    private readonly OptimizerKind _kind;
    private readonly IReadOnlyList<Parameter> _parameters;
    private readonly double _momentum;
    private readonly double _weightDecay;
    private readonly bool _nesterov;

    /// <summary>Per parameter: Adam's first and second moments, or SGD's momentum buffer (null until the first step, as in PyTorch).</summary>
    private readonly Tensor?[] _first;
    private readonly Tensor?[] _second;

    /// <summary>Per parameter: the updates it has had (Adam's bias correction counts only those, as PyTorch's does).</summary>
    private readonly long[] _steps;

    public ParameterOptimizer(OptimizerKind kind, IReadOnlyList<Parameter> parameters, double weightDecay, double momentum = 0, bool nesterov = false)
    {
        (_kind, _parameters, _weightDecay, _momentum, _nesterov) = (kind, parameters, weightDecay, momentum, nesterov);
        _first = new Tensor?[parameters.Count];
        _second = new Tensor?[parameters.Count];
        _steps = new long[parameters.Count];
        if (kind != OptimizerKind.Sgd)
        {
            using var noGrad = no_grad();
            for (var k = 0; k < parameters.Count; k++)
            {
                _first[k] = zeros_like(parameters[k]).DetachFromDisposeScope();
                _second[k] = zeros_like(parameters[k]).DetachFromDisposeScope();
            }
        }
    }

    public void ZeroGrad()
    {
        foreach (var parameter in _parameters)
        {
            using var grad = parameter.grad;
            grad?.zero_();
        }
    }

    /// <summary>One update of every parameter that has a gradient, at <paramref name="learningRate"/>.</summary>
    public void Step(double learningRate)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        for (var k = 0; k < _parameters.Count; k++)
        {
            var parameter = _parameters[k];
            if (parameter.grad is not { } grad)
            {
                continue;
            }

            if (_kind == OptimizerKind.Sgd)
            {
                SgdStep(k, parameter, grad, learningRate);
            }
            else
            {
                AdamStep(k, parameter, grad, learningRate);
            }
        }
    }

    private void SgdStep(int k, Parameter parameter, Tensor grad, double lr)
    {
        using var decay = _weightDecay.ToScalar();
        if (_weightDecay != 0)
        {
            grad = grad.add(parameter, decay);
        }

        if (_momentum != 0)
        {
            using var momentum = _momentum.ToScalar();
            if (_first[k] is not { } buffer)
            {
                _first[k] = buffer = grad.clone().detach().DetachFromDisposeScope();
            }
            else
            {
                using var one = 1.0.ToScalar();
                buffer.mul_(momentum).add_(grad, one);
            }

            grad = _nesterov ? grad.add(buffer, momentum) : buffer;
        }

        using var step = (-lr).ToScalar();
        parameter.add_(grad, step);
    }

    private void AdamStep(int k, Parameter parameter, Tensor grad, double lr)
    {
        var (first, second) = (_first[k]!, _second[k]!);
        if (_kind == OptimizerKind.AdamW)
        {
            using var shrink = (1 - (lr * _weightDecay)).ToScalar();
            parameter.mul_(shrink);
        }
        else if (_weightDecay != 0)
        {
            using var decay = _weightDecay.ToScalar();
            grad = grad.add(parameter, decay);
        }

        var steps = ++_steps[k];
        var correction1 = 1 - Math.Pow(Beta1, steps);
        var correction2 = 1 - Math.Pow(Beta2, steps);
        using (var beta1 = Beta1.ToScalar())
        using (var rest1 = (1 - Beta1).ToScalar())
        {
            first.mul_(beta1).add_(grad, rest1);
        }

        using (var beta2 = Beta2.ToScalar())
        using (var rest2 = (1 - Beta2).ToScalar())
        {
            second.mul_(beta2).addcmul_(grad, grad, rest2);
        }

        using var root = Math.Sqrt(correction2).ToScalar();
        using var epsilon = Epsilon.ToScalar();
        using var one = 1.0.ToScalar();
        var denominator = second.sqrt().div_(root).add_(epsilon, one);
        using var step = (-lr / correction1).ToScalar();
        parameter.addcdiv_(first, denominator, step);
    }

    /// <summary>The step count and every parameter's state, for a checkpoint.</summary>
    public byte[] State()
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(_parameters.Count);
            for (var k = 0; k < _parameters.Count; k++)
            {
                writer.Write(_steps[k]);
                WriteOptional(writer, _first[k]);
                WriteOptional(writer, _second[k]);
            }
        }

        return stream.ToArray();
    }

    /// <summary>Restores what <see cref="State"/> returned for the same parameters; <see cref="InvalidDataException"/> when it does not fit them.</summary>
    public void LoadState(byte[] state)
    {
        using var reader = new BinaryReader(new MemoryStream(state, writable: false));
        if (reader.ReadInt32() != _parameters.Count)
        {
            throw new InvalidDataException("the optimizer state is for other parameters");
        }

        var steps = new long[_parameters.Count];
        var first = new Tensor?[_parameters.Count];
        var second = new Tensor?[_parameters.Count];
        try
        {
            for (var k = 0; k < _parameters.Count; k++)
            {
                steps[k] = reader.ReadInt64() is >= 0 and var s ? s : throw new InvalidDataException("a negative step count");
                first[k] = ReadOptional(reader, _parameters[k]);
                second[k] = ReadOptional(reader, _parameters[k]);
                if ((first[k] is null || second[k] is null) != (_kind == OptimizerKind.Sgd) || (_kind == OptimizerKind.Sgd && second[k] is not null))
                {
                    throw new InvalidDataException("the optimizer state is of another optimizer");
                }
            }

            if (reader.BaseStream.Position != reader.BaseStream.Length)
            {
                throw new InvalidDataException("unexpected bytes after the optimizer state");
            }
        }
        catch
        {
            Dispose(first);
            Dispose(second);
            throw;
        }

        Dispose(_first);
        Dispose(_second);
        first.CopyTo(_first, 0);
        second.CopyTo(_second, 0);
        steps.CopyTo(_steps, 0);
    }

    public void Dispose()
    {
        Dispose(_first);
        Dispose(_second);
    }

    private static void Dispose(Tensor?[] tensors)
    {
        for (var k = 0; k < tensors.Length; k++)
        {
            tensors[k]?.Dispose();
            tensors[k] = null;
        }
    }

    private static void WriteOptional(BinaryWriter writer, Tensor? tensor)
    {
        writer.Write(tensor is not null);
        if (tensor is not null)
        {
            // The values in the parameter's own type (float32, or float64 for a float64 model), little-endian.
            using var cpu = tensor.detach().cpu().contiguous();
            writer.Write(checked((int)cpu.numel()));
            writer.Write(cpu.bytes);
        }
    }

    private static Tensor? ReadOptional(BinaryReader reader, Parameter like)
    {
        if (!reader.ReadBoolean())
        {
            return null;
        }

        var count = reader.ReadInt32();
        if (count != like.numel() || like.dtype is not (ScalarType.Float32 or ScalarType.Float64))
        {
            throw new InvalidDataException($"an optimizer state of {count} values where the parameter has {like.numel()}");
        }

        var bytes = reader.ReadBytes(checked(count * (like.dtype == ScalarType.Float64 ? sizeof(double) : sizeof(float))));
        var host = empty(like.shape, like.dtype, device: CPU);
        if (bytes.Length != host.NumberOfElements * host.ElementSize)
        {
            host.Dispose();
            throw new InvalidDataException("the optimizer state is cut");
        }

        host.bytes = bytes;
        return TensorConversion.MovedTo(host, like.device).DetachFromDisposeScope();
    }
}
