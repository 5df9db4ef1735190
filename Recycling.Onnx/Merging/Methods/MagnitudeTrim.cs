using System.Buffers;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// Per-model magnitude thresholds of the task vectors, counted by the kernels (<see cref="MagnitudeThreshold"/>): over
/// the whole model in prepasses (the TIES paper's global trim, which keeps every |τ| ≥ the threshold), or over each
/// tensor when it is merged (mergekit's rule: exactly ⌊density·M⌋ entries; <see cref="Thresholds.Excess"/> says when
/// entries equal to the threshold must be split, which the generic path does).
/// </summary>
internal sealed class MagnitudeTrim
{
    private readonly IMergeKernels _kernels;
    private readonly double[] _densities;
    private readonly Func<ulong, long, DareMask?> _dare;
    private readonly MagnitudeThreshold[]? _global;

    /// <param name="dare">The random mask applied before the trim for (tensor id, element offset), or null.</param>
    public MagnitudeTrim(IMergeKernels kernels, double[] densities, bool global, Func<ulong, long, DareMask?> dare)
    {
        (_kernels, _densities, _dare) = (kernels, densities, dare);
        _global = global ? [.. densities.Select(d => new MagnitudeThreshold(d))] : null;
    }

    /// <summary>
    /// Per model: fp32 magnitude bits kept at or above, how many entries equal to them are one too many, and how many
    /// entries equal them (0 for the global trim, which keeps them all).
    /// </summary>
    public readonly record struct Thresholds(uint[] Bits, long[] Excess, long[] AtThreshold);

    public bool IsGlobal => _global is not null;

    /// <summary>Per model, the global threshold as an fp32 |τ| (after the prepasses).</summary>
    public IReadOnlyList<float>? GlobalThresholds => _global?.Select(t => BitConverter.UInt32BitsToSingle(t.ThresholdBits)).ToArray();

    /// <summary>Per model, the counting passes its global threshold took (1 when the sample's estimate held).</summary>
    public IReadOnlyList<int>? CountingPasses => _global?.Select(t => t.CountingPasses).ToArray();

    /// <summary>Global: pass 0 samples ~1/64 of the task vectors, pass 1 counts them, passes 2 and 3 only for models whose estimate missed.</summary>
    public bool NeedsPrepass(int pass) => _global is not null && (pass == 0 || _global.Any(t => !t.IsComplete));

    public void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks) =>
        TensorChunks.ForEach(chunks, pass == 0 ? tensor.Id : null, offset => CountChunk(_global!, pass, tensor.Id, chunks, offset));

    public void CompletePrepass(int pass) => Complete(_global!, pass);

    /// <summary>The thresholds for one tensor: the global ones, or this tensor's own (its passes run here).</summary>
    public Thresholds For(TensorInfo tensor, ITensorChunks chunks)
    {
        if (_global is not null)
        {
            if (!_global[0].IsComplete)
            {
                throw new InvalidOperationException("global TIES needs its prepasses before Merge.");
            }

            return new([.. _global.Select(t => t.ThresholdBits)], new long[_global.Length], new long[_global.Length]);
        }

        MagnitudeThreshold[] local = [.. _densities.Select(d => new MagnitudeThreshold(d, exact: true))];
        for (int pass = 0; pass == 0 || local.Any(t => !t.IsComplete); pass++)
        {
            int current = pass;
            TensorChunks.ForEach(chunks, pass == 0 ? tensor.Id : null, offset => CountChunk(local, current, tensor.Id, chunks, offset));
            Complete(local, pass);
        }

        return new([.. local.Select(t => t.ThresholdBits)], [.. local.Select(t => t.Excess)], [.. local.Select(t => t.AtThreshold)]);
    }

    /// <summary>One chunk's share of pass <paramref name="pass"/>: the sample (pass 0), then counting.</summary>
    private void CountChunk(MagnitudeThreshold[] thresholds, int pass, ulong tensorId, ITensorChunks chunks, long offset)
    {
        DareMask? dare = _dare(tensorId, offset);
        if (pass > 0)
        {
            Count(chunks.Inputs, chunks.Base!.Value, dare, thresholds);
            return;
        }

        for (int k = 0; k < thresholds.Length; k++)
        {
            thresholds[k].AddSample(chunks.Inputs[k], chunks.Base!.Value, dare, k, tensorId, offset, chunks.Length);
        }
    }

    private static void Complete(MagnitudeThreshold[] thresholds, int pass)
    {
        foreach (MagnitudeThreshold threshold in thresholds)
        {
            if (pass == 0)
            {
                threshold.CompleteSample();
            }
            else if (!threshold.IsComplete)
            {
                threshold.CompletePass();
            }
        }
    }

    /// <summary>One counting pass over the task vectors of the models whose threshold is still open, each as it asks
    /// (a window around the estimate, or the coarse histogram).</summary>
    private void Count(ReadOnlySpan<TensorSource> inputs, TensorSource baseline, DareMask? dare, MagnitudeThreshold[] thresholds)
    {
        long[] windowStarts = [.. thresholds.Select(t => t.WindowStart)];
        long[][] coarseCounts = [.. thresholds.Select(t => t.CountsCoarse ? Rent(MagnitudeThreshold.CoarseBins) : [])];
        long[][] fineCounts = [.. windowStarts.Select(w => w == MagnitudeThreshold.NoWindow ? [] : Rent(MagnitudeThreshold.FineBins))];
        long[] below = new long[thresholds.Length];
        try
        {
            _kernels.CountMagnitudes(inputs, baseline, dare, windowStarts, coarseCounts, fineCounts, below);
            for (int k = 0; k < thresholds.Length; k++)
            {
                if (!thresholds[k].IsComplete)
                {
                    thresholds[k].Add(coarseCounts[k], below[k], fineCounts[k]);
                }
            }
        }
        finally
        {
            foreach (long[] counts in coarseCounts.Concat(fineCounts).Where(c => c.Length != 0))
            {
                ArrayPool<long>.Shared.Return(counts);
            }
        }
    }

    /// <summary>A zeroed table of exactly <paramref name="bins"/> counts (a power of two, which the pool hands out exactly).</summary>
    private static long[] Rent(int bins)
    {
        long[] counts = ArrayPool<long>.Shared.Rent(bins);
        Array.Clear(counts);
        return counts;
    }
}
