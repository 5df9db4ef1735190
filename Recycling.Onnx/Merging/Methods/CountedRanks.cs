using System.Buffers;
using System.Numerics.Tensors;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// The values at given ascending ranks of a tensor's fp64 values, in the order <see cref="Array.Sort(Array)"/> gives
/// them (NaN first, −0 equal to +0), found by counting chunk by chunk instead of sorting: each value is mapped to a
/// 64-bit key whose unsigned order is that order, and each of four passes histograms the next 16 bits of the keys
/// whose higher bits match a rank's key so far (the 64-bit form of <see cref="OutlierCuts"/>' two 16-bit passes).
/// Memory: one 2¹⁶-bin histogram per rank (512 KiB), whatever the tensor's length, pooled: large arrays made anew for
/// every tensor would pile up on the large-object heap until a full collection.
/// </summary>
internal sealed class CountedRanks : IDisposable
{
    private const int DigitBits = 16;
    private const int Bins = 1 << DigitBits;
    private const int Passes = 64 / DigitBits;
    private const ulong SignBit = 1UL << 63;

    private readonly long[] _ranks;
    private readonly ulong[] _keys;
    private readonly long[] _inBin;
    private readonly long[][] _counts;
    private int _pass;

    /// <summary>The values of ascending ranks <paramref name="ranks"/> (0-based, each below <paramref name="length"/>) among <paramref name="length"/> values.</summary>
    public CountedRanks(long length, params long[] ranks)
    {
        if (ranks.Any(r => r < 0 || r >= length))
        {
            throw new ArgumentOutOfRangeException(nameof(ranks), $"ranks must lie in [0, {length})");
        }

        _ranks = [.. ranks];
        _keys = new ulong[ranks.Length];
        _inBin = [.. ranks.Select(_ => length)];
        _counts = [.. ranks.Select(_ => ArrayPool<long>.Shared.Rent(Bins))];
        foreach (long[] counts in _counts)
        {
            Array.Clear(counts);
        }
    }

    /// <summary>Whether the values are known (after four counting passes), so <see cref="Value"/> may run.</summary>
    public bool IsComplete => _pass == Passes;

    /// <summary>Adds one chunk of the values to the current counting pass (chunks in any order, each once per pass).</summary>
    public void Count(ReadOnlySpan<double> values)
    {
        if (IsComplete)
        {
            return;
        }

        int shift = 64 - (DigitBits * (_pass + 1));
        if (_pass == 0)
        {
            // Nothing is known of any rank's key yet: one histogram serves them all.
            long[] counts = _counts[0];
            foreach (double value in values)
            {
                counts[Key(value) >> shift]++;
            }

            return;
        }

        int known = shift + DigitBits;
        foreach (double value in values)
        {
            ulong key = Key(value);
            for (int r = 0; r < _ranks.Length; r++)
            {
                if (key >> known == _keys[r])
                {
                    _counts[r][(key >> shift) & (Bins - 1)]++;
                }
            }
        }
    }

    /// <summary>Ends a counting pass.</summary>
    public void CompletePass()
    {
        if (IsComplete)
        {
            return;
        }

        for (int r = 0; r < _ranks.Length; r++)
        {
            long[] counts = _counts[_pass == 0 ? 0 : r];
            if (TensorPrimitives.Sum<long>(counts.AsSpan(0, Bins)) != _inBin[r])
            {
                throw Changed();
            }

            int bin = Bin(counts, _ranks[r], out long below);
            _ranks[r] -= below;
            _inBin[r] = counts[bin];
            _keys[r] = (_keys[r] << DigitBits) | (uint)bin;
        }

        foreach (long[] counts in _counts)
        {
            Array.Clear(counts);
        }

        _pass++;
    }

    /// <summary>The value of the <paramref name="index"/>-th rank given to the constructor (any NaN for NaN).</summary>
    public double Value(int index)
    {
        if (!IsComplete)
        {
            throw new InvalidOperationException("the ranks are known after four counting passes");
        }

        ulong key = _keys[index];
        return key == 0 ? double.NaN : BitConverter.UInt64BitsToDouble((key & SignBit) != 0 ? key & ~SignBit : ~key);
    }

    public void Dispose()
    {
        foreach (long[] counts in _counts)
        {
            ArrayPool<long>.Shared.Return(counts);
        }
    }

    /// <summary>The bin holding the key of ascending rank <paramref name="rank"/> (0-based); <paramref name="below"/>: entries in lower bins.</summary>
    internal static int Bin(long[] counts, long rank, out long below)
    {
        below = 0;
        int bin = 0;
        while (below + counts[bin] <= rank)
        {
            below += counts[bin++];
        }

        return bin;
    }

    internal static RecyclingException Changed() => new(
        "two counting passes over the same tensors disagree; the inputs changed while merging.");

    /// <summary>NaN → 0; otherwise negative values' bits inverted, non-negative values' sign bit set (−0 as +0), so keys order as the values.</summary>
    private static ulong Key(double value)
    {
        if (double.IsNaN(value))
        {
            return 0;
        }

        ulong bits = BitConverter.DoubleToUInt64Bits(value == 0 ? 0.0 : value);
        return (bits & SignBit) != 0 ? ~bits : bits | SignBit;
    }
}
