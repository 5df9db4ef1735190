using Recycling.Onnx.Proto;
using static TorchSharp.torch;

namespace Recycling.Training.Ops;

/// <summary>What an initializer feeding an input slot is: trainable data, a BatchNorm running statistic, or a constant (shapes, axes, bounds).</summary>
internal enum InputRole
{
    Data,
    RunningStatistic,
    Constant,
}

/// <summary>How BatchNormalization behaves in training mode.</summary>
public enum BatchNormMode
{
    /// <summary>Batch statistics, running statistics updated as PyTorch's train mode does.</summary>
    Train,

    /// <summary>Stored statistics; the affine parameters still train.</summary>
    Frozen,
}

/// <summary>The state a forward pass runs in.</summary>
internal sealed class OpContext
{
    public bool Training { get; init; }

    public BatchNormMode BatchNorm { get; init; } = BatchNormMode.Train;
}

/// <summary>One node compiled: inputs in ONNX order (null for an omitted optional input), outputs in ONNX order.</summary>
internal delegate Tensor[] OpRun(OpContext context, Tensor?[] inputs);

/// <summary>
/// A converter for one op type from one since-version on (until the next registered since-version), the way
/// onnx2torch keys them. <see cref="Create"/> reads the attributes once and throws <see cref="UnsupportedOpException"/>
/// for attribute values it does not implement.
/// </summary>
internal sealed record OpSpec(string Domain, string OpType, int SinceVersion, Func<NodeAttributes, OpRun> Create, Func<int, InputRole>? Roles = null)
{
    public InputRole Role(int slot) => Roles?.Invoke(slot) ?? InputRole.Data;

    /// <summary>Inputs from slot <paramref name="first"/> on are constants (axes, shapes, bounds).</summary>
    public static Func<int, InputRole> ConstantFrom(int first) => slot => slot >= first ? InputRole.Constant : InputRole.Data;
}

/// <summary>An op, or one of its attribute values, that no converter implements.</summary>
internal sealed class UnsupportedOpException(string message) : Exception(message);

/// <summary>A node's attributes by name, with ONNX defaults; <paramref name="device"/>: the program's, where tensors made from attributes go.</summary>
internal sealed class NodeAttributes(NodeProto node, Func<TensorProto, Tensor> loadTensor, Device? device = null)
{
    private readonly Dictionary<string, AttributeProto> _byName = node.Attribute.GroupBy(a => a.Name).ToDictionary(g => g.Key, g => g.Last());

    public NodeProto Node { get; } = node;

    public Device Device { get; } = device ?? CPU;

    public bool Has(string name) => _byName.ContainsKey(name);

    public long Int(string name, long fallback) => _byName.TryGetValue(name, out var a) ? a.I : fallback;

    public float Float(string name, float fallback) => _byName.TryGetValue(name, out var a) ? a.F : fallback;

    public string String(string name, string fallback) => _byName.TryGetValue(name, out var a) ? a.S.ToStringUtf8() : fallback;

    public long[]? Ints(string name) => _byName.TryGetValue(name, out var a) ? [.. a.Ints] : null;

    public float[]? Floats(string name) => _byName.TryGetValue(name, out var a) ? [.. a.Floats] : null;

    public Tensor? Tensor(string name) => _byName.TryGetValue(name, out var a) && a.T is not null ? loadTensor(a.T) : null;

    public UnsupportedOpException Unsupported(string what) => new($"attribute {what}");
}

/// <summary>Helpers the converters share.</summary>
internal static class OpHelpers
{
    public static long[] Longs(Tensor t)
    {
        // Shape and axes tensors are int64 on the CPU already: read them in place (Reshape, Expand and Squeeze read
        // one every step; a conversion would make two more tensors each time).
        if (t.dtype == ScalarType.Int64 && t.device_type == TorchSharp.DeviceType.CPU)
        {
            return t.data<long>().ToArray();
        }

        using var cpu = t.to(ScalarType.Int64).cpu();
        return cpu.data<long>().ToArray();
    }

    public static long[]? OptionalLongs(Tensor?[] inputs, int slot) =>
        slot < inputs.Length && inputs[slot] is { } t ? Longs(t) : null;

    public static double Scalar(Tensor t)
    {
        using var cpu = t.to(ScalarType.Float64).cpu();
        return cpu.data<double>()[0];
    }

    public static long Axis(long axis, long rank) => axis < 0 ? axis + rank : axis;

    public static bool IsInteger(Tensor t) => t.dtype is ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte;

    public static Tensor[] One(Tensor t) => [t];

    /// <summary>ONNX data type number to TorchSharp's.</summary>
    public static ScalarType ToTorch(long onnxType) => onnxType switch
    {
        1 => ScalarType.Float32,
        2 => ScalarType.Byte,
        3 => ScalarType.Int8,
        5 => ScalarType.Int16,
        6 => ScalarType.Int32,
        7 => ScalarType.Int64,
        9 => ScalarType.Bool,
        10 => ScalarType.Float16,
        11 => ScalarType.Float64,
        16 => ScalarType.BFloat16,
        _ => throw new UnsupportedOpException($"element type {onnxType}"),
    };
}
