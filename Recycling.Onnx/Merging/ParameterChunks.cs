using System.Numerics.Tensors;
using Recycling.Onnx.Alignment;

namespace Recycling.Onnx.Merging;

/// <summary>
/// One parameter's tensors read a chunk at a time through the files' handles (pread) into reused pinned buffers: never
/// through the memory mapping, so an input shortened by another process mid-merge is an error naming it, not SIGBUS,
/// and a tensor of any size is merged in bounded memory. Float32/16/bf16 values are copied as stored, typed fields
/// decoded a window at a time (one <see cref="IO.TypedFieldCursor"/> per tensor, so a pass decodes each once); other
/// float types are widened to fp32.
/// </summary>
internal sealed unsafe class ParameterChunks : ITensorChunks
{
    /// <summary>1 Mi elements (4 MiB of fp32 per input): a multiple of the TIES sample stride and of the kernels' chunks,
    /// large enough that a kernel call spreads over every core.</summary>
    public const int ChunkElementCount = 1 << 20;

    private readonly OnnxTensor[] _tensors;
    private readonly FisherChunkReader[]? _fisherValues;
    private readonly IO.TypedFieldCursor?[] _cursors;
    private readonly ChunkBuffers _buffers;
    private readonly TensorSource[] _inputs;
    private readonly TensorSource[] _fishers;
    private readonly TensorSource[] _views;
    private TensorSource? _base;
    private bool _sampled;
    private long _offset;
    private int _count;

    public ParameterChunks(AlignedParameter p, FisherSet? fishers, ChunkBuffers buffers)
    {
        _tensors = [.. p.Tensors, .. p.Base is null ? Array.Empty<OnnxTensor>() : [p.Base]];
        _fisherValues = fishers is null ? null : [.. p.Tensors.Select((t, i) => fishers.Reader(i, t))];
        _cursors = [.. _tensors.Select(t => t.OpenCursor())];
        _buffers = buffers;
        _inputs = new TensorSource[p.Tensors.Count];
        _fishers = new TensorSource[_fisherValues?.Length ?? 0];
        _views = new TensorSource[_tensors.Length];
        _base = p.Base is null ? null : default(TensorSource);
        Length = p.Tensors[0].ElementCount;
    }

    public long Length { get; }

    public int ChunkElements => ChunkElementCount;

    public ReadOnlySpan<TensorSource> Inputs => _inputs;

    public TensorSource? Base => _base;

    public ReadOnlySpan<TensorSource> Fishers => _fishers;

    public void Load(long offset, int count, ulong? sampleOf = null)
    {
        (_offset, _count, _sampled) = (offset, count, sampleOf is not null);
        var views = _views;
        for (var i = 0; i < _tensors.Length; i++)
        {
            _buffers.Slot(i, (long)count * sizeof(float)); // slots grow here, not inside the parallel reads
        }

        // The files are read in parallel (each read is a page-cache copy, or disk I/O), as the kernels' threads
        // faulted pages of the mappings in parallel before.
        if (count >= 1 << 16 && _tensors.Length > 1)
        {
            try
            {
                Parallel.For(0, _tensors.Length, i => views[i] = Read(i, _tensors[i], offset, count, sampleOf));
            }
            catch (AggregateException e)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
            }
        }
        else
        {
            for (var i = 0; i < _tensors.Length; i++)
            {
                views[i] = Read(i, _tensors[i], offset, count, sampleOf);
            }
        }

        views.AsSpan(0, _inputs.Length).CopyTo(_inputs);
        _base = _tensors.Length > _inputs.Length ? views[^1] : null;

        for (var k = 0; k < _fishers.Length; k++)
        {
            var buffer = _buffers.Slot(_tensors.Length + k, (long)count * sizeof(float));
            _fisherValues![k](offset, new Span<float>(buffer, count));
            _fishers[k] = new TensorSource(buffer, count, OnnxDataType.Float);
        }
    }

    /// <summary>
    /// The first tensor whose current chunk holds NaN or infinity, or null: scanned in the read slots, as loaded (kernels
    /// only read them), so reporting a poisoned input allocates nothing and reads no file again.
    /// </summary>
    public OnnxTensor? NonFiniteInput()
    {
        if (_sampled)
        {
            throw new InvalidOperationException("a chunk loaded for sampling holds only its sampled runs");
        }

        for (var i = 0; i < _tensors.Length; i++)
        {
            if (!IsFiniteAll(_views[i], _count))
            {
                return _tensors[i];
            }
        }

        return null;
    }

    private static bool IsFiniteAll(TensorSource view, int count)
    {
        if (view.DataType == OnnxDataType.Float)
        {
            return TensorPrimitives.IsFiniteAll(new ReadOnlySpan<float>(view.Data, count));
        }

        // float16 and bfloat16: a value is NaN or infinite when its exponent bits are all set, whatever its sign
        var exponent = view.DataType == OnnxDataType.Float16 ? (ushort)0x7C00 : (ushort)0x7F80;
        var bits = new ReadOnlySpan<ushort>(view.Data, count);
        return !bits.ContainsAnyInRange(exponent, (ushort)0x7FFF) && !bits.ContainsAnyInRange((ushort)(exponent | 0x8000), (ushort)0xFFFF);
    }

    private TensorSource Read(int slot, OnnxTensor t, long offset, int count, ulong? sampleOf)
    {
        if (t.ElementCount != Length)
        {
            throw new RecyclingException($"{t.Path} has {t.ElementCount} elements where {Length} are expected");
        }

        if (!TensorSource.IsSupported(t.DataType))
        {
            var widened = _buffers.Slot(slot, (long)count * sizeof(float));
            t.ReadFloat32(offset, new Span<float>(widened, count));
            return new TensorSource(widened, count, OnnxDataType.Float);
        }

        var size = TensorSource.ElementSize(t.DataType);
        var buffer = _buffers.Slot(slot, (long)count * size);
        if (_cursors[slot] is { } cursor)
        {
            t.ReadRaw(offset * size, new Span<byte>(buffer, count * size), cursor);
        }
        else if (sampleOf is { } id)
        {
            foreach (var (start, length, _) in MagnitudeThreshold.SampleBlocks(Length, id, offset, offset + count))
            {
                t.ReadRaw(start * size, new Span<byte>(buffer + ((start - offset) * size), length * size));
            }
        }
        else
        {
            t.ReadRaw(offset * size, new Span<byte>(buffer, count * size));
        }

        return new TensorSource(buffer, count, t.DataType);
    }
}
