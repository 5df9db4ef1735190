using System.Buffers;
using System.Numerics;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// Keeps exactly ⌊density·M⌋ entries of each task vector through the TIES kernel, whose trim is a plain threshold
/// (keep |τ| ≥ bits): when more entries equal a per-tensor threshold than may be kept (<see cref="MagnitudeTrim.Thresholds.Excess"/>),
/// mergekit's rule keeps the first ones in index order, so up to and including the last kept one the threshold is
/// bits, after it bits + 1. This class walks the chunks in order, counts each model's tied entries until its last kept
/// one is found, and cuts the chunk there: the kernel then merges each piece with plain thresholds, exactly as the
/// chunked path's per-element rule would.
/// </summary>
internal sealed class ThresholdTies
{
    private readonly uint[] _threshold;
    private readonly long[] _left;
    private readonly int[] _cut;

    /// <summary>The models whose ties must be split; null when none (every tied entry is kept).</summary>
    public static ThresholdTies? For(MagnitudeTrim.Thresholds thresholds) =>
        thresholds.Excess.Any(e => e > 0) ? new ThresholdTies(thresholds) : null;

    private ThresholdTies(MagnitudeTrim.Thresholds thresholds)
    {
        int n = thresholds.Bits.Length;
        _threshold = [.. thresholds.Bits];
        _left = new long[n];
        _cut = new int[n];
        for (int k = 0; k < n; k++)
        {
            // Excess > 0 means the threshold is a real magnitude (≤ the NaN patterns), so bits + 1 cannot overflow.
            _left[k] = thresholds.Excess[k] > 0 ? thresholds.AtThreshold[k] - thresholds.Excess[k] : -1;
        }
    }

    /// <summary>
    /// The pieces of the current chunk (<paramref name="count"/> elements of <paramref name="inputs"/> and
    /// <paramref name="baseline"/>, chunks visited in order): each as [start, end) and every model's threshold bits there.
    /// </summary>
    public List<(int Start, int End, uint[] Bits)> Pieces(ReadOnlySpan<TensorSource> inputs, TensorSource baseline, int count)
    {
        float[]? b = null, tau = null;
        try
        {
            for (int k = 0; k < _cut.Length; k++)
            {
                // _cut[k]: elements before it use the threshold, from it on bits + 1 (-1 in _left: no split, all use it).
                _cut[k] = _left[k] switch
                {
                    < 0 => count,
                    0 => 0,
                    _ => -1,
                };
                if (_cut[k] >= 0)
                {
                    continue;
                }

                if (b is null)
                {
                    b = ArrayPool<float>.Shared.Rent(count);
                    tau = ArrayPool<float>.Shared.Rent(count);
                    TensorChunks.Decode(baseline, b.AsSpan(0, count));
                }

                TensorChunks.Decode(inputs[k], tau.AsSpan(0, count));
                System.Numerics.Tensors.TensorPrimitives.Subtract(tau.AsSpan(0, count), b.AsSpan(0, count), tau.AsSpan(0, count));
                _cut[k] = LastKept(tau.AsSpan(0, count), _threshold[k], ref _left[k]);
            }
        }
        finally
        {
            if (b is not null)
            {
                ArrayPool<float>.Shared.Return(b);
                ArrayPool<float>.Shared.Return(tau!);
            }
        }

        int[] ends = [.. _cut.Where(c => c > 0 && c < count).Append(count).Distinct().Order()];
        var pieces = new List<(int, int, uint[])>(ends.Length);
        int start = 0;
        foreach (int end in ends)
        {
            pieces.Add((start, end, [.. _threshold.Select((t, k) => _cut[k] >= end ? t : t + 1)]));
            start = end;
        }

        return pieces;
    }

    /// <summary>
    /// Counts the entries of <paramref name="tau"/> whose magnitude bits equal <paramref name="bits"/> against
    /// <paramref name="left"/> (those still to keep): returns the index after the last one kept here, or the length
    /// when all of this chunk's are kept.
    /// </summary>
    internal static int LastKept(ReadOnlySpan<float> tau, uint bits, ref long left)
    {
        var values = System.Runtime.InteropServices.MemoryMarshal.Cast<float, uint>(tau);
        var mask = new Vector<uint>(HalfBits.MagnitudeMask);
        var target = new Vector<uint>(bits);
        int i = 0;
        for (; i <= values.Length - Vector<uint>.Count; i += Vector<uint>.Count)
        {
            var equal = Vector.Equals(new Vector<uint>(values[i..]) & mask, target);
            if (equal == Vector<uint>.Zero)
            {
                continue;
            }

            // Each matching lane is all ones: −(sum of lanes) counts them.
            long matches = -(long)(int)Vector.Sum(Vector.AsVectorInt32(equal));
            if (matches < left)
            {
                left -= matches;
                continue;
            }

            break; // the last kept one is in this vector: find it one by one below
        }

        for (; i < values.Length; i++)
        {
            if ((values[i] & HalfBits.MagnitudeMask) == bits && --left == 0)
            {
                return i + 1;
            }
        }

        return values.Length;
    }
}
