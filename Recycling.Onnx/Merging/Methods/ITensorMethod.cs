namespace Recycling.Onnx.Merging.Methods;

/// <summary>The tensor being merged: the id keying random masks (<see cref="TensorId.FromKey"/>), its name in the first input, its shape.</summary>
internal readonly record struct TensorInfo(ulong Id, string Name, IReadOnlyList<long> Shape)
{
    /// <summary>For callers that merge a bare tensor: no name, one dimension.</summary>
    public static TensorInfo Flat(ulong id, long length) => new(id, "", [length]);

    /// <summary>Rows × columns as mergekit's row-wise rules see it: a vector is one row; more dimensions fold into the columns.</summary>
    public (long Rows, long Columns) Matrix(long length) =>
        Shape.Count < 2 || Shape[0] <= 0 ? (1, length) : (Shape[0], length / Shape[0]);
}

/// <summary>
/// One method's merge for one run, as <see cref="TensorMerger"/> drives it: prepasses over every mergeable tensor
/// (global statistics such as the paper's TIES threshold or Fisher norms), then each tensor chunk by chunk. Prepass
/// and Merge may be called from several threads for different tensors; the result must not depend on tensor order.
/// </summary>
internal interface ITensorMethod
{
    /// <summary>Whether full pass <paramref name="pass"/> over all tensors is needed before <see cref="Merge"/>.</summary>
    bool NeedsPrepass(int pass);

    void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks);

    void CompletePrepass(int pass);

    /// <summary>
    /// Merges one tensor: each chunk into <paramref name="buffer"/> (room for <see cref="ITensorChunks.ChunkElements"/>
    /// values), handed to <paramref name="sink"/> in order. Per-tensor statistics take their own passes over the chunks first.
    /// </summary>
    void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink);

    /// <summary>Notes for the summary once the prepasses ran (e.g. how often the inputs were read); empty by default.</summary>
    IReadOnlyList<string> Notes => [];
}
