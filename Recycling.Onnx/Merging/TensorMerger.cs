using System.Buffers;

namespace Recycling.Onnx.Merging;

/// <summary>
/// Merges one aligned parameter at a time with a <see cref="MergeOptions"/> method on an <see cref="IMergeKernels"/>.
/// <para>How the streaming engine calls it:</para>
/// <code>
/// using IMergeKernels kernels = MergeKernels.Create(options.Device);
/// var merger = new TensorMerger(options, inputCount, kernels);
/// for (int pass = 0; merger.NeedsPrepass(pass); pass++)           // none for linear methods, 1 for Fisher, 2 to 4 for global TIES
/// {
///     foreach (var p in floatParameters)                          // any order; concurrent calls are fine
///         merger.Prepass(pass, TensorId.FromKey(p.CanonicalKey), p.Inputs, p.Base, p.Fishers);
///     merger.CompletePrepass(pass);
/// }
/// foreach (var p in floatParameters)
///     merger.Merge(TensorId.FromKey(p.CanonicalKey), p.Inputs, p.Base, p.Fishers, fp32Output);
/// ElementCodec.Encode(fp32Output, outputType, outputBytes);
/// </code>
/// <para>
/// Inputs are <see cref="TensorSource"/>s over the memory-mapped files (one per model, same element count, any mix of
/// float32/float16/bfloat16); the base is required when <see cref="MergeOptions.RequiresBase"/>; Fisher tensors, one per
/// model, when <see cref="MergeOptions.RequiresFisher"/> (otherwise pass an empty span). The tensor id keys DARE's
/// masks, so it must be stable across runs and identical in the prepass and the merge: derive it from the aligned
/// parameter's canonical key with <see cref="TensorId.FromKey"/>. Tied or duplicated tensors that alignment treats as
/// one parameter must be merged once (one id) and the result written to every copy, so DARE and TIES stay consistent.
/// Prepass covers exactly the tensors later merged: TIES's global top-k is taken over them.
/// <c>Prepass</c> and <c>Merge</c> may be called from several threads at once (tensors in parallel);
/// results do not depend on the order tensors arrive in.
/// </para>
/// <para>
/// Decisions: TIES divides by the count of agreeing entries (the paper), not by Σ wᵢ·mask (mergekit); its exact-tie
/// fallback sign is the majority elected sign of the tensor (the paper takes it over the whole model, which would
/// need one more pass; it only matters where kept entries cancel exactly). Fisher merging normalises cᵢ by the L2
/// norm of model i's Fisher over the WHOLE model, as Matena &amp; Raffel's code does (<c>_l2_norm_of_fisher</c> sums
/// squares over every variable), computed from the raw Fisher; then every Fisher entry (not only the first model's,
/// their <c>favor_target_model</c> default) is floored at <see cref="MergeOptions.FisherFloor"/>.
/// </para>
/// <para>
/// Non-finite inputs (the engine reports them unless the user allows them): averages, task arithmetic and DARE carry a
/// NaN/Inf to exactly the elements it touches; TIES always keeps a NaN entry (largest magnitude) and outputs NaN for its
/// element; a NaN Fisher entry counts as the floor; SLERP and model stock derive per-tensor coefficients from dot
/// products, so one NaN makes the whole tensor NaN.
/// </para>
/// </summary>
internal sealed class TensorMerger
{
    private readonly MergeOptions _options;
    private readonly IMergeKernels _kernels;
    private readonly int _inputCount;
    private readonly float[] _normalisedWeights;
    private readonly MagnitudeThreshold[]? _thresholds;
    private readonly Dictionary<ulong, double[]> _fisherSquares = [];
    private readonly Lock _lock = new();
    private double[]? _fisherNorms;

