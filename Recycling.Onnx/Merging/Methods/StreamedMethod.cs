using System.Buffers;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// The path of methods whose rule needs whole-tensor statistics (norms, dot products, cuts) but no element of the
/// tensor out of order: each statistic is a pass over the chunks in index order, accumulated the way the whole-tensor
/// rule accumulates it (fp64, element by element in index order, carried across chunks), so the result is bit for bit
/// the whole-tensor rule's at any chunk size; then a last pass writes the output. Memory: N + 2 fp32 chunks and the
/// method's per-tensor scalars, whatever the tensor's size; time: one read of the inputs per pass. CPU only.
/// </summary>
internal abstract class StreamedMethod : ITensorMethod
{
    public virtual bool NeedsPrepass(int pass) => false;

    public virtual void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks)
    {
    }

    public virtual void CompletePrepass(int pass)
    {
    }

    /// <summary>Merges one tensor: statistics with <see cref="ChunkPasses.Read"/>, then the output with <see cref="ChunkPasses.Write"/>.</summary>
    protected abstract void MergeTensor(TensorInfo tensor, ChunkPasses passes, Span<float> buffer, TensorMerger.ITensorSink sink);

    public void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink)
    {
        using var passes = new ChunkPasses(chunks);
        MergeTensor(tensor, passes, buffer, sink);
    }
}

/// <summary>Passes over one tensor's chunks in index order, each chunk of every input (and the base) widened to fp32.</summary>
internal sealed class ChunkPasses : IDisposable
{
    private readonly ITensorChunks _chunks;
    private readonly float[][] _inputs;
    private readonly float[]? _baseline;

    public ChunkPasses(ITensorChunks chunks)
    {
        _chunks = chunks;
        int size = (int)Math.Max(1, Math.Min(chunks.ChunkElements, chunks.Length));
        _inputs = [.. Enumerable.Range(0, chunks.Inputs.Length).Select(_ => ArrayPool<float>.Shared.Rent(size))];
        _baseline = chunks.Base is null ? null : ArrayPool<float>.Shared.Rent(size);
    }

    /// <summary>
    /// One chunk: elements [offset, offset + count) of the tensor; <paramref name="inputs"/>[i] holds model i's values
    /// at [0, count), <paramref name="baseline"/> the base's (null without one).
    /// </summary>
    public delegate void Reader(long offset, int count, float[][] inputs, float[]? baseline);

    /// <summary>As <see cref="Reader"/>, filling <paramref name="output"/> (count values) with the merged chunk.</summary>
    public delegate void Writer(long offset, float[][] inputs, float[]? baseline, Span<float> output);

    public long Length => _chunks.Length;

    public int Models => _inputs.Length;

    public bool HasBase => _baseline is not null;

    /// <summary>Reads every chunk in index order.</summary>
    public void Read(Reader body)
    {
        for (long offset = 0; offset < _chunks.Length; offset += _chunks.ChunkElements)
        {
            body(offset, Load(offset), _inputs, _baseline);
        }
    }

    /// <summary>Reads every chunk in index order and hands each merged chunk, made in <paramref name="buffer"/>, to <paramref name="sink"/>.</summary>
    public void Write(Span<float> buffer, TensorMerger.ITensorSink sink, Writer body)
    {
        for (long offset = 0; offset < _chunks.Length; offset += _chunks.ChunkElements)
        {
            int count = Load(offset);
            body(offset, _inputs, _baseline, buffer[..count]);
            sink.Write(offset, buffer[..count]);
        }
    }

    public void Dispose()
    {
        foreach (float[] array in _baseline is null ? _inputs : _inputs.Append(_baseline))
        {
            ArrayPool<float>.Shared.Return(array);
        }
    }

    private int Load(long offset)
    {
        int count = (int)Math.Min(_chunks.ChunkElements, _chunks.Length - offset);
        _chunks.Load(offset, count);
        for (int i = 0; i < _inputs.Length; i++)
        {
            TensorChunks.Decode(_chunks.Inputs[i], _inputs[i].AsSpan(0, count));
        }

        if (_baseline is not null)
        {
            TensorChunks.Decode(_chunks.Base!.Value, _baseline.AsSpan(0, count));
        }

        return count;
    }
}
