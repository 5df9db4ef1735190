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
    /// the kept entries makes the output element NaN.
    /// </summary>
    void Ties(ReadOnlySpan<TensorSource> inputs, TensorSource baseline, ReadOnlySpan<uint> thresholdBits,
        float lambda, DareMask? dare, Span<float> output);

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
    /// Histogram of the magnitudes of one task vector τ = input − base (DARE-masked for model
    /// <paramref name="modelIndex"/> when <paramref name="dare"/> is given), by fp32 bit pattern with the sign
    /// cleared. With <paramref name="highBitsFilter"/> &lt; 0 it ADDS into 32768 bins indexed by bits &gt;&gt; 16;
    /// otherwise it counts only elements whose bits &gt;&gt; 16 equal the filter, into 65536 bins indexed by bits &amp; 0xFFFF.
    /// </summary>
    void CountMagnitudes(TensorSource input, TensorSource baseline, int modelIndex, DareMask? dare,
        int highBitsFilter, Span<long> counts);
}
