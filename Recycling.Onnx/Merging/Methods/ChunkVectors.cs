using System.Numerics;
using System.Runtime.InteropServices;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// The chunked path's elementwise steps (<c>TaskArithmeticMerge.Chunked.cs</c>) in SIMD: each lane does exactly the
/// scalar rule's operations in the same order (<c>Combine.TaskVectors</c>,
/// <see cref="Sparsify"/>'s drops), never fused or reassociated, so the results are bit for bit the same.
/// </summary>
internal static class ChunkVectors
{
    /// <summary>Zeroes (+0) the entries whose fp32 magnitude bits are below <paramref name="bits"/>.</summary>
    public static void ZeroBelow(Span<float> tau, uint bits)
    {
        Span<uint> values = MemoryMarshal.Cast<float, uint>(tau);
        var magnitude = new Vector<uint>(HalfBits.MagnitudeMask);
        var threshold = new Vector<uint>(bits);
        int i = 0;
        for (; i <= values.Length - Vector<uint>.Count; i += Vector<uint>.Count)
        {
            var v = new Vector<uint>(values[i..]);
            Vector.BitwiseAnd(v, Vector.GreaterThanOrEqual(v & magnitude, threshold)).CopyTo(values[i..]);
        }

        for (; i < values.Length; i++)
        {
            if ((values[i] & HalfBits.MagnitudeMask) < bits)
            {
                values[i] = 0;
            }
        }
    }

    /// <summary>Zeroes (+0) the entries <see cref="DareMask.Keeps"/> drops for <paramref name="key"/> (element i draws key's i-th).</summary>
    public static unsafe void ZeroDropped(Span<float> tau, ulong key, uint dropThreshold)
    {
        float[] kept = System.Buffers.ArrayPool<float>.Shared.Rent(tau.Length);
        try
        {
            fixed (float* k = kept)
            {
                switch (SimdPaths.Default)
                {
                    case SimdPath.Vector512:
                        Vector512F.DareScales(key, 0, tau.Length, dropThreshold, 1f, k);
                        break;
                    case SimdPath.Vector256:
                        Vector256F.DareScales(key, 0, tau.Length, dropThreshold, 1f, k);
                        break;
                    case SimdPath.Vector128:
                        Vector128F.DareScales(key, 0, tau.Length, dropThreshold, 1f, k);
                        break;
                    default:
                        ScalarVector.DareScales(key, 0, tau.Length, dropThreshold, 1f, k);
                        break;
                }
            }

            Span<uint> values = MemoryMarshal.Cast<float, uint>(tau);
            Span<uint> masks = MemoryMarshal.Cast<float, uint>(kept.AsSpan(0, tau.Length));
            int i = 0;
            for (; i <= values.Length - Vector<uint>.Count; i += Vector<uint>.Count)
            {
                // kept is 1f or +0: its bits are non-zero exactly where the entry stays.
                var stays = ~Vector.Equals(new Vector<uint>(masks[i..]), Vector<uint>.Zero);
                Vector.BitwiseAnd(new Vector<uint>(values[i..]), stays).CopyTo(values[i..]);
            }

            for (; i < values.Length; i++)
            {
                if (masks[i] == 0)
                {
                    values[i] = 0;
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(kept);
        }
    }

    /// <summary>
    /// <c>Combine.TaskVectors</c>
    /// over elements [start, start + count), lane by lane; the last partial vector goes through the scalar rule.
    /// </summary>
    public static void TaskVectors(float[][] tau, ReadOnlySpan<double> weights, ReadOnlySpan<float> baseline, Combine.Consensus consensus,
        bool normalize, double lambda, Span<float> output, int start, int count)
    {
        int n = tau.Length;
        Span<float> w = stackalloc float[n];
        float sumOfWeights = 0;
        for (int k = 0; k < n; k++)
        {
            w[k] = (float)weights[k];
            sumOfWeights += w[k];
        }

        if (MathF.Abs(sumOfWeights) < 1e-8f)
        {
            sumOfWeights = 1;
        }

        var l = new Vector<float>((float)lambda);
        var zero = Vector<float>.Zero;
        var one = Vector<float>.One;
        var nan = new Vector<float>(float.NaN);
        int end = start + count, e = start;
        for (; e <= end - Vector<float>.Count; e += Vector<float>.Count)
        {
            Vector<float> mixed = zero, divisor;
            if (consensus == Combine.Consensus.None)
            {
                for (int k = 0; k < n; k++)
                {
                    mixed += new Vector<float>(tau[k].AsSpan(e)) * new Vector<float>(w[k]);
                }

                divisor = new Vector<float>(sumOfWeights);
            }
            else
            {
                Vector<float> election = zero;
                for (int k = 0; k < n; k++)
                {
                    var weighted = new Vector<float>(tau[k].AsSpan(e)) * new Vector<float>(w[k]);
                    election += consensus == Combine.Consensus.Sum ? weighted : Sign(weighted);
                }

                var positive = Vector.GreaterThanOrEqual(election, zero); // NaN: false, so − as the scalar rule
                divisor = zero;
                for (int k = 0; k < n; k++)
                {
                    var weighted = new Vector<float>(tau[k].AsSpan(e)) * new Vector<float>(w[k]);
                    var agrees = Vector.ConditionalSelect(positive, Vector.GreaterThan(weighted, zero), Vector.LessThan(weighted, zero));
                    mixed = Vector.ConditionalSelect(agrees, mixed + weighted, mixed);
                    divisor = Vector.ConditionalSelect(agrees, divisor + new Vector<float>(w[k]), divisor);
                    mixed = Vector.ConditionalSelect(Vector.Equals(weighted, weighted), mixed, nan);
                }

                divisor = Vector.ConditionalSelect(Vector.Equals(divisor, zero), one, divisor);
            }

            if (normalize)
            {
                mixed /= divisor;
            }

            (new Vector<float>(baseline[e..]) + (l * mixed)).CopyTo(output[e..]);
        }

        Combine.TaskVectors(tau, weights, baseline, consensus, normalize, lambda, output, e, end - e);
    }

    private static Vector<float> Sign(Vector<float> v) =>
        Vector.ConditionalSelect(Vector.GreaterThan(v, Vector<float>.Zero), Vector<float>.One,
            Vector.ConditionalSelect(Vector.LessThan(v, Vector<float>.Zero), -Vector<float>.One, Vector<float>.Zero));
}
