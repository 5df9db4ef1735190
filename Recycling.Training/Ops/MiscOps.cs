using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>Constant, Identity, Cast, Dropout (ratio as input from 12), ConstantOfShape, Range, Softmax/LogSoftmax
/// (2-D coercion before 13), Hardmax, ArgMax.</summary>
internal static class MiscOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return new OpSpec("", "Constant", 1, a =>
        {
            var value = a.Tensor("value") ?? ConstantValue(a);
            return (_, _) => [value];
        });
        yield return new OpSpec("", "Identity", 1, _ => (_, i) => [i[0]!]);
        yield return new OpSpec("", "Cast", 6, a =>
        {
            var to = OpHelpers.ToTorch(a.Int("to", 1));
            return (_, i) => [i[0]!.dtype == to ? i[0]! : i[0]!.to(to)];
        });
        yield return new OpSpec("", "CastLike", 15, _ => (_, i) => [i[0]!.to(i[1]!.dtype)], OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "Dropout", 7, a =>
        {
            var ratio = a.Float("ratio", 0.5f);
            return Dropout(a, _ => ratio);
        });
        yield return new OpSpec("", "Dropout", 12, a => Dropout(a, i => i.Length > 1 && i[1] is { } r ? OpHelpers.Scalar(r) : 0.5), OpSpec.ConstantFrom(1));
        yield return new OpSpec("", "ConstantOfShape", 9, a =>
        {
            var value = a.Tensor("value");
            return (_, i) =>
            {
                var shape = OpHelpers.Longs(i[0]!);
                return [value is null ? torch.zeros(shape, device: i[0]!.device) : value.reshape(1).expand(shape).clone()];
            };
        }, OpSpec.ConstantFrom(0));
        yield return new OpSpec("", "Range", 11, _ => (_, i) =>
        {
            var dtype = i[0]!.dtype;
            using var start = i[0]!.to(ScalarType.Float64);
            using var limit = i[1]!.to(ScalarType.Float64);
            using var delta = i[2]!.to(ScalarType.Float64);
            var (s, l, d) = (start.item<double>(), limit.item<double>(), delta.item<double>());
            var count = Math.Max((long)Math.Ceiling((l - s) / d), 0);
            using var steps = TorchScalars.Range(count, ScalarType.Float64, i[0]!.device);
            return [steps.Times(d).Plus(s).to(dtype)];
        }, OpSpec.ConstantFrom(0));
        yield return Softmax("Softmax", 1, coerce2D: true, log: false);
        yield return Softmax("Softmax", 13, coerce2D: false, log: false);
        yield return Softmax("LogSoftmax", 1, coerce2D: true, log: true);
        yield return Softmax("LogSoftmax", 13, coerce2D: false, log: true);
        yield return Hardmax(1, coerce2D: true);
        yield return Hardmax(13, coerce2D: false);
        yield return new OpSpec("", "ArgMax", 1, a =>
        {
            var axis = a.Int("axis", 0);
            var keep = a.Int("keepdims", 1) != 0;
            if (a.Int("select_last_index", 0) != 0)
            {
                throw a.Unsupported("select_last_index=1");
            }

            return (_, i) => [i[0]!.argmax(OpHelpers.Axis(axis, i[0]!.dim()), keep)];
        });
    }

    private static Tensor ConstantValue(NodeAttributes a)
    {
        if (a.Has("value_float"))
        {
            return torch.tensor(a.Float("value_float", 0), device: a.Device);
        }

        if (a.Has("value_int"))
        {
            return torch.tensor(a.Int("value_int", 0), device: a.Device);
        }

        if (a.Floats("value_floats") is { } floats)
        {
            return torch.tensor(floats, device: a.Device);
        }

        if (a.Ints("value_ints") is { } ints)
        {
            return torch.tensor(ints, device: a.Device);
        }

        throw a.Unsupported("Constant without a tensor, float or int value");
    }

    private static OpRun Dropout(NodeAttributes a, Func<Tensor?[], double> ratio)
    {
        var mask = a.Node.Output.Count > 1 && a.Node.Output[1].Length > 0;
        return (context, i) =>
        {
            var x = i[0]!;

            // Dropout drops only while fine-tuning; the exported training_mode input is ignored (inference never drops).
            var y = context.Training ? F.dropout(x, ratio(i), true) : x;
            return mask ? [y, torch.ones_like(x, ScalarType.Bool)] : [y];
        };
    }

    /// <summary>1 at the first maximum along the axis, 0 elsewhere (with Softmax's 2-D coercion before 13).</summary>
    private static OpSpec Hardmax(int since, bool coerce2D) => new("", "Hardmax", since, a =>
    {
        var axis = a.Int("axis", coerce2D ? 1 : -1);
        return (_, i) =>
        {
            var x = i[0]!;
            var dim = OpHelpers.Axis(axis, x.dim());
            var flat = coerce2D ? x.reshape(x.shape[..(int)dim].Aggregate(1L, (p, v) => p * v), -1) : x;
            var along = coerce2D ? 1 : dim;
            using var first = flat.argmax(along, true);
            using var one = torch.ones_like(first, flat.dtype);
            return [torch.zeros_like(flat).scatter(along, first, one).reshape(x.shape)];
        };
    });

    private static OpSpec Softmax(string op, int since, bool coerce2D, bool log) => new("", op, since, a =>
    {
        var axis = a.Int("axis", coerce2D ? 1 : -1);
        return (_, i) =>
        {
            var x = i[0]!;
            var dim = OpHelpers.Axis(axis, x.dim());
            if (!coerce2D || dim == x.dim() - 1)
            {
                return [log ? F.log_softmax(x, dim) : F.softmax(x, dim)];
            }

            var flat = x.reshape(x.shape[..(int)dim].Aggregate(1L, (p, v) => p * v), -1);
            return [(log ? F.log_softmax(flat, 1) : F.softmax(flat, 1)).reshape(x.shape)];
        };
    });
}