    public TensorMerger(MergeOptions options, int inputCount, IMergeKernels kernels)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(kernels);
        options.Validate(inputCount);
        _options = options;
        _kernels = kernels;
        _inputCount = inputCount;
        _normalisedWeights = [.. options.NormalisedWeights(inputCount).Select(w => (float)w)];
        if (options.UsesTies && options.TrimScope == TiesTrimScope.Global)
        {
            _thresholds = Enumerable.Range(0, inputCount).Select(_ => new MagnitudeThreshold(options.Density)).ToArray();
        }
    }

    /// <summary>
    /// Whether full pass <paramref name="pass"/> over all tensors is needed before <c>Merge</c> (asked in order,
    /// after the previous pass's <see cref="CompletePrepass"/>). Fisher: pass 0 measures the Fisher norms. Global TIES:
    /// pass 0 samples ~1/64 of the task vectors, pass 1 counts them (reads everything), and passes 2 and 3 run only for
    /// models whose threshold fell outside the window the sample predicted (see <see cref="MagnitudeThreshold"/>).
    /// </summary>
    public bool NeedsPrepass(int pass) => _thresholds is not null
        ? pass == 0 || _thresholds.Any(t => !t.IsComplete)
        : _options.RequiresFisher && pass == 0;

    /// <summary>Per model, the global TIES threshold as an fp32 |τ| value (after the prepasses).</summary>
    public IReadOnlyList<float>? GlobalThresholds =>
        _thresholds?.Select(t => BitConverter.UInt32BitsToSingle(t.ThresholdBits)).ToArray();

    /// <summary>Per model, the full counting passes its global TIES threshold took (1 when the sample's estimate held).</summary>
    public IReadOnlyList<int>? CountingPasses => _thresholds?.Select(t => t.CountingPasses).ToArray();

    /// <summary>Per model, ‖Fᵢ‖₂ over the whole model (after the Fisher prepass).</summary>
    public IReadOnlyList<double>? FisherNorms => _fisherNorms;

    public void Prepass(int pass, ulong tensorId, ReadOnlySpan<TensorSource> inputs, TensorSource? baseline,
        ReadOnlySpan<TensorSource> fishers) =>
        Prepass(pass, tensorId, new WholeTensors(inputs.ToArray(), baseline, fishers.ToArray()));

    /// <summary>One tensor's share of prepass <paramref name="pass"/>, read chunk by chunk.</summary>
    public void Prepass(int pass, ulong tensorId, ITensorChunks chunks)
    {
        CheckShape(chunks.Inputs, chunks.Base, chunks.Fishers);
        if (_thresholds is not null)
        {
            ForEachChunk(chunks, pass == 0 ? tensorId : null, offset => ThresholdPass(_thresholds, pass, tensorId, chunks, offset));
            return;
        }

        if (_options.RequiresFisher)
        {
            double[] squares = new double[_inputCount];
            ForEachChunk(chunks, null, _ =>
            {
                Span<double> cell = stackalloc double[1];
                for (int k = 0; k < _inputCount; k++)
                {
                    _kernels.Gram(chunks.Fishers.Slice(k, 1), null, cell);
                    squares[k] += cell[0];
                }
            });

            lock (_lock)
            {
                if (!_fisherSquares.TryAdd(tensorId, squares))
                {
                    throw new RecyclingException($"tensor id {tensorId:X16} was given twice in the Fisher prepass.");
                }
            }
        }
    }

    public void CompletePrepass(int pass)
    {
        if (_thresholds is not null)
        {
            CompleteThresholdPass(_thresholds, pass);
            return;
        }

        if (_options.RequiresFisher)
        {
            // Summed in tensor-id order so the norms do not depend on the order tensors arrived in.
            var norms = new double[_inputCount];
            foreach (ulong id in _fisherSquares.Keys.Order())
            {
                for (int k = 0; k < _inputCount; k++)
                {
                    norms[k] += _fisherSquares[id][k];
                }
            }

            for (int k = 0; k < _inputCount; k++)
            {
                norms[k] = Math.Sqrt(norms[k]);
                if (!(norms[k] > 0) || !double.IsFinite(norms[k]))
                {
                    throw new RecyclingException(
                        $"the Fisher tensors of model {k + 1} have L2 norm {norms[k]}: they must be finite and not all zero.");
                }
            }

            _fisherNorms = norms;
        }
    }

    /// <summary>Merges one tensor into <paramref name="output"/> (fp32, same element count as the inputs).</summary>
    public void Merge(ulong tensorId, ReadOnlySpan<TensorSource> inputs, TensorSource? baseline,
        ReadOnlySpan<TensorSource> fishers, Span<float> output)
    {
        if (output.Length != inputs[0].Length)
        {
            throw new ArgumentException($"output holds {output.Length} elements, inputs {inputs[0].Length}.", nameof(output));
        }

        Merge(tensorId, new WholeTensors(inputs.ToArray(), baseline, fishers.ToArray()), output, InPlace.Instance);
    }

    /// <summary>
    /// Merges one tensor read chunk by chunk: each chunk is merged into <paramref name="buffer"/> (room for
    /// <see cref="ITensorChunks.ChunkElements"/> values) and handed to <paramref name="sink"/> in order. Per-tensor
    /// coefficients (SLERP, model stock, per-tensor TIES trim) take their own passes over the chunks first; a TIES tensor
    /// of several chunks whose elected-sign majority is negative gets its exact-tie elements through
    /// <see cref="ITensorSink.Patch"/> at the end. Results equal a merge of the whole tensor at once.
    /// </summary>
    public void Merge(ulong tensorId, ITensorChunks chunks, Span<float> buffer, ITensorSink sink)
    {
        CheckShape(chunks.Inputs, chunks.Base, chunks.Fishers);
        if (_thresholds is not null && !_thresholds[0].IsComplete)
        {
            throw new InvalidOperationException("global TIES needs its two prepasses before Merge.");
        }

        if (_options.RequiresFisher && _fisherNorms is null)
        {
            throw new InvalidOperationException("Fisher merging needs its prepass before Merge.");
        }

        float lambda = (float)_options.Lambda;
        bool ties = _options.Method == MergeMethod.Ties || (_options.Method == MergeMethod.Dare && _options.DareCombination == DareCombination.Ties);
        uint[]? thresholds = ties ? Thresholds(tensorId, chunks) : null;
        float[]? weights = _options.Method switch
        {
            MergeMethod.Average => _normalisedWeights,
            MergeMethod.TaskArithmetic => Repeat(lambda),
            MergeMethod.Dare => _options.DareCombination == DareCombination.Average ? _normalisedWeights : Repeat(lambda),
            MergeMethod.Slerp => SlerpWeights(chunks),
            MergeMethod.ModelStock => Repeat((float)(ModelStockRatio(chunks) / _inputCount)),
            _ => null,
        };
        float[] coefficients = new float[_inputCount];
        for (int k = 0; k < _inputCount && _options.Method == MergeMethod.Fisher; k++)
        {
            coefficients[k] = (float)(_normalisedWeights[k] / _fisherNorms![k]);
        }

        var signs = ties && chunks.Length > chunks.ChunkElements ? new TiesSigns() : null;
        for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
        {
            int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
            chunks.Load(offset, count);
            Span<float> output = buffer[..count];
            TensorSource? baseline = _options.Method is MergeMethod.Average or MergeMethod.Slerp ? null : chunks.Base;
            if (ties)
            {
                signs?.ElementOffset = offset;
                _kernels.Ties(chunks.Inputs, chunks.Base!.Value, thresholds, lambda, Dare(tensorId, offset), output, signs);
            }
            else if (_options.Method == MergeMethod.Fisher)
            {
                _kernels.Fisher(chunks.Inputs, chunks.Fishers, coefficients, (float)_options.FisherFloor, output);
            }
            else
            {
                _kernels.WeightedSum(chunks.Inputs, weights, baseline, Dare(tensorId, offset), output);
            }

            sink.Write(offset, output);
        }

        if (signs is { Majority: < 0 })
        {
            foreach ((long index, float value) in signs.Patches)
            {
                sink.Patch(index, value);
            }
        }
    }

    /// <summary>SLERP's two weights for this tensor (lerp when the normalised copies are nearly parallel).</summary>
    private float[] SlerpWeights(ITensorChunks chunks)
    {
        Span<double> gram = stackalloc double[4];
        Gram(chunks, withBase: false, gram);
        double t = _options.T;
        double dot = gram[1] / (Norm(gram[0]) * Norm(gram[3]));
        if (Math.Abs(dot) > 0.9995)
        {
            return [(float)(1 - t), (float)t];
        }

        double omega = Math.Acos(dot), sin = Math.Sin(omega);
        return [(float)(Math.Sin((1 - t) * omega) / sin), (float)(Math.Sin(t * omega) / sin)];

        // As mergekit's normalise: a vector of norm ≤ 1e-8 is left unscaled.
        static double Norm(double squared) => Math.Sqrt(squared) is var n && n > 1e-8 ? n : 1;
    }

    /// <summary>Model stock's t for this tensor: N·cos / (1 + (N−1)·cos), cos the mean pairwise cosine of the τᵢ.</summary>
    private double ModelStockRatio(ITensorChunks chunks)
    {
        int n = _inputCount;
        Span<double> gram = stackalloc double[n * n];
        Gram(chunks, withBase: true, gram);
        double sum = 0;
        for (int a = 0; a < n; a++)
        {
            for (int b = a + 1; b < n; b++)
            {
                // torch.cosine_similarity's convention: a zero task vector has cosine 0 with everything.
                sum += gram[a * n + b] / Math.Max(Math.Sqrt(gram[a * n + a] * gram[b * n + b]), 1e-8);
            }
        }

        double cos = sum / (n * (n - 1) / 2);
        double denominator = 1 + (n - 1) * cos;
        if (denominator == 0)
        {
            throw new RecyclingException(
                $"model stock is undefined here: the task vectors' mean pairwise cosine is exactly -1/(N-1) = {cos}.");
        }

        return n * cos / denominator;
    }

    /// <summary>The Gram matrix of the inputs (or task vectors) over the whole tensor: chunk Grams summed in chunk order.</summary>
    private void Gram(ITensorChunks chunks, bool withBase, Span<double> gram)
    {
        gram.Clear();
        double[] total = new double[gram.Length];
        ForEachChunk(chunks, null, _ =>
        {
            Span<double> part = stackalloc double[total.Length];
            _kernels.Gram(chunks.Inputs, withBase ? chunks.Base : null, part);
            for (int i = 0; i < part.Length; i++)
            {
                total[i] += part[i];
            }
        });
        total.CopyTo(gram);
    }

    private uint[] Thresholds(ulong tensorId, ITensorChunks chunks)
    {
        if (_thresholds is not null)
        {
            return _thresholds.Select(t => t.ThresholdBits).ToArray();
        }

        // Per-tensor trim: the global prepasses, over this one tensor.
        MagnitudeThreshold[] local = Enumerable.Range(0, _inputCount).Select(_ => new MagnitudeThreshold(_options.Density)).ToArray();
        for (int pass = 0; pass == 0 || local.Any(t => !t.IsComplete); pass++)
        {
            int current = pass;
            ForEachChunk(chunks, pass == 0 ? tensorId : null, offset => ThresholdPass(local, current, tensorId, chunks, offset));
            CompleteThresholdPass(local, pass);
        }

        return local.Select(t => t.ThresholdBits).ToArray();
    }

    /// <summary>Loads each chunk of <paramref name="chunks"/> in order (only the sampled runs with <paramref name="sampleOf"/>) and runs <paramref name="body"/> with its offset.</summary>
    private static void ForEachChunk(ITensorChunks chunks, ulong? sampleOf, Action<long> body)
    {
        for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
        {
            chunks.Load(offset, (int)Math.Min(chunks.ChunkElements, chunks.Length - offset), sampleOf);
            body(offset);
        }
    }

    /// <summary>One chunk's share of pass <paramref name="pass"/>: the sample (pass 0), then counting.</summary>
    private void ThresholdPass(MagnitudeThreshold[] thresholds, int pass, ulong tensorId, ITensorChunks chunks, long offset)
    {
        DareMask? dare = Dare(tensorId, offset);
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

    private static void CompleteThresholdPass(MagnitudeThreshold[] thresholds, int pass)
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
        long[] windowStarts = thresholds.Select(t => t.WindowStart).ToArray();
        long[][] coarseCounts = thresholds.Select(t => t.CountsCoarse ? Rent(MagnitudeThreshold.CoarseBins) : []).ToArray();
        long[][] fineCounts = windowStarts.Select(w => w == MagnitudeThreshold.NoWindow ? [] : Rent(MagnitudeThreshold.FineBins)).ToArray();
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

    private DareMask? Dare(ulong tensorId, long elementOffset) =>
        _options.Method == MergeMethod.Dare ? new DareMask(_options.Seed, tensorId, _options.DropRate) { ElementOffset = elementOffset } : null;

    private float[] Repeat(float value) => Enumerable.Repeat(value, _inputCount).ToArray();

    /// <summary>Receives a merged tensor chunk by chunk.</summary>
    internal interface ITensorSink
    {
        /// <summary>Merged values of elements [offset, offset + values.Length).</summary>
        void Write(long offset, ReadOnlySpan<float> values);

        /// <summary>Replaces the value of an element already written (TIES exact ties, once the majority is known).</summary>
        void Patch(long index, float value);
    }

    /// <summary>For a whole tensor merged straight into its output span: nothing to do.</summary>
    private sealed class InPlace : ITensorSink
    {
        public static readonly InPlace Instance = new();

        public void Write(long offset, ReadOnlySpan<float> values)
        {
        }

        public void Patch(long index, float value) =>
            throw new InvalidOperationException("a tensor merged whole applies its own patches");
    }

    private void CheckShape(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, ReadOnlySpan<TensorSource> fishers)
    {
        if (inputs.Length != _inputCount)
        {
            throw new ArgumentException($"{inputs.Length} inputs given to a merge of {_inputCount} models.", nameof(inputs));
        }

        if (_options.RequiresBase && baseline is null)
        {
            throw new RecyclingException($"{_options.Describe()} needs the base model (--base).");
        }

        if (_options.RequiresFisher && fishers.Length != _inputCount)
        {
            throw new RecyclingException($"Fisher merging needs one Fisher tensor per model; {fishers.Length} given.");
        }
    }
}
