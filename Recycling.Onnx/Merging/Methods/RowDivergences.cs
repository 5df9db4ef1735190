using System.Buffers;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// arcee_fusion's importances |x − b|·KL(softmax x ‖ softmax b), the KL over each row (<paramref name="row"/> entries
/// along the last axis) with p = softmax + 1e-8, found chunk by chunk: the row's maxima, then its sums of exp(v − max),
/// then its divergence, each a pass in index order (<see cref="Measure"/>), fp64, as the whole-tensor rule computes
/// them. Rows are kept (six scalars each) when the tensor has at most <see cref="CachedRows"/> of them; otherwise only
/// the rows a chunk boundary splits are, and a row inside one chunk is measured again from that chunk whenever its
/// importances are needed, so memory stays a few scalars per chunk whatever the tensor's shape. A row inside one
/// chunk and of at most <see cref="ScratchRow"/> entries is measured in one go, its exp(v − max) kept in a scratch row
/// as the whole-tensor rule keeps them (half the exps of measuring it in passes). The rows' and scratch arrays are
/// pooled: ones made anew for every tensor would pile up on the large-object heap until a full collection.
/// </summary>
internal sealed class RowDivergences(long length, long row) : IDisposable
{
    /// <summary>Up to this many rows (3 MiB of scalars), every row's divergence is kept after the three passes.</summary>
    public const long CachedRows = 1 << 16;

    /// <summary>Rows up to this long (two scratch rows of 512 KiB) are measured in one go when a chunk holds them whole.</summary>
    public const long ScratchRow = 1 << 16;

    private readonly bool _keepsAll = length / row <= CachedRows;
    private readonly double[] _expX = ArrayPool<double>.Shared.Rent((int)Math.Min(row, ScratchRow));
    private readonly double[] _expB = ArrayPool<double>.Shared.Rent((int)Math.Min(row, ScratchRow));
    private RowState[] _rows = ArrayPool<RowState>.Shared.Rent(16);
    private int _count;
    private int _cursor;

    public enum Stage
    {
        Maximum,
        Sum,
        Divergence,
    }

    /// <summary>Adds the chunk of x and b at <paramref name="offset"/> to <paramref name="stage"/>'s pass (chunks in index order, the same chunks every pass).</summary>
    public void Measure(Stage stage, long offset, ReadOnlySpan<float> x, ReadOnlySpan<float> b)
    {
        if (offset == 0)
        {
            _cursor = 0;
        }

        for (long r = offset / row; r * row < offset + x.Length; r++)
        {
            var (start, end, inside) = Segment(r, offset, x.Length);
            if (!_keepsAll && inside)
            {
                continue;
            }

            ref RowState state = ref Find(r, add: stage == Stage.Maximum);
            if (inside && row <= ScratchRow)
            {
                if (stage == Stage.Maximum)
                {
                    state.AddWhole(x[start..end], b[start..end], _expX, _expB);
                }

                continue;
            }

            state.Add(stage, x[start..end], b[start..end]);
        }
    }

    /// <summary>The importances of the chunk at <paramref name="offset"/> (after the three passes of <see cref="Measure"/>; chunks in index order).</summary>
    public void Importances(long offset, ReadOnlySpan<float> x, ReadOnlySpan<float> b, Span<double> importance)
    {
        if (offset == 0)
        {
            _cursor = 0;
        }

        for (long r = offset / row; r * row < offset + x.Length; r++)
        {
            var (start, end, inside) = Segment(r, offset, x.Length);
            double kl;
            if (_keepsAll || !inside)
            {
                kl = Find(r, add: false).Kl;
            }
            else
            {
                var state = RowState.Empty(r);
                if (row <= ScratchRow)
                {
                    state.AddWhole(x[start..end], b[start..end], _expX, _expB);
                }
                else
                {
                    foreach (var stage in (ReadOnlySpan<Stage>)[Stage.Maximum, Stage.Sum, Stage.Divergence])
                    {
                        state.Add(stage, x[start..end], b[start..end]);
                    }
                }

                kl = state.Kl;
            }

            for (int e = start; e < end; e++)
            {
                importance[e] = Math.Abs((double)x[e] - b[e]) * kl;
            }
        }
    }

