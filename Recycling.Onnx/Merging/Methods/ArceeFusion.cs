namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// mergekit's <c>arcee_fusion</c>: takes the model's change only where it matters. Importance of an entry is
/// |θ₁ − θ0| times the KL divergence of softmax(θ₁) from softmax(θ0) over its row (the last axis); the change is
/// kept where importance ≥ median + 1.5·IQR, quantiles from the sorted importances at index ⌊q·(n − 1)⌋. mergekit
/// samples a million entries of larger tensors at random for the quantiles; we always count them all.
/// </summary>
internal sealed class ArceeFusion : MergeMethodDefinition
{
    public override string Name => "arcee_fusion";

    public override string Formula => "θ0 + τ₁·[|τ₁|·KL(softmax θ₁ ‖ softmax θ0) ≥ median + 1.5·IQR]";

    public override BaseUse Base => BaseUse.Required;

    public override int MinModels => 1;

    public override int MaxModels => 1;

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) => new Merger();

    /// <summary>
    /// Streamed: three passes find each row's softmax maximum, sum and KL divergence (a row inside one chunk in the
    /// first; kept per row for a tensor of at most <see cref="RowDivergences.CachedRows"/> rows, else only for the rows
    /// split between chunks, the others measured again inside their chunk in each later pass), four count the
    /// importances' quartiles (<see cref="CountedRanks"/>) and a last one writes the output. Every value is computed as
    /// the whole-tensor rule computes it, sums in index order, so the result is the same bit for bit at any chunk size.
    /// </summary>
    private sealed class Merger : StreamedMethod
    {
        protected override void MergeTensor(TensorInfo tensor, ChunkPasses passes, Span<float> buffer, TensorMerger.ITensorSink sink)
        {
            long length = passes.Length;
            if (length == 0)
            {
                return;
            }

            using var rows = new RowDivergences(length, tensor.Shape.Count == 0 ? 1 : tensor.Shape[^1]);
            foreach (var stage in (ReadOnlySpan<RowDivergences.Stage>)[RowDivergences.Stage.Maximum, RowDivergences.Stage.Sum, RowDivergences.Stage.Divergence])
            {
                passes.Read((offset, count, inputs, baseline) => rows.Measure(stage, offset, inputs[0].AsSpan(0, count), baseline!.AsSpan(0, count)));
            }

            double[] importance = System.Buffers.ArrayPool<double>.Shared.Rent((int)Math.Max(1, Math.Min(length, buffer.Length)));
            try
            {
                using var quartiles = new CountedRanks(length, Rank(length, 0.25f), Rank(length, 0.5f), Rank(length, 0.75f));
                while (!quartiles.IsComplete)
                {
                    passes.Read((offset, count, inputs, baseline) =>
                    {
                        rows.Importances(offset, inputs[0].AsSpan(0, count), baseline!.AsSpan(0, count), importance);
                        quartiles.Count(importance.AsSpan(0, count));
                    });
                    quartiles.CompletePass();
                }

                double threshold = quartiles.Value(1) + 1.5 * (quartiles.Value(2) - quartiles.Value(0));
                passes.Write(buffer, sink, (offset, inputs, baseline, output) =>
                {
                    float[] x = inputs[0], b = baseline!;
                    rows.Importances(offset, x.AsSpan(0, output.Length), b.AsSpan(0, output.Length), importance);
                    for (int e = 0; e < output.Length; e++)
                    {
                        output[e] = importance[e] >= threshold ? (float)(b[e] + ((double)x[e] - b[e])) : b[e];
                    }
                });
            }
            finally
            {
                System.Buffers.ArrayPool<double>.Shared.Return(importance);
            }
        }

        /// <summary>mergekit's index of quantile q among n sorted values: q·(n − 1) in fp32, truncated.</summary>
        private static long Rank(long n, float q) => (long)(q * (float)(n - 1));
    }
}
