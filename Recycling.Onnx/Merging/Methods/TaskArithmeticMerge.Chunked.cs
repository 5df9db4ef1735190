using System.Buffers;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// The chunked path of the task-arithmetic family: every case the kernels do not take, except DELLA (fiber blocks,
/// TaskArithmeticMerge.Fibers.cs) and a method's own sparsifier. Per-tensor constants first (the magnitude thresholds,
/// counted by the kernels; breadcrumbs' two cuts, two counting passes, <see cref="OutlierCuts"/>; the L1 rescale
/// factors, one more pass), then chunk by chunk: τᵢ = θᵢ − θ0 sparsified and rescaled
/// exactly as <see cref="Sparsify"/> does to the whole tensor (entries tied at a per-tensor threshold kept in index
/// order, L1 sums in the same fp64 lanes, <see cref="L1Lanes"/>), combined by <c>Combine.TaskVectors</c>'s rule (in SIMD, lane by lane the same operations: <see cref="ChunkVectors"/>). So the result equals the
/// whole-tensor path's bit for bit, in memory of N + 1 chunks instead of N + 2 whole tensors.
/// </summary>
internal sealed partial class TaskArithmeticMerge
{
    /// <summary>Elements per block of a chunk combined on one thread.</summary>
    private const int CombineBlock = 1 << 16;

    private void MergeChunked(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink)
    {
        int n = _weights.Length;
        var sparsifiers = new ChunkSparsifier[n];
        MagnitudeTrim.Thresholds? thresholds = _method.Sparsification == Sparsification.Magnitude ? _trim!.For(tensor, chunks) : null;
        int size = (int)Math.Min(chunks.ChunkElements, chunks.Length);
        float[][] tau = [.. Enumerable.Range(0, n).Select(_ => ArrayPool<float>.Shared.Rent(size))];
        float[] baseline = ArrayPool<float>.Shared.Rent(size);
        try
        {
            OutlierCuts?[] cuts = _method.Sparsification == Sparsification.Outliers ? CountOutliers(chunks, tau, baseline) : new OutlierCuts?[n];
            for (int k = 0; k < n; k++)
            {
                sparsifiers[k] = ChunkSparsifier.For(_method.Sparsification, _densities[k], _rescale, _trim?.IsGlobal == true, thresholds, cuts[k], k,
                    new DareMask(_seed, tensor.Id, _densities[k] >= 1 ? 0 : 1 - _densities[k]), chunks.Length);
            }

            if (sparsifiers.Any(s => s.NeedsL1))
            {
                MeasureL1(chunks, sparsifiers, tau, baseline);
            }

            for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
            {
                int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
                chunks.Load(offset, count);
                LoadTaskVectors(chunks, tau, baseline, count);
                long chunkOffset = offset;
                Parallel.For(0, n, k => sparsifiers[k].Apply(tau[k].AsSpan(0, count), chunkOffset));
                float[] output = ArrayPool<float>.Shared.Rent(count);
                try
                {
                    Parallel.For(0, (count + CombineBlock - 1) / CombineBlock, block =>
                    {
                        int start = block * CombineBlock;
                        ChunkVectors.TaskVectors(tau, _weights, baseline, _method.Consensus, _normalize, _lambda, output, start, Math.Min(CombineBlock, count - start));
                    });
                    output.AsSpan(0, count).CopyTo(buffer);
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(output);
                }

                sink.Write(offset, buffer[..count]);
            }
        }
        finally
        {
            foreach (float[] array in tau.Append(baseline))
            {
                ArrayPool<float>.Shared.Return(array);
            }

            foreach (var sparsifier in sparsifiers)
            {
                sparsifier?.Dispose();
            }
        }
    }

    /// <summary>Breadcrumbs' cuts of every model's task vector (null where density ≥ 1): two counting passes over the chunks.</summary>
    private OutlierCuts?[] CountOutliers(ITensorChunks chunks, float[][] tau, float[] baseline)
    {
        var cuts = _densities.Select((d, k) => d >= 1 ? null : new OutlierCuts(chunks.Length, d, _arguments.Get("gamma", k))).ToArray();
        while (cuts.Any(c => c is { KeepsNone: false, IsComplete: false }))
        {
            TensorChunks.ForEach(chunks, null, offset =>
            {
                int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
                LoadTaskVectors(chunks, tau, baseline, count);
                Parallel.For(0, cuts.Length, k => cuts[k]?.Count(tau[k].AsSpan(0, count)));
            });
            foreach (var c in cuts)
            {
                c?.CompletePass();
            }
        }

        return cuts;
    }

    /// <summary>τᵢ = θᵢ − θ0 of the current chunk (fp32), and the base's values.</summary>
    private static void LoadTaskVectors(ITensorChunks chunks, float[][] tau, float[] baseline, int count)
    {
        TensorChunks.Decode(chunks.Base!.Value, baseline.AsSpan(0, count));
        var inputs = chunks.Inputs.ToArray();
        Parallel.For(0, tau.Length, k =>
        {
            TensorChunks.Decode(inputs[k], tau[k].AsSpan(0, count));
            System.Numerics.Tensors.TensorPrimitives.Subtract(tau[k].AsSpan(0, count), baseline.AsSpan(0, count), tau[k].AsSpan(0, count));
        });
    }