    /// <summary>Row <paramref name="r"/>'s part of the chunk of <paramref name="count"/> entries at <paramref name="offset"/>, in chunk indices, and whether the whole row lies in it.</summary>
    private (int Start, int End, bool Inside) Segment(long r, long offset, int count)
    {
        long first = r * row, last = first + row;
        return ((int)(Math.Max(first, offset) - offset), (int)(Math.Min(last, offset + count) - offset), first >= offset && last <= offset + count);
    }

    /// <summary>Row <paramref name="r"/>'s state: rows are visited in ascending order in every pass, so a cursor finds them.</summary>
    private ref RowState Find(long r, bool add)
    {
        if (add && (_count == 0 || _rows[_count - 1].Row < r))
        {
            if (_count == _rows.Length)
            {
                RowState[] larger = ArrayPool<RowState>.Shared.Rent(2 * _count);
                _rows.AsSpan(0, _count).CopyTo(larger);
                ArrayPool<RowState>.Shared.Return(_rows);
                _rows = larger;
            }

            _rows[_count++] = RowState.Empty(r);
        }

        while (_rows[_cursor].Row < r)
        {
            _cursor++;
        }

        return ref _rows[_cursor];
    }

    public void Dispose()
    {
        ArrayPool<RowState>.Shared.Return(_rows);
        ArrayPool<double>.Shared.Return(_expX);
        ArrayPool<double>.Shared.Return(_expB);
    }

    private struct RowState
    {
        public long Row;
        public double MaxX;
        public double MaxB;
        public double SumX;
        public double SumB;
        public double Kl;

        public static RowState Empty(long row) => new() { Row = row, MaxX = double.NegativeInfinity, MaxB = double.NegativeInfinity };

        public void Add(Stage stage, ReadOnlySpan<float> x, ReadOnlySpan<float> b)
        {
            switch (stage)
            {
                case Stage.Maximum:
                    MaxX = Maximum(x, MaxX);
                    MaxB = Maximum(b, MaxB);
                    break;
                case Stage.Sum:
                    SumX = SumExp(x, MaxX, SumX);
                    SumB = SumExp(b, MaxB, SumB);
                    break;
                default:
                    for (int e = 0; e < x.Length; e++)
                    {
                        double pe = (Math.Exp(x[e] - MaxX) / SumX) + 1e-8, qe = (Math.Exp(b[e] - MaxB) / SumB) + 1e-8;
                        Kl += pe * Math.Log(pe / qe);
                    }

                    break;
            }
        }

        /// <summary>The three stages over a whole row at once, each exp(v − max) computed once and kept in <paramref name="expX"/> and <paramref name="expB"/>.</summary>
        public void AddWhole(ReadOnlySpan<float> x, ReadOnlySpan<float> b, double[] expX, double[] expB)
        {
            MaxX = Maximum(x, MaxX);
            MaxB = Maximum(b, MaxB);
            for (int e = 0; e < x.Length; e++)
            {
                expX[e] = Math.Exp(x[e] - MaxX);
                SumX += expX[e];
            }

            for (int e = 0; e < b.Length; e++)
            {
                expB[e] = Math.Exp(b[e] - MaxB);
                SumB += expB[e];
            }

            for (int e = 0; e < x.Length; e++)
            {
                double pe = (expX[e] / SumX) + 1e-8, qe = (expB[e] / SumB) + 1e-8;
                Kl += pe * Math.Log(pe / qe);
            }
        }

        private static double Maximum(ReadOnlySpan<float> v, double max)
        {
            foreach (float value in v)
            {
                max = Math.Max(max, value);
            }

            return max;
        }

        private static double SumExp(ReadOnlySpan<float> v, double max, double sum)
        {
            foreach (float value in v)
            {
                sum += Math.Exp(value - max);
            }

            return sum;
        }
    }
}
