using System.Buffers;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// One run of a <see cref="TaskArithmeticFamily"/> method. Fast paths on the kernels (SIMD CPU or ILGPU):
/// no sparsification, and the random drop with equal densities (<see cref="IMergeKernels.WeightedSum"/> with a
/// <see cref="DareMask"/>, L1 rescale factors measured per tensor first); sign election with equal positive weights,
/// normalize, one density and no rescale after a magnitude trim (<see cref="IMergeKernels.Ties"/>; entries tied at a
/// per-tensor threshold split by cutting the chunks where the kept ones end, <see cref="ThresholdTies"/>), or after a
/// random drop rescaled by 1/density. Everything else (per-model weights or densities in TIES, DARE-TIES without
/// normalize, an L1 rescale under consensus, breadcrumbs) takes the chunked path (TaskArithmeticMerge.Chunked.cs),
/// which follows mergekit's code step by step chunk by chunk; DELLA goes fiber block by fiber block
/// (TaskArithmeticMerge.Fibers.cs); only a method's own sparsifier (<see cref="Sparsification.Custom"/>) takes the
/// generic path over whole fp32 tensors.
/// </summary>
internal sealed partial class TaskArithmeticMerge : ITensorMethod
{
    private readonly TaskArithmeticFamily _method;
    private readonly MethodArguments _arguments;
    private readonly IMergeKernels _kernels;
    private readonly double[] _weights;
    private readonly double[] _densities;
    private readonly double _lambda;
    private readonly bool _normalize;
    private readonly double _rescale;
    private readonly ulong _seed;
    private readonly MagnitudeTrim? _trim;
    private readonly Generic _generic;

    public TaskArithmeticMerge(TaskArithmeticFamily method, MethodArguments arguments, IMergeKernels kernels)
    {
        (_method, _arguments, _kernels) = (method, arguments, kernels);
        _weights = arguments.PerModel("weight");
        _densities = arguments.PerModel("density");
        _lambda = arguments["lambda"];
        _normalize = arguments.Flag("normalize");
        _rescale = arguments["rescale"];
        _seed = method.IsRandom ? (ulong)arguments["seed"] : 0;
        if (method.Sparsification == Sparsification.Magnitude)
        {
            bool global = arguments["trim"] == TrimModes.Global;
            if (global && _densities.Any(d => d <= 0))
            {
                throw new RecyclingException($"{method.Name}: the global trim needs density in (0, 1], not 0.");
            }

            _trim = new MagnitudeTrim(kernels, _densities, global, (_, _) => null);
        }

        _generic = new Generic(this);
    }

    /// <summary>The global trim's thresholds per model, as fp32 |τ| (after the prepasses); null for a per-tensor trim.</summary>
    public IReadOnlyList<float>? GlobalThresholds => _trim?.GlobalThresholds;

    public IReadOnlyList<int>? CountingPasses => _trim?.CountingPasses;

    public IReadOnlyList<string> Notes => _trim?.CountingPasses is { } counting && counting.Max() > 0
        ? [counting.Max() == 1
            ? "TIES global trim: the inputs were read once to count task-vector magnitudes, guided by a sample"
            : $"TIES global trim: the inputs were read {counting.Max()} times to count task-vector magnitudes (the sample's estimate missed for some model)"]
        : [];

    public bool NeedsPrepass(int pass) => _trim?.NeedsPrepass(pass) ?? false;