    /// <summary>The pass that sums |τᵢ| before and after sparsification over the whole tensor (<see cref="L1Lanes"/>).</summary>
    private static void MeasureL1(ITensorChunks chunks, ChunkSparsifier[] sparsifiers, float[][] tau, float[] baseline)
    {
        var probes = sparsifiers.Select(s => s.Probe()).ToArray();
        TensorChunks.ForEach(chunks, null, offset =>
        {
            int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
            LoadTaskVectors(chunks, tau, baseline, count);
            Parallel.For(0, sparsifiers.Length, k =>
            {
                if (sparsifiers[k].NeedsL1)
                {
                    probes[k].AddL1(tau[k].AsSpan(0, count), offset);
                }
            });
        });
        for (int k = 0; k < sparsifiers.Length; k++)
        {
            if (sparsifiers[k].NeedsL1)
            {
                sparsifiers[k].Factor = Sparsify.L1Factor(probes[k].Before.Total, probes[k].After.Total);
            }
        }
    }

    /// <summary>
    /// One model's sparsifier over one tensor, applied chunk by chunk in order: it keeps state (the entries tied at the
    /// threshold still to keep), so a fresh copy (<see cref="Probe"/>) measures the L1 sums. The random drop with the L1
    /// rescale records its mask in the L1 pass (one bit per element, shared with the probe) and reads it back in the merge.
    /// </summary>
    private sealed class ChunkSparsifier : IDisposable
    {
        private Sparsification _kind;
        private bool _global;
        private uint _bits;
        private long _tiesLeft;
        private DareMask _mask;
        private double _density;
        private double _rescale;
        private int _model;
        private byte[]? _kept;
        private OutlierCuts? _cuts;
        private L1Lanes _before;
        private L1Lanes _after;

        public bool NeedsL1 => _rescale == RescaleModes.L1;

        /// <summary>The L1 rescale factor (after <see cref="MeasureL1"/>).</summary>
        public float Factor { get; set; } = 1;

        public L1Lanes Before => _before;

        public L1Lanes After => _after;

        public static ChunkSparsifier For(Sparsification kind, double density, double rescale, bool global, MagnitudeTrim.Thresholds? thresholds, OutlierCuts? cuts,
            int model, DareMask mask, long length)
        {
            var s = new ChunkSparsifier
            {
                _kind = density >= 1 ? Sparsification.None : kind, _density = density, _mask = mask, _global = global, _model = model, _cuts = cuts,
            };
            // As the whole-tensor path: no rescale at density 1 (nothing was dropped).
            s._rescale = s._kind == Sparsification.None ? RescaleModes.None : rescale;
            if (s._kind == Sparsification.Magnitude)
            {
                s._bits = thresholds!.Value.Bits[model];
                s._tiesLeft = global ? long.MaxValue : thresholds.Value.AtThreshold[model] - thresholds.Value.Excess[model];
            }
            else if (s._kind == Sparsification.Random && s.NeedsL1)
            {
                s._kept = ArrayPool<byte>.Shared.Rent((int)((length + 7) / 8));
            }

            return s;
        }

        public ChunkSparsifier Probe()
        {
            var probe = (ChunkSparsifier)MemberwiseClone();
            probe._cuts = _cuts?.Copy();
            return probe;
        }

        /// <summary>Adds the chunk's |τ| before and after sparsification (the chunk is left as it was).</summary>
        public void AddL1(ReadOnlySpan<float> tau, long offset)
        {
            if (_kind == Sparsification.Random)
            {
                L1Lanes.AddDare(ref _before, ref _after, tau, offset, _mask.KeyFor(_model), _mask.DropThreshold, _kept);
                return;
            }

            float[] copy = ArrayPool<float>.Shared.Rent(tau.Length);
            try
            {
                Span<float> kept = copy.AsSpan(0, tau.Length);
                tau.CopyTo(kept);
                Drop(kept, offset);
                _before.Add(tau, offset);
                _after.Add(kept, offset);
            }
            finally
            {
                ArrayPool<float>.Shared.Return(copy);
            }
        }

        /// <summary>Sparsifies and rescales elements [offset, offset + tau.Length) of the tensor's task vector.</summary>
        public void Apply(Span<float> tau, long offset)
        {
            Drop(tau, offset);
            if (_rescale == RescaleModes.Inverse)
            {
                System.Numerics.Tensors.TensorPrimitives.Divide(tau, (float)_density, tau);
            }
            else if (_rescale == RescaleModes.L1)
            {
                System.Numerics.Tensors.TensorPrimitives.Multiply(tau, Factor, tau);
            }
        }

        public void Dispose()
        {
            if (_kept is not null)
            {
                ArrayPool<byte>.Shared.Return(_kept);
                _kept = null;
            }
        }

        private void Drop(Span<float> tau, long offset)
        {
            switch (_kind)
            {
                case Sparsification.Magnitude:
                    // Per tensor, the first _tiesLeft entries equal to the threshold stay: up to the last of them the
                    // rule is |τ| ≥ threshold, after it |τ| > threshold, i.e. ≥ the next bit pattern.
                    int cut = _global ? tau.Length : _tiesLeft > 0 ? ThresholdTies.LastKept(tau, _bits, ref _tiesLeft) : 0;
                    ChunkVectors.ZeroBelow(tau[..cut], _bits);
                    ChunkVectors.ZeroBelow(tau[cut..], _bits + 1);
                    break;
                case Sparsification.Random when _kept is not null:
                    L1Lanes.ZeroDropped(tau, offset, _kept);
                    break;
                case Sparsification.Outliers:
                    _cuts!.Keep(tau);
                    break;
                case Sparsification.Random:
                    ChunkVectors.ZeroDropped(tau, (_mask with { ElementOffset = offset }).KeyFor(_model), _mask.DropThreshold);
                    break;
            }
        }
    }
}
