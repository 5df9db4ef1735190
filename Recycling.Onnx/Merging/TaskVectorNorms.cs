using System.Globalization;

namespace Recycling.Onnx.Merging;

/// <summary>
/// How far a task-vector merge moves the weights: the length of the merged task vector τm = θ − θ0 against the
/// longest single τᵢ = θᵢ − θ0, over every merged float tensor. θ0 + λ Σ τᵢ grows with the number of models (√N for
/// unrelated task vectors, N for aligned ones) and DARE's 1/(1−p) rescaling lengthens each τ̂ᵢ further; past
/// <see cref="WarningRatio"/> the merge extrapolates beyond every fine-tuning, which on the zoo costs most of the
/// accuracy (DARE p 0.9, λ 1 over 8 models: ratio about 10, 12% accuracy). A uniform soup stays at or below 1.
/// </summary>
internal sealed class TaskVectorNorms
{
    /// <summary>Warn when ‖τm‖ exceeds the longest ‖τᵢ‖ by this factor: twice as far from the base as any fine-tuning went.</summary>
    public const double WarningRatio = 2.0;

    // Tensors up to WholeUpTo elements are measured whole; larger ones on every Stride-th element, the same elements for
    // the base, each input and the merge, so the ratio stays an estimate of the same quantity and costs ~0.1% of a read.
    private const long WholeUpTo = 1 << 16;
    private const int Stride = 1031;

    private readonly double[] _inputs;
    private readonly Lock _lock = new();
    private double _merged;

    public TaskVectorNorms(int inputCount) => _inputs = new double[inputCount];

    /// <summary>True for the methods whose result is θ0 plus a combination of task vectors.</summary>
    public static bool Applies(MergeOptions options) => options.Definition is Methods.TaskArithmeticFamily;

    /// <summary>
    /// Adds one chunk's share of ‖τᵢ‖² and ‖τm‖²: elements [offset, offset + merged.Length) of a tensor of
    /// <paramref name="tensorLength"/> elements, with the inputs' and the base's values of the same elements (call while
    /// the chunk is loaded). Safe from several threads.
    /// </summary>
    public void AddChunk(ReadOnlySpan<TensorSource> inputs, TensorSource baseChunk, ReadOnlySpan<float> merged, long offset, long tensorLength)
    {
        long stride = tensorLength <= WholeUpTo ? 1 : Stride;
        long first = (stride - (offset % stride)) % stride; // the first sampled element of this chunk
        Span<double> sums = stackalloc double[inputs.Length + 1];
        for (long k = first; k < merged.Length; k += stride)
        {
            float b = At(baseChunk, k);
            for (int i = 0; i < inputs.Length; i++)
            {
                double d = At(inputs[i], k) - b;
                sums[i] += d * d;
            }

            double m = merged[(int)k] - b;
            sums[inputs.Length] += m * m;
        }

        lock (_lock)
        {
            for (int i = 0; i < inputs.Length; i++)
            {
                _inputs[i] += sums[i] * stride;
            }

            _merged += sums[inputs.Length] * stride;
        }
    }

    public double MergedNorm => Math.Sqrt(_merged);

    /// <summary>The longest input task vector: its index and length.</summary>
    public (int Index, double Norm) Longest()
    {
        int index = 0;
        for (int i = 1; i < _inputs.Length; i++)
        {
            if (_inputs[i] > _inputs[index])
            {
                index = i;
            }
        }

        return (index, Math.Sqrt(_inputs[index]));
    }

    /// <summary>The warning for a merge past <see cref="WarningRatio"/>, with its numbers and what to change; null otherwise.</summary>
    public string? Warning(MergeOptions options, IReadOnlyList<string> inputNames)
    {
        var (index, longest) = Longest();
        double merged = MergedNorm;
        if (!(longest > 0) || !(merged > WarningRatio * longest))
        {
            return null;
        }

        var c = CultureInfo.InvariantCulture;
        int n = _inputs.Length;
        double ratio = merged / longest;
        string remedy = options.Method == MergeMethod.Dare && options.DareCombination == DareCombination.Average
            ? string.Create(c, $"lower --drop-rate (each τ̂ᵢ is rescaled by 1/(1−p) = {1 / (1 - options.DropRate):G3})")
            : string.Create(c, $"lower --lambda, e.g. 1/N = {1.0 / n:G3} (--lambda {options.Lambda / ratio:G2} would make it as long as the longest single one)");
        return string.Create(c,
            $"the merged task vector is {ratio:F1}× as long as the longest single one (‖θ − θ0‖ = {merged:G4}; largest ‖θᵢ − θ0‖ = {longest:G4}, {inputNames[index]}; threshold {WarningRatio:G}×): " +
            $"{options.Describe()} over {n} models moves the weights far beyond every fine-tuning and usually breaks the model; {remedy}");
    }

    private static unsafe float At(TensorSource source, long index) => source.DataType switch
    {
        OnnxDataType.Float => ((float*)source.Data)[index],
        OnnxDataType.Float16 => HalfBits.HalfToSingle(((ushort*)source.Data)[index]),
        _ => HalfBits.BFloat16ToSingle(((ushort*)source.Data)[index]),
    };
}
