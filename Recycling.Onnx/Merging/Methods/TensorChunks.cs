namespace Recycling.Onnx.Merging.Methods;

/// <summary>Helpers every method's per-tensor merge uses to read an <see cref="ITensorChunks"/>.</summary>
internal static class TensorChunks
{
    /// <summary>Loads each chunk in order (only the sampled runs with <paramref name="sampleOf"/>) and runs <paramref name="body"/> with its offset.</summary>
    public static void ForEach(ITensorChunks chunks, ulong? sampleOf, Action<long> body)
    {
        for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
        {
            chunks.Load(offset, (int)Math.Min(chunks.ChunkElements, chunks.Length - offset), sampleOf);
            body(offset);
        }
    }

    /// <summary>The Gram matrix (N×N, row-major) of the inputs, or of their task vectors with a base, over the whole tensor: chunk Grams summed in chunk order, fp64.</summary>
    public static double[] Gram(IMergeKernels kernels, ITensorChunks chunks, bool withBase)
    {
        int n = chunks.Inputs.Length;
        double[] total = new double[n * n];
        ForEach(chunks, null, _ =>
        {
            Span<double> part = stackalloc double[total.Length];
            kernels.Gram(chunks.Inputs, withBase ? chunks.Base : null, part);
            for (int i = 0; i < part.Length; i++)
            {
                total[i] += part[i];
            }
        });
        return total;
    }

    /// <summary>Widens <paramref name="source"/> (the current chunk of one tensor) to fp32.</summary>
    public static unsafe void Decode(TensorSource source, Span<float> destination)
    {
        int size = TensorSource.ElementSize(source.DataType);
        ElementCodec.Decode(new ReadOnlySpan<byte>(source.Data, checked(destination.Length * size)), source.DataType, destination);
    }

    /// <summary>Hands <paramref name="values"/> (a whole tensor) to <paramref name="sink"/> chunk by chunk through <paramref name="buffer"/>, as the kernels' paths do.</summary>
    public static void WriteAll(ReadOnlySpan<float> values, Span<float> buffer, int chunk, TensorMerger.ITensorSink sink)
    {
        for (int offset = 0; offset < values.Length; offset += chunk)
        {
            int count = Math.Min(chunk, values.Length - offset);
            values.Slice(offset, count).CopyTo(buffer);
            sink.Write(offset, buffer[..count]);
        }
    }
}

/// <summary>
/// The generic path of per-tensor methods without a dedicated kernel: the whole tensor of every input (and the base)
/// widened to fp32 arrays, merged by <see cref="MergeTensor"/> as mergekit merges one tensor, then written in chunks.
/// Memory: N + 2 fp32 copies of the largest tensor. Runs on the CPU whatever the device.
/// </summary>
internal abstract class WholeTensorMethod : ITensorMethod
{
    /// <summary>Tensors of at least this many elements (16 MiB of fp32) get a full collection first.</summary>
    private const int CollectAbove = 1 << 22;

    public virtual bool NeedsPrepass(int pass) => false;

    public virtual void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks)
    {
    }

    public virtual void CompletePrepass(int pass)
    {
    }

    /// <summary>Merges one tensor: <paramref name="inputs"/>[i] model i's values, <paramref name="baseline"/> the base's (null without one).</summary>
    protected abstract void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output);

    public void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink)
    {
        if (chunks.Length > Array.MaxLength)
        {
            throw new RecyclingException($"tensor '{tensor.Name}' has {chunks.Length} elements: this method merges whole tensors, at most {Array.MaxLength} elements");
        }

        int length = (int)chunks.Length;
        if (length >= CollectAbove)
        {
            // Whole-tensor arrays live on the large-object heap, which only a full collection frees: without one, the
            // previous tensors' arrays pile up (3 GiB for karcher on 4 × 1 GiB models). Collecting before each large
            // tensor, when the last one's arrays are garbage, bounds the peak near one tensor's arrays.
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true);
        }

        float[][] inputs = [.. Enumerable.Range(0, chunks.Inputs.Length).Select(_ => GC.AllocateUninitializedArray<float>(length))];
        float[]? baseline = chunks.Base is null ? null : GC.AllocateUninitializedArray<float>(length);
        TensorChunks.ForEach(chunks, null, offset =>
        {
            int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
            for (int i = 0; i < inputs.Length; i++)
            {
                TensorChunks.Decode(chunks.Inputs[i], inputs[i].AsSpan((int)offset, count));
            }

            if (baseline is not null)
            {
                TensorChunks.Decode(chunks.Base!.Value, baseline.AsSpan((int)offset, count));
            }
        });
        float[] output = GC.AllocateUninitializedArray<float>(length);
        MergeTensor(tensor, inputs, baseline, output);
        TensorChunks.WriteAll(output, buffer, chunks.ChunkElements, sink);
    }
}

/// <summary>
/// The generic path of elementwise methods (each output element depends only on the same element of the inputs, plus
/// per-tensor constants): chunk by chunk, widened to fp32, in bounded memory. Runs on the CPU whatever the device.
/// </summary>
internal abstract class ChunkwiseMethod : ITensorMethod
{
    public virtual bool NeedsPrepass(int pass) => false;

    public virtual void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks)
    {
    }

    public virtual void CompletePrepass(int pass)
    {
    }

    /// <summary>
    /// Merges elements [<paramref name="offset"/>, offset + output.Length) of <paramref name="tensor"/>: the first
    /// output.Length entries of each <paramref name="inputs"/> array and of <paramref name="baseline"/> (empty without a base).
    /// </summary>
    protected abstract void MergeChunk(TensorInfo tensor, long offset, float[][] inputs, ReadOnlySpan<float> baseline, Span<float> output);

    public void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink)
    {
        int size = (int)Math.Min(chunks.ChunkElements, chunks.Length);
        float[][] inputs = [.. Enumerable.Range(0, chunks.Inputs.Length).Select(_ => System.Buffers.ArrayPool<float>.Shared.Rent(size))];
        float[] baseline = System.Buffers.ArrayPool<float>.Shared.Rent(size);
        try
        {
            for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
            {
                int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
                chunks.Load(offset, count);
                for (int i = 0; i < inputs.Length; i++)
                {
                    TensorChunks.Decode(chunks.Inputs[i], inputs[i].AsSpan(0, count));
                }

                if (chunks.Base is { } b)
                {
                    TensorChunks.Decode(b, baseline.AsSpan(0, count));
                }

                MergeChunk(tensor, offset, inputs, chunks.Base is null ? default : baseline.AsSpan(0, count), buffer[..count]);
                sink.Write(offset, buffer[..count]);
            }
        }
        finally
        {
            foreach (float[] array in inputs.Append(baseline))
            {
                System.Buffers.ArrayPool<float>.Shared.Return(array);
            }
        }
    }
}
