using System.Buffers;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// DELLA's path (MAGPRUNE ranks within fibers along axis 1): the tensor is read in groups of whole fiber blocks
/// (<see cref="FiberPrune"/>), about a chunk each, so it holds a group per model instead of whole tensors. With the L1
/// rescale, a first pass prunes each group to sum ‖τᵢ‖₁ before and after in the shared fp64 lanes
/// (<see cref="L1Lanes"/>, the same sums as the whole-tensor rule) and records the mask (one bit per element); the
/// merge pass then reads the mask back instead of ranking again. Combined by <see cref="ChunkVectors"/>, the result
/// equals the whole-tensor rule (<see cref="Della.Magprune"/>, <c>Combine.TaskVectors</c>) bit for bit.
/// </summary>
internal sealed partial class TaskArithmeticMerge
{
    private void MergeFibers(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink)
    {
        long length = chunks.Length, block = FiberPrune.BlockOf(tensor.Shape, length);
        if (length == 0)
        {
            return;
        }

        // Groups and their slices (see Prune) start at multiples of lcm(block, 8) elements, so no two threads share a byte of the recorded mask.
        long unit = block * (8 / (long)System.Numerics.BigInteger.GreatestCommonDivisor(Math.Max(1, block), 8));
        long group = unit * Math.Max(1, chunks.ChunkElements / Math.Max(1, unit));
        if (block == 0 || group > Array.MaxLength)
        {
            _generic.Merge(tensor, chunks, buffer, sink); // the fibers do not tile the tensor: rank it whole
            return;
        }

        int n = _weights.Length, size = (int)Math.Min(group, length);
        var random = new DareMask(_seed, tensor.Id, 0);
        var prunes = Enumerable.Range(0, n).Select(k => FiberPrune.For(tensor.Shape, length, _densities[k], _arguments.Get("epsilon", k), random.KeyFor(k))).ToArray();
        bool inverse = _rescale == RescaleModes.Inverse;
        bool[] l1 = [.. _densities.Select(d => d < 1 && _rescale == RescaleModes.L1)];
        float[][] tau = [.. Enumerable.Range(0, n).Select(_ => ArrayPool<float>.Shared.Rent(size))];
        float[] baseline = ArrayPool<float>.Shared.Rent(size), output = ArrayPool<float>.Shared.Rent(size);
        byte[]?[] kept = [.. l1.Select(on => on ? ArrayPool<byte>.Shared.Rent((int)((length + 7) / 8)) : null)];
        try
        {
            var factors = new float[n];
            Array.Fill(factors, 1f);
            if (l1.Any(on => on))
            {
                var before = new L1Lanes[n];
                var after = new L1Lanes[n];
                for (long offset = 0; offset < length; offset += group)
                {
                    int count = (int)Math.Min(group, length - offset);
                    LoadGroup(chunks, tau, baseline, offset, count);
                    long start = offset;
                    Parallel.For(0, n, k =>
                    {
                        if (l1[k])
                        {
                            before[k].Add(tau[k].AsSpan(0, count), start);
                            Prune(prunes[k], tau[k].AsSpan(0, count), start, unit, inverse: false, kept[k]);
                            after[k].Add(tau[k].AsSpan(0, count), start);
                        }
                    });
                }

                for (int k = 0; k < n; k++)
                {
                    factors[k] = l1[k] ? Sparsify.L1Factor(before[k].Total, after[k].Total) : 1f;
                }
            }

            for (long offset = 0; offset < length; offset += group)
            {
                int count = (int)Math.Min(group, length - offset);
                LoadGroup(chunks, tau, baseline, offset, count);
                long start = offset;
                Parallel.For(0, n, k =>
                {
                    var values = tau[k].AsSpan(0, count);
                    if (l1[k])
                    {
                        L1Lanes.ZeroDropped(values, start, kept[k]);
                        System.Numerics.Tensors.TensorPrimitives.Multiply(values, factors[k], values);
                    }
                    else
                    {
                        Prune(prunes[k], values, start, unit, inverse, default);
                    }
                });
                Parallel.For(0, (count + CombineBlock - 1) / CombineBlock, b =>
                {
                    int from = b * CombineBlock;
                    ChunkVectors.TaskVectors(tau, _weights, baseline, _method.Consensus, _normalize, _lambda, output, from, Math.Min(CombineBlock, count - from));
                });
                for (int piece = 0; piece < count; piece += chunks.ChunkElements)
                {
                    int pieceCount = Math.Min(chunks.ChunkElements, count - piece);
                    output.AsSpan(piece, pieceCount).CopyTo(buffer);
                    sink.Write(offset + piece, buffer[..pieceCount]);
                }
            }
        }
        finally
        {
            foreach (float[] array in tau.Append(baseline).Append(output))
            {
                ArrayPool<float>.Shared.Return(array);
            }

            foreach (byte[]? bits in kept)
            {
                if (bits is not null)
                {
                    ArrayPool<byte>.Shared.Return(bits);
                }
            }
        }
    }

    /// <summary>Prunes a group of blocks, in slices of whole units (whole blocks, multiples of 8 elements) on several threads when it holds many.</summary>
    private static void Prune(FiberPrune prune, Span<float> tau, long offset, long unit, bool inverse, Span<byte> keptBits)
    {
        int units = (int)(tau.Length / unit), slices = Math.Min(units, Environment.ProcessorCount);
        if (slices <= 1 || tau.Length < CombineBlock)
        {
            prune.Prune(tau, offset, inverse, keptBits);
            return;
        }

        unsafe
        {
            fixed (float* values = tau)
            fixed (byte* bits = keptBits)
            {
                float* v = values;
                byte* kb = bits;
                int length = tau.Length, bitsLength = keptBits.Length;
                Parallel.For(0, slices, s =>
                {
                    int first = (int)(units * (long)s / slices * unit);
                    int last = s == slices - 1 ? length : (int)(units * (long)(s + 1) / slices * unit);
                    prune.Prune(new Span<float>(v + first, last - first), offset + first, inverse, kb is null ? default : new Span<byte>(kb, bitsLength));
                });
            }
        }
    }

    /// <summary>τᵢ = θᵢ − θ0 (fp32) and the base's values for elements [offset, offset + count), read a chunk at a time.</summary>
    private static void LoadGroup(ITensorChunks chunks, float[][] tau, float[] baseline, long offset, int count)
    {
        var inputs = new TensorSource[tau.Length];
        for (int done = 0; done < count; done += chunks.ChunkElements)
        {
            int part = Math.Min(chunks.ChunkElements, count - done);
            chunks.Load(offset + done, part);
            TensorChunks.Decode(chunks.Base!.Value, baseline.AsSpan(done, part));
            chunks.Inputs.CopyTo(inputs);
            int at = done;
            Parallel.For(0, tau.Length, k =>
            {
                var values = tau[k].AsSpan(at, part);
                TensorChunks.Decode(inputs[k], values);
                System.Numerics.Tensors.TensorPrimitives.Subtract(values, baseline.AsSpan(at, part), values);
            });
        }
    }
}
