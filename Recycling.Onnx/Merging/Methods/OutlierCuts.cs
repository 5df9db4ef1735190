using System.Numerics;
using System.Runtime.InteropServices;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// Breadcrumbs' two cuts of one task vector (<see cref="MergekitMasks.Outliers"/>: keep the entries at positions
/// [from, to) of the descending |τ| order, ties in index order; SCE's top-variance selection is the range [0, k)),
/// found by counting chunk by chunk instead of holding
/// the tensor: one pass histograms the magnitudes' high 16 bits, a second the low 16 bits inside the two bins that
/// hold the cut keys. Then, chunk by chunk in order (<see cref="Keep"/>), an entry is kept when its key lies strictly
/// between the cut keys, and an entry equal to a cut key when its index among the entries of that key (counted
/// across chunks) falls inside the range: exactly <see cref="MergekitMasks.TopRange"/>'s choice.
/// </summary>
internal sealed class OutlierCuts
{
    private const int Bins = 1 << 16;

    private long _from;
    private long _to;
    private long[]? _high = new long[Bins];
    private long[]? _lowFirst;
    private long[]? _lowLast;
    private readonly long _length;
    private uint _first;
    private uint _last;

    // Entries equal to First keep tie indices [_firstFrom, _firstTo); entries equal to Last (when not First) those below _lastTo.
    private long _firstFrom;
    private long _firstTo;
    private long _lastTo;
    private long _seenFirst;
    private long _seenLast;
    private bool _complete;

    /// <summary>The cuts of a task vector of <paramref name="length"/> entries: mergekit's int(d·n) kept, int(γ·n) largest dropped.</summary>
    public OutlierCuts(long length, double density, double gamma)
        : this(length, MergekitMasks.OutlierRange(length, density, gamma))
    {
    }

    /// <summary>The cuts keeping positions [from, to) of the descending |x| order of <paramref name="length"/> entries.</summary>
    public OutlierCuts(long length, (long From, long To) range)
    {
        _length = length;
        Restrict(range.From, range.To);
    }

    /// <summary>
    /// Sets the kept positions before the first counting pass completes (SCE learns how many entries it keeps, a
    /// fraction of the non-zero ones, while the first pass counts).
    /// </summary>
    public void Restrict(long from, long to)
    {
        if (CountsLow || _complete)
        {
            throw new InvalidOperationException("the range of the cuts is fixed once the first counting pass completed");
        }

        (_from, _to) = (from, Math.Min(to, _length));
        _high = KeepsNone ? null : _high ?? new long[Bins];
    }

    /// <summary>Nothing is kept (γ·n rounds to 0, as mergekit's slice, or the range is empty): no counting needed.</summary>
    public bool KeepsNone => _from >= _to;

    /// <summary>Whether the cuts are known (after two counting passes), so <see cref="Keep"/> may run.</summary>
    public bool IsComplete => KeepsNone || _complete;

    /// <summary>Whether the next counting pass reads the low bits (after the high-bits pass).</summary>
    private bool CountsLow => _lowFirst is not null;

    /// <summary>Adds one chunk of the task vector to the current counting pass (chunks in any order).</summary>
    public void Count(ReadOnlySpan<float> tau)
    {
        if (IsComplete)
        {
            return;
        }

        if (!CountsLow)
        {
            foreach (uint k in MemoryMarshal.Cast<float, uint>(tau))
            {
                _high![(k & HalfBits.MagnitudeMask) >> 16]++;
            }

            return;
        }

        uint highFirst = _first >> 16, highLast = _last >> 16;
        foreach (uint u in MemoryMarshal.Cast<float, uint>(tau))
        {
            uint k = u & HalfBits.MagnitudeMask;
            if (k >> 16 == highFirst)
            {
                _lowFirst![k & 0xFFFF]++;
            }

            if (k >> 16 == highLast)
            {
                _lowLast![k & 0xFFFF]++;
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

        // Ascending ranks of the keys at descending positions from and to − 1.
        long rankFirst = _length - 1 - _from, rankLast = _length - _to;
        if (!CountsLow)
        {
            if (_high!.Sum() != _length)
            {
                throw CountedRanks.Changed();
            }

            _first = (uint)CountedRanks.Bin(_high!, rankFirst, out _) << 16;
            _last = (uint)CountedRanks.Bin(_high!, rankLast, out _) << 16;
            _lowFirst = new long[Bins];
            _lowLast = new long[Bins];
            return;
        }

        _first = Resolve(_first >> 16, _lowFirst!, rankFirst, out long aboveFirst);
        _last = Resolve(_last >> 16, _lowLast!, rankLast, out long aboveLast);
        (_high, _lowFirst, _lowLast) = (null, null, null);
        _firstFrom = _from - aboveFirst;
        _firstTo = _to - aboveFirst;
        _lastTo = _to - aboveLast;
        _complete = true;
    }

    /// <summary>
    /// Zeroes (+0) the entries of the next chunk (chunks in index order, each once) that the cuts drop: |τ| above the
    /// first cut or below the last, and the tied entries outside the range.
    /// </summary>
    public void Keep(Span<float> tau)
    {
        if (KeepsNone)
        {
            tau.Clear();
            return;
        }

        Span<uint> values = MemoryMarshal.Cast<float, uint>(tau);
        var magnitude = new Vector<uint>(HalfBits.MagnitudeMask);
        var first = new Vector<uint>(_first);
        var last = new Vector<uint>(_last);
        int i = 0;
        for (; i <= values.Length - Vector<uint>.Count; i += Vector<uint>.Count)
        {
            var v = new Vector<uint>(values[i..]);
            var k = v & magnitude;
            if (Vector.EqualsAny(k, first) || Vector.EqualsAny(k, last))
            {
                for (int j = i; j < i + Vector<uint>.Count; j++)
                {
                    values[j] = KeepsOne(values[j] & HalfBits.MagnitudeMask) ? values[j] : 0;
                }

                continue;
            }

            (v & Vector.LessThan(k, first) & Vector.GreaterThan(k, last)).CopyTo(values[i..]);
        }

        for (; i < values.Length; i++)
        {
            values[i] = KeepsOne(values[i] & HalfBits.MagnitudeMask) ? values[i] : 0;
        }
    }

    /// <summary>A copy that continues <see cref="Keep"/> from the same point (for a pass that must not advance this one).</summary>
    public OutlierCuts Copy() => (OutlierCuts)MemberwiseClone();

    private bool KeepsOne(uint k)
    {
        if (k == _first)
        {
            long j = _seenFirst++;
            return j >= _firstFrom && j < _firstTo;
        }

        if (k == _last)
        {
            return _seenLast++ < _lastTo;
        }

        return k < _first && k > _last;
    }

    /// <summary>The key of ascending rank <paramref name="rank"/> inside high bin <paramref name="high"/>, and how many keys are above it.</summary>
    private uint Resolve(uint high, long[] low, long rank, out long above)
    {
        long belowHigh = 0;
        for (int b = 0; b < high; b++)
        {
            belowHigh += _high![b];
        }

        if (low.Sum() != _high![high])
        {
            throw CountedRanks.Changed();
        }

        int bin = CountedRanks.Bin(low, rank - belowHigh, out long belowLow);
        above = _length - (belowHigh + belowLow + low[bin]);
        return (high << 16) | (uint)bin;
    }
}
