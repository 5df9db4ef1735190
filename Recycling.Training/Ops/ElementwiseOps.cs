using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training.Ops;

/// <summary>Numpy-broadcasting binary ops (opset 7 on), unary math and activations.</summary>
internal static class ElementwiseOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return Binary("Add", 7, (a, b) => a.Plus(b));
        yield return Binary("Sub", 7, (a, b) => a - b);
        yield return Binary("Mul", 7, (a, b) => a * b);
        yield return Binary("Div", 7, (a, b) => OpHelpers.IsInteger(a) && OpHelpers.IsInteger(b) ? a.div(b, RoundingMode.trunc) : a / b);
        yield return Binary("Pow", 7, (a, b) => OpHelpers.IsInteger(a) ? a.pow(b).to(a.dtype) : a.pow(b.to(a.dtype)));
        yield return Binary("Equal", 7, (a, b) => a.eq(b));
        yield return Binary("Less", 7, (a, b) => a.lt(b));
        yield return Binary("Greater", 7, (a, b) => a.gt(b));
        yield return Binary("LessOrEqual", 12, (a, b) => a.le(b));
        yield return Binary("GreaterOrEqual", 12, (a, b) => a.ge(b));
        yield return Binary("And", 7, (a, b) => a.logical_and(b));
        yield return Binary("Or", 7, (a, b) => a.logical_or(b));
        yield return Binary("Xor", 7, (a, b) => a.logical_xor(b));
        yield return Binary("Mod", 10, (a, b) => a.remainder(b));

        yield return Unary("Relu", 6, x => F.relu(x));
        yield return Unary("Sigmoid", 6, x => x.sigmoid());
        yield return Unary("Tanh", 6, x => x.tanh());
        yield return Unary("Erf", 9, x => x.erf());
        yield return Unary("Exp", 6, x => x.exp());
        yield return Unary("Log", 6, x => x.log());
        yield return Unary("Sqrt", 6, x => x.sqrt());
        yield return Unary("Neg", 6, x => x.neg());
        yield return Unary("Abs", 6, x => x.abs());
        yield return Unary("Reciprocal", 6, x => x.reciprocal());
        yield return Unary("Floor", 6, x => x.floor());
        yield return Unary("Ceil", 6, x => x.ceil());
        yield return Unary("Not", 1, x => x.logical_not());
        yield return Unary("Sin", 7, x => x.sin());
        yield return Unary("Cos", 7, x => x.cos());
        yield return Unary("Softsign", 1, x => x / x.abs().Plus(1L));
        yield return Unary("Softplus", 1, x => x.Softplus());
        yield return Unary("HardSwish", 14, x => F.hardswish(x));
        yield return Unary("Tan", 7, x => x.tan());
        yield return Unary("Asin", 7, x => x.asin());
        yield return Unary("Acos", 7, x => x.acos());
        yield return Unary("Atan", 7, x => x.atan());
        yield return Unary("Sinh", 9, x => x.sinh());
        yield return Unary("Cosh", 9, x => x.cosh());
        yield return Unary("Sign", 9, x => x.sign());
        yield return Unary("Round", 11, x => x.round());
        yield return Unary("IsNaN", 9, x => x.isnan());
        yield return Unary("Mish", 18, x => x * x.Softplus().tanh());
        yield return new OpSpec("", "IsInf", 10, a =>
        {
            bool positive = a.Int("detect_positive", 1) != 0, negative = a.Int("detect_negative", 1) != 0;
            return (_, i) => [(positive, negative) switch
            {
                (true, true) => i[0]!.isinf(),
                (true, false) => i[0]!.isposinf(),
                (false, true) => i[0]!.isneginf(),
                _ => torch.zeros_like(i[0]!, ScalarType.Bool),
            }];
        });
        yield return new OpSpec("", "Selu", 6, a =>
        {
            double alpha = a.Float("alpha", 1.67326319217681884765625f), gamma = a.Float("gamma", 1.05070102214813232421875f);
            return (_, i) => [i[0]!.Elu(alpha).Times(gamma)];
        });
        yield return new OpSpec("", "Celu", 12, a =>
        {
            double alpha = a.Float("alpha", 1f);
            return (_, i) => [i[0]!.Celu(alpha)];
        });
        yield return new OpSpec("", "ThresholdedRelu", 10, a =>
        {
            double alpha = a.Float("alpha", 1f);
            return (_, i) => [torch.where(i[0]!.Greater(alpha), i[0]!, torch.zeros_like(i[0]!))];
        });
        yield return new OpSpec("", "Shrink", 9, a =>
        {
            double bias = a.Float("bias", 0f), lambd = a.Float("lambd", 0.5f);
            return (_, i) =>
            {
                var x = i[0]!;
                return [torch.where(x.Less(-lambd), x.Plus(bias), torch.where(x.Greater(lambd), x.Minus(bias), torch.zeros_like(x)))];
            };
        });
        yield return new OpSpec("", "LeakyRelu", 6, a =>
        {
            var alpha = a.Float("alpha", 0.01f);
            return (_, i) => [i[0]!.LeakyRelu(alpha)];
        });
        yield return new OpSpec("", "Elu", 6, a =>
        {
            var alpha = a.Float("alpha", 1f);
            return (_, i) => [i[0]!.Elu(alpha)];
        });
        yield return new OpSpec("", "HardSigmoid", 6, a =>
        {
            double alpha = a.Float("alpha", 0.2f), beta = a.Float("beta", 0.5f);
            return (_, i) => [i[0]!.Times(alpha).Plus(beta).Clamped(0.0, 1.0)];
        });
        yield return new OpSpec("", "Gelu", 20, a =>
        {
            var approximate = a.String("approximate", "none");
            if (approximate is not ("none" or "tanh"))
            {
                throw a.Unsupported($"approximate={approximate}");
            }

            return (_, i) => [F.gelu(i[0]!, approximate == "tanh" ? TorchSharp.Modules.GELU.Approximate.tanh : TorchSharp.Modules.GELU.Approximate.none)];
        });
        yield return new OpSpec("", "Where", 9, _ => (_, i) => [torch.where(i[0]!.to(ScalarType.Bool), i[1]!, i[2]!)]);
        yield return Variadic("Sum", 8, (a, b) => a.Plus(b));
        yield return Variadic("Max", 8, torch.maximum);
        yield return Variadic("Min", 8, torch.minimum);
        yield return new OpSpec("", "Mean", 8, _ => (_, i) =>
        {
            var sum = i[0]!;
            for (var k = 1; k < i.Length; k++)
            {
                sum = sum.Plus(i[k]!);
            }

            return [sum.Over((long)i.Length)];
        });
        yield return new OpSpec("", "PRelu", 9, _ => (_, i) => [torch.where(i[0]!.GreaterOrEqual(0), i[0]!, i[0]! * i[1]!)]);
    }

    private static OpSpec Binary(string op, int since, Func<Tensor, Tensor, Tensor> f) => new("", op, since, _ => (_, i) => [f(i[0]!, i[1]!)]);

    private static OpSpec Unary(string op, int since, Func<Tensor, Tensor> f) => new("", op, since, _ => (_, i) => [f(i[0]!)]);

    private static OpSpec Variadic(string op, int since, Func<Tensor, Tensor, Tensor> f) => new("", op, since, _ => (_, i) =>
    {
        var acc = i[0]!;
        for (var k = 1; k < i.Length; k++)
        {
            acc = f(acc, i[k]!);
        }

        return [acc];
    });
}
