namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// DELLA's MAGPRUNE (<see cref="MergekitMasks.Della"/>) on one model's task vector, a block of whole fibers at a time:
/// a fiber along axis 1 of an [outer, m, inner] view lies inside one block of m·inner consecutive elements, and its
/// ranks, keep probabilities and counter-based draws depend only on that block, so pruning block after block equals
/// pruning the whole tensor bit for bit. The keep probability and the draw threshold of each rank are computed once
/// per tensor (the same expressions as the whole-tensor rule), and each fiber is ordered by a radix sort of its
/// magnitude bits (stable, so equal magnitudes stay in index order, as <see cref="MergekitMasks.RankKey"/>'s order).
/// </summary>
internal sealed class FiberPrune
{
    /// <summary>Fibers shorter than this are ordered by a comparison sort of rank keys (a radix sort's tables would cost more).</summary>
    private const int RadixFrom = 128;

    private readonly int _m;
    private readonly int _inner;
    private readonly double _density;
    private readonly ulong _key;
    private readonly double[] _probability;
    private readonly uint[] _dropBelow;

    private FiberPrune(int m, int inner, double density, double epsilon, ulong key)
    {
        (_m, _inner, _density, _key) = (m, inner, density, key);
        _probability = new double[m];
        _dropBelow = new uint[m];
        for (int position = 0; position < m; position++)
        {
            double normalised = m > 1 ? (double)(m - 1 - position) / (m - 1) : 0.5;
            double p = (density - epsilon) + normalised * 2 * epsilon;
            _probability[position] = p;
            _dropBelow[position] = MergekitMasks.DropThreshold(1.0 - p);
        }
    }

    /// <summary>
    /// Elements per block: m·inner for the fibers of <paramref name="shape"/> (as <see cref="MergekitMasks.Della"/> reads
    /// it: the whole vector for a 1-D tensor), or 0 when the blocks do not tile the <paramref name="length"/> elements
    /// or a fiber is too long to index (then only the whole-tensor rule applies).
    /// </summary>
    public static long BlockOf(IReadOnlyList<long> shape, long length)
    {
        long m = shape.Count < 2 ? length : shape[1];
        long inner = shape.Count < 2 ? 1 : length / Math.Max(1, shape[0] * shape[1]);
        long block = m * inner;
        return m > 0 && inner > 0 && m <= Array.MaxLength && block <= Array.MaxLength && length % block == 0 ? block : 0;
    }

    /// <summary>One model's pruner (its mask key <paramref name="key"/>) for a tensor of <paramref name="shape"/> (<see cref="BlockOf"/> must be positive).</summary>
    public static FiberPrune For(IReadOnlyList<long> shape, long length, double density, double epsilon, ulong key)
    {
        long m = shape.Count < 2 ? length : shape[1];
        return new FiberPrune((int)m, (int)(BlockOf(shape, length) / m), density, epsilon, key);
    }

    /// <summary>
    /// Zeroes (+0) the dropped entries of <paramref name="tau"/>, whole blocks starting at element
    /// <paramref name="offset"/> of the tensor; with <paramref name="inverse"/> divides each kept one by its keep
    /// probability. <paramref name="keptBits"/> (one bit per tensor element, or empty) records the mask.
    /// </summary>
    public void Prune(Span<float> tau, long offset, bool inverse, Span<byte> keptBits)
    {
        if (_density >= 1)
        {
            return;
        }

        if (_density <= 0)
        {
            tau.Clear();
            if (!keptBits.IsEmpty)
            {
                // offset is a multiple of 8 (whole units, TaskArithmeticMerge.Fibers.cs): these bytes are this slice's alone.
                keptBits[(int)(offset >> 3)..(int)((offset + tau.Length + 7) >> 3)].Clear();
            }

            return;
        }

        int block = _m * _inner;
        var position = new int[_m];
        var radix = _m >= RadixFrom ? new Radix(_m) : null;
        var keys = radix is null ? new ulong[_m] : null;
        var magnitudes = new uint[_m];
        for (int start0 = 0; start0 < tau.Length; start0 += block)
        {
            for (int i = 0; i < _inner; i++)
            {
                int start = start0 + i;
                for (int r = 0; r < _m; r++)
                {
                    magnitudes[r] = MergekitMasks.Bits(tau[start + (r * _inner)]);
                }

                if (radix is null)
                {
                    for (int r = 0; r < _m; r++)
                    {
                        keys![r] = ((ulong)(HalfBits.MagnitudeMask - magnitudes[r]) << 32) | (uint)r;
                    }

                    Array.Sort(keys!);
                    for (int p = 0; p < _m; p++)
                    {
                        position[(int)(uint)keys![p]] = p;
                    }
                }
                else
                {
                    radix.Positions(magnitudes, position);
                }

                // In index order: each entry's draw against the threshold of its rank (sequential over τ and the mask).
                for (int r = 0; r < _m; r++)
                {
                    int local = start + (r * _inner), p = position[r];
                    long e = offset + local;
                    bool kept = DareMask.Keeps(_key, e, _dropBelow[p]);
                    tau[local] = !kept ? 0 : inverse ? (float)(tau[local] / _probability[p]) : tau[local];
                    if (!keptBits.IsEmpty)
                    {
                        int bit = 1 << (int)(e & 7);
                        ref byte b = ref keptBits[(int)(e >> 3)];
                        b = (byte)(kept ? b | bit : b & ~bit);
                    }
                }
            }
        }
    }

    /// <summary>A stable LSD radix sort of 31-bit magnitudes into descending order (three passes of 11, 11 and 9 bits).</summary>
    private sealed class Radix(int m)
    {
        private readonly int[] _counts = new int[1 << 11];
        private readonly int[] _order = new int[m];
        private readonly int[] _swap = new int[m];
        private readonly uint[] _keys = new uint[m];

        /// <summary>
        /// Writes into <paramref name="position"/> each entry's place in the order of descending
        /// <paramref name="magnitudes"/>, equal values by ascending index (the last pass assigns places instead of moving indices).
        /// </summary>
        public void Positions(uint[] magnitudes, int[] position)
        {
            for (int r = 0; r < m; r++)
            {
                _keys[r] = HalfBits.MagnitudeMask - magnitudes[r]; // ascending complement = descending magnitude
                _order[r] = r;
            }

            int[] from = _order, to = _swap;
            foreach (var (shift, bits) in (ReadOnlySpan<(int, int)>)[(0, 11), (11, 11), (22, 9)])
            {
                int mask = (1 << bits) - 1;
                Array.Clear(_counts, 0, 1 << bits);
                foreach (uint k in _keys)
                {
                    _counts[(int)(k >> shift) & mask]++;
                }

                int sum = 0;
                for (int b = 0; b <= mask; b++)
                {
                    (sum, _counts[b]) = (sum + _counts[b], sum);
                }

                if (shift == 22)
                {
                    foreach (int r in from)
                    {
                        position[r] = _counts[(int)(_keys[r] >> shift) & mask]++;
                    }

                    return;
                }

                foreach (int r in from)
                {
                    to[_counts[(int)(_keys[r] >> shift) & mask]++] = r;
                }

                (from, to) = (to, from);
            }
        }
    }
}
