namespace Recycling.Onnx.Merging;

/// <summary>
/// The elementwise and reduction primitives every merge method is built from, over ONE aligned tensor at a time.
/// Implemented on the CPU (<see cref="CpuMergeKernels"/>, SIMD + threads) and with ILGPU
/// (<see cref="IlgpuMergeKernels"/>, CUDA or ILGPU's CPU accelerator). All inputs of a call have the same element
/// count as the output; inputs may mix float32/float16/bfloat16 and are widened to fp32 exactly before any math.
/// Task vectors are τᵢ = xᵢ − base, computed in fp32. Callers normally use <see cref="TensorMerger"/>, which maps
/// each <see cref="MergeMethod"/> onto these primitives.
/// </summary>
internal interface IMergeKernels : IDisposable
{
    /// <summary>Short name for reports, e.g. "cpu/Vector512 x16" or "ilgpu/CUDA NVIDIA H100".</summary>
    string Name { get; }

    /// <summary>
    /// Without a base: out = Σ wᵢ·xᵢ. With a base: out = base + Σ wᵢ·τᵢ, where τᵢ is multiplied by DARE's
    /// keep-and-rescale factor when <paramref name="dare"/> is given (which needs a base). Sums run over i in order.
    /// </summary>
    void WeightedSum(ReadOnlySpan<TensorSource> inputs, ReadOnlySpan<float> weights, TensorSource? baseline,
        DareMask? dare, Span<float> output);

    /// <summary>
    /// TIES merge step. τᵢ (DARE-masked when <paramref name="dare"/> is given) is kept where its magnitude bit pattern
    /// is ≥ <paramref name="thresholdBits"/>[i] (see <see cref="MagnitudeThreshold"/>), else zero; the elected sign is
    /// sign(Σ kept τᵢ); the disjoint mean averages the kept entries of the elected sign (count floored at 1);
    /// out = base + λ·mean. An element whose kept entries sum to exactly zero takes the tensor's majority elected sign
    /// (positive if more elements elected + than −, otherwise negative, as in the paper's code). A NaN or ±Inf among
    /// the kept entries makes the output element NaN. With <paramref name="signs"/> (a tensor merged in chunks), the call
    /// adds its tally and exact-tie values to it and leaves those elements as for a positive majority: the caller
    /// applies <see cref="TiesSigns.Patches"/> once the whole tensor's majority is known.
    /// </summary>
    void Ties(ReadOnlySpan<TensorSource> inputs, TensorSource baseline, ReadOnlySpan<uint> thresholdBits,
        float lambda, DareMask? dare, Span<float> output, TiesSigns? signs = null);

    /// <summary>
    /// Fisher-weighted mean: out = Σ cᵢ·max(Fᵢ, floor)·xᵢ / Σ cᵢ·max(Fᵢ, floor) (a NaN Fisher entry counts as floor).
    /// </summary>
    void Fisher(ReadOnlySpan<TensorSource> inputs, ReadOnlySpan<TensorSource> fishers, ReadOnlySpan<float> coefficients,
        float floor, Span<float> output);

    /// <summary>
    /// Gram matrix of the inputs (or of their task vectors when a base is given), accumulated in fp64 in a fixed
    /// order, so a result never depends on thread count. <paramref name="gram"/> is N×N row-major.
    /// </summary>
    void Gram(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, Span<double> gram);

    /// <summary>
    /// Counts the magnitudes of every task vector τᵢ = inputᵢ − base (DARE-masked for model i when
    /// <paramref name="dare"/> is given) in one pass that reads the base once, by fp32 bit pattern with the sign cleared
    /// (see <see cref="MagnitudeThreshold"/>). Every count is ADDED to what the arrays hold. When
    /// <paramref name="coarse"/>[i] is not empty it receives model i's coarse histogram
    /// (<see cref="MagnitudeThreshold.CoarseBins"/>, index bits &gt;&gt; <see cref="MagnitudeThreshold.CoarseShift"/>). When
    /// <paramref name="windowStarts"/>[i] is not <see cref="MagnitudeThreshold.NoWindow"/>, <paramref name="below"/>[i]
    /// receives the number of model i's entries whose bits are below it, and <paramref name="fine"/>[i]
    /// (<see cref="MagnitudeThreshold.FineBins"/>) the histogram of those in the window, index bits − start. A model asked
    /// for neither is not read.
    /// </summary>
    void CountMagnitudes(ReadOnlySpan<TensorSource> inputs, TensorSource baseline, DareMask? dare,
        ReadOnlySpan<long> windowStarts, long[][] coarse, long[][] fine, long[] below);
}

/// <summary>Elected-sign tally of one tensor, and the values its exact-tie elements take if the majority is negative.</summary>
internal sealed class TiesSigns
{
    private readonly Lock _lock = new();
    private long _tally;

    /// <summary>Added to the call-relative indices of <see cref="Add"/>: the first element of the chunk being merged.</summary>
    public long ElementOffset { get; set; }

    /// <summary>(element index in the tensor, value) of every exact-tie element, for a negative majority.</summary>
    public List<(long Index, float Value)> Patches { get; } = [];

    /// <summary>+1 when more elements elected + than −; otherwise −1 (the paper's code picks − on a zero tally).</summary>
    public int Majority => Interlocked.Read(ref _tally) > 0 ? 1 : -1;

    public void Add(long tally, List<(long Index, float Value)>? patches)
    {
        Interlocked.Add(ref _tally, tally);
        if (patches is { Count: > 0 })
        {
            lock (_lock)
            {
                Patches.AddRange(patches.Select(p => (p.Index + ElementOffset, p.Value)));
            }
        }
    }
}