    public void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks) => _trim!.Prepass(pass, tensor, chunks);

    public void CompletePrepass(int pass) => _trim!.CompletePrepass(pass);

    public void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink)
    {
        bool sameDensity = _densities.All(d => d == _densities[0]);
        double density = _densities[0];
        switch (_method.Sparsification, _method.Consensus)
        {
            case (Sparsification.None, Combine.Consensus.None):
                WeightedSum(tensor, chunks, buffer, sink, dare: null, [.. _weights.Select(w => w * _lambda / Divisor())]);
                return;
            case (Sparsification.Random, Combine.Consensus.None) when sameDensity:
                if (density >= 1)
                {
                    WeightedSum(tensor, chunks, buffer, sink, dare: null, [.. _weights.Select(w => w * _lambda / Divisor())]);
                    return;
                }

                var mask = new DareMask(_seed, tensor.Id, 1 - density);
                if (_rescale != RescaleModes.L1)
                {
                    double factor = _rescale == RescaleModes.Inverse ? 1.0 : 1.0 / mask.Scale;
                    WeightedSum(tensor, chunks, buffer, sink, mask, [.. _weights.Select(w => w * factor * _lambda / Divisor())]);
                    return;
                }

                // The L1 pass records the mask (1 bit per element and model), so the merge reads it instead of drawing it again.
                byte[][] kept = [.. _weights.Select(_ => ArrayPool<byte>.Shared.Rent((int)((chunks.Length + 7) / 8)))];
                try
                {
                    double[] factors = L1Factors(chunks, mask, kept);
                    WeightedSum(tensor, chunks, buffer, sink, mask with { Recorded = kept }, [.. _weights.Select((w, i) => w * factors[i] * _lambda / Divisor())]);
                }
                finally
                {
                    foreach (byte[] bits in kept)
                    {
                        ArrayPool<byte>.Shared.Return(bits);
                    }
                }

                return;
            case (Sparsification.Magnitude, Combine.Consensus.Sum) when sameDensity && UnitWeights() && _normalize && (_rescale == RescaleModes.None || density >= 1):
                var thresholds = _trim!.For(tensor, chunks);
                Ties(chunks, buffer, sink, thresholds.Bits, dare: null, ThresholdTies.For(thresholds));
                return;

            case (Sparsification.Random, Combine.Consensus.Sum) when sameDensity && UnitWeights() && _normalize && (_rescale == RescaleModes.Inverse || density >= 1):
                Ties(chunks, buffer, sink, new uint[_weights.Length], density >= 1 ? null : new DareMask(_seed, tensor.Id, 1 - density));
                return;
        }

        if (_method.Sparsification == Sparsification.Custom)
        {
            _generic.Merge(tensor, chunks, buffer, sink);
        }
        else if (_method.Sparsification == Sparsification.Magprune)
        {
            MergeFibers(tensor, chunks, buffer, sink);
        }
        else
        {
            MergeChunked(tensor, chunks, buffer, sink);
        }
    }

    /// <summary>Without consensus, mergekit divides by Σ wᵢ when normalizing (a sum of magnitude below 1e-8 counts as 1).</summary>
    private double Divisor()
    {
        double sum = (float)_weights.Sum(w => (float)w);
        return !_normalize || Math.Abs(sum) < 1e-8 ? 1 : sum;
    }

    /// <summary>All weights equal and positive: then Σ wᵢ·maskᵢ-normalised sums equal the kernels' disjoint means.</summary>
    private bool UnitWeights() => _weights.All(w => w == _weights[0] && w > 0);

    private void WeightedSum(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink, DareMask? dare, double[] coefficients)
    {
        float[] weights = [.. coefficients.Select(c => (float)c)];
        for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
        {
            int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
            chunks.Load(offset, count);
            _kernels.WeightedSum(chunks.Inputs, weights, chunks.Base, dare is { } d ? d with { ElementOffset = offset } : null, buffer[..count]);
            sink.Write(offset, buffer[..count]);
        }
    }

    /// <summary>
    /// The TIES kernel: the disjoint mean of the entries kept at or above each model's threshold that agree with the
    /// elected sign. An element whose kept entries sum to exactly zero takes the + sign (mergekit), except under the
    /// global trim, which keeps the paper's code: the tensor's majority sign.
    /// </summary>
    private void Ties(ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink, uint[] bits, DareMask? dare, ThresholdTies? ties = null)
    {
        var signs = new TiesSigns();
        for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
        {
            int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
            chunks.Load(offset, count);
            if (ties is null)
            {
                signs.ElementOffset = offset;
                _kernels.Ties(chunks.Inputs, chunks.Base!.Value, bits, (float)_lambda, dare is { } d ? d with { ElementOffset = offset } : null, buffer[..count], signs);
            }
            else
            {
                foreach (var (start, end, pieceBits) in ties.Pieces(chunks.Inputs, chunks.Base!.Value, count))
                {
                    signs.ElementOffset = offset + start;
                    TensorSource[] inputs = [.. chunks.Inputs.ToArray().Select(s => Slice(s, start, end - start))];
                    _kernels.Ties(inputs, Slice(chunks.Base!.Value, start, end - start), pieceBits, (float)_lambda, null, buffer[start..end], signs);
                }
            }

            sink.Write(offset, buffer[..count]);
        }

        if (_trim?.IsGlobal == true && signs.Majority < 0)
        {
            foreach ((long index, float value) in signs.Patches)
            {
                sink.Patch(index, value);
            }
        }
    }

    private static unsafe TensorSource Slice(TensorSource source, int start, int count) =>
        new(source.Data + ((long)start * TensorSource.ElementSize(source.DataType)), count, source.DataType) { IsMapped = source.IsMapped };

    /// <summary>
    /// mergekit's L1 rescale factors ‖τᵢ‖₁ / ‖mask ⊙ τᵢ‖₁ over this tensor, divided by the mask's own 1/(1−p): one pass
    /// that draws the mask, records it in <paramref name="kept"/> (one bit per element, per model) and sums both norms in
    /// SIMD (<see cref="L1Lanes.AddDare(ref L1Lanes, ref L1Lanes, ReadOnlySpan{float}, ReadOnlySpan{float}, long, ulong, uint, Span{byte})"/>,
    /// τ formed in registers from the chunk buffers), models in parallel.
    /// </summary>
    private double[] L1Factors(ITensorChunks chunks, DareMask mask, byte[][] kept)
    {
        int n = _weights.Length;
        var before = new L1Lanes[n];
        var after = new L1Lanes[n];
        int size = (int)Math.Min(chunks.ChunkElements, chunks.Length);
        // Scratch only for float16/bfloat16 sources, which are widened first; float32 ones are read where they lie.
        float[][] widened = [.. Enumerable.Range(0, n + 1).Select(_ => ArrayPool<float>.Shared.Rent(size))];
        try
        {
            TensorChunks.ForEach(chunks, null, offset =>
            {
                int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
                var inputs = chunks.Inputs.ToArray();
                var baseline = chunks.Base!.Value;
                Widen(baseline, widened[n], count);
                Parallel.For(0, n, k =>
                {
                    Widen(inputs[k], widened[k], count);
                    L1Lanes.AddDare(ref before[k], ref after[k], Fp32(inputs[k], widened[k], count), Fp32(baseline, widened[n], count),
                        offset, mask.KeyFor(k), mask.DropThreshold, kept[k]);
                });
            });
        }
        finally
        {
            foreach (float[] array in widened)
            {
                ArrayPool<float>.Shared.Return(array);
            }
        }

        return [.. Enumerable.Range(0, n).Select(k => Sparsify.L1Factor(before[k].Total, after[k].Total) / (double)mask.Scale)];
    }

    /// <summary>Widens the current chunk of a float16/bfloat16 <paramref name="source"/> into <paramref name="scratch"/> (for <see cref="Fp32"/>).</summary>
    private static void Widen(TensorSource source, float[] scratch, int count)
    {
        if (source.DataType != OnnxDataType.Float)
        {
            TensorChunks.Decode(source, scratch.AsSpan(0, count));
        }
    }

    /// <summary>The current chunk of <paramref name="source"/> as fp32: where it lies when stored so, else as <see cref="Widen"/> left it.</summary>
    private static unsafe ReadOnlySpan<float> Fp32(TensorSource source, float[] scratch, int count) =>
        source.DataType == OnnxDataType.Float ? new ReadOnlySpan<float>((float*)source.Data, count) : scratch.AsSpan(0, count);

    /// <summary>mergekit's GTA task over whole fp32 tensors.</summary>
    private sealed class Generic(TaskArithmeticMerge run) : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            var method = run._method;
            var random = new DareMask(run._seed, tensor.Id, 0);
            float[][] tau = inputs;
            for (int k = 0; k < tau.Length; k++)
            {
                for (int e = 0; e < tau[k].Length; e++)
                {
                    tau[k][e] -= baseline![e];
                }

                double density = run._densities[k];
                switch (method.Sparsification)
                {
                    case Sparsification.Magnitude when run._trim!.IsGlobal:
                        uint bits = run._trim.For(tensor, null!).Bits[k];
                        Span<float> original = tau[k].ToArray();
                        for (int e = 0; e < tau[k].Length; e++)
                        {
                            tau[k][e] = Sparsify.MagnitudeBits(tau[k][e]) >= bits ? tau[k][e] : 0;
                        }

                        Sparsify.Rescale(original, tau[k], density, density >= 1 ? RescaleModes.None : run._rescale);
                        break;
                    case Sparsification.Magnitude:
                        Sparsify.Magnitude(tau[k], density, run._rescale);
                        break;
                    case Sparsification.Random:
                        Sparsify.Random(tau[k], density, run._rescale, density >= 1 ? random : new DareMask(run._seed, tensor.Id, 1 - density), k);
                        break;
                    case Sparsification.Custom:
                        method.SparsifyTensor(tau[k], tensor, k, run._arguments, random);
                        break;
                }
            }

            Combine.TaskVectors(tau, run._weights, baseline, method.Consensus, run._normalize, run._lambda, output);
        }
    }
}
