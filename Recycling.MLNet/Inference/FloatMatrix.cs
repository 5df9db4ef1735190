namespace Recycling.MLNet.Inference;

/// <summary>A dense row-major matrix: one row per sample (logits, probabilities or features).</summary>
public sealed class FloatMatrix
{
    public FloatMatrix(int rows, int columns, float[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (rows < 0 || columns < 0 || data.Length != (long)rows * columns)
        {
            throw new ArgumentException($"{data.Length} values do not make a {rows}x{columns} matrix", nameof(data));
        }

        Rows = rows;
        Columns = columns;
        Data = data;
    }

    public int Rows { get; }

    public int Columns { get; }

    public float[] Data { get; }

    public Span<float> Row(int index) => Data.AsSpan(index * Columns, Columns);

    /// <summary>Index of the largest value of each row (the first on ties, as numpy's argmax).</summary>
    public int[] ArgMax()
    {
        var result = new int[Rows];
        for (int r = 0; r < Rows; r++)
        {
            var row = Row(r);
            int best = 0;
            for (int c = 1; c < row.Length; c++)
            {
                if (row[c] > row[best])
                {
                    best = c;
                }
            }

            result[r] = best;
        }

        return result;
    }

    /// <summary>Softmax of each row, computed in double and stored as float.</summary>
    public FloatMatrix Softmax()
    {
        var result = new float[Data.Length];
        for (int r = 0; r < Rows; r++)
        {
            var row = Row(r);
            var logSumExp = LogSumExp(row);
            for (int c = 0; c < row.Length; c++)
            {
                result[(r * Columns) + c] = (float)Math.Exp(row[c] - logSumExp);
            }
        }

        return new FloatMatrix(Rows, Columns, result);
    }

    /// <summary>log Σ exp(vᵢ) of a row in double, shifted by its maximum so no term overflows.</summary>
    internal static double LogSumExp(ReadOnlySpan<float> row)
    {
        double max = double.NegativeInfinity;
        foreach (var v in row)
        {
            max = Math.Max(max, v);
        }

        double sum = 0;
        foreach (var v in row)
        {
            sum += Math.Exp(v - max);
        }

        return max + Math.Log(sum);
    }
}
