using TorchSharp;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>
/// LibTorch calls that take a number, with the number's native <see cref="Scalar"/> alive until the call returns.
/// TorchSharp converts numbers to Scalars implicitly (<c>x * 0.5</c>, <c>x.clamp(0, 1)</c>, and <c>a + b</c> of two
/// tensors, which passes alpha 1; so do its optimizers' steps). Such a Scalar has no reference once its handle is
/// passed on, so a garbage collection started by another thread can finalize it, freeing the native scalar while
/// LibTorch still reads it: with fine-tunings on several threads this failed at random as "Expected false to be true
/// ... Exception raised from toFloat" in AdamW's addcdiv_ (or, worse, read another value). Everything in this
/// assembly that passes a number to LibTorch goes through here (ScalarLifetimeTests scans the IL for any other way).
/// </summary>
internal static class TorchScalars
{
    /// <summary>The alpha of a plain add: a static field, so it is never collected.</summary>
    private static readonly Scalar One = 1.ToScalar();

    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    /// <summary>index_add with alpha 1.</summary>
    public static Tensor IndexAdded(this Tensor a, long dim, Tensor index, Tensor source) => a.index_add(dim, index, source, One);

    public static Tensor PlusInPlace(this Tensor a, Tensor b) => a.add_(b, One);

    public static Tensor Plus(this Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.add(s, One);
    }

    public static Tensor Plus(this Tensor a, long b)
    {
        using var s = b.ToScalar();
        return a.add(s, One);
    }

    public static Tensor Minus(this Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.sub(s);
    }

    public static Tensor Minus(this Tensor a, long b)
    {
        using var s = b.ToScalar();
        return a.sub(s);
    }

    public static Tensor Times(this Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.mul(s);
    }

    public static Tensor Times(this Tensor a, long b)
    {
        using var s = b.ToScalar();
        return a.mul(s);
    }

    public static Tensor TimesInPlace(this Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.mul_(s);
    }

    public static Tensor Over(this Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.div(s);
    }

    public static Tensor Over(this Tensor a, long b)
    {
        using var s = b.ToScalar();
        return a.div(s);
    }

    public static Tensor FloorOver(this Tensor a, long b)
    {
        using var s = b.ToScalar();
        return a.div(s, RoundingMode.floor);
    }

    public static Tensor Modulo(this Tensor a, long b)
    {
        using var s = b.ToScalar();
        return a.remainder(s);
    }

    /// <summary>x·x: what <c>square()</c> computes (LibTorch's pow by 2 is a multiplication), without its implicit exponent.</summary>
    public static Tensor Squared(this Tensor a) => a.mul(a);

    public static Tensor Clamped(this Tensor a, double? min, double? max)
    {
        using var lo = min?.ToScalar();
        using var hi = max?.ToScalar();
        if (lo is null)
        {
            return hi is null ? a.alias() : a.clamp_max(hi);
        }

        return hi is null ? a.clamp_min(lo) : a.clamp(lo, hi);
    }

    public static Tensor Less(this Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.lt(s);
    }

    public static Tensor Greater(this Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.gt(s);
    }

    public static Tensor GreaterOrEqual(this Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.ge(s);
    }

    public static Tensor LeakyRelu(this Tensor a, double slope)
    {
        using var s = slope.ToScalar();
        return a.leaky_relu(s);
    }

    public static Tensor Elu(this Tensor a, double alpha)
    {
        using var s = alpha.ToScalar();
        return a.elu(s, One, One);
    }

    public static Tensor Celu(this Tensor a, double alpha)
    {
        using var s = alpha.ToScalar();
        return a.celu(s);
    }

    /// <summary>
    /// log(1 + eˣ), and x itself above 20: LibTorch's softplus (beta 1, threshold 20), whose TorchSharp entry points
    /// all convert their numbers implicitly. The exponent is clamped so that the unused branch has no infinite gradient.
    /// </summary>
    public static Tensor Softplus(this Tensor x)
    {
        const double threshold = 20;
        using var capped = x.Clamped(null, threshold);
        using var exp = capped.exp();
        using var log = exp.log1p();
        using var above = x.Greater(threshold);
        return where(above, x, log);
    }

    /// <summary>0, 1, …, <paramref name="count"/> − 1.</summary>
    public static Tensor Range(long count, ScalarType type, Device device)
    {
        using var zero = 0L.ToScalar();
        using var stop = count.ToScalar();
        return arange(zero, stop, One, type, device: device);
    }
}
