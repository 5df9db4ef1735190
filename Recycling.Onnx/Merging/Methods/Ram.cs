namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// Reinforced Agent Merging (mergekit's <c>ram</c>): an entry changed (|τᵢ| &gt; ε) by one model only takes that
/// change whole; one changed by several takes the mean of their changes: θ0 + Σᵢ τᵢ·[|τᵢ| &gt; ε] / max(cₑ, 1),
/// cₑ the number of models changing entry e.
/// </summary>
internal sealed class Ram : MergeMethodDefinition
{
    internal static readonly MethodParameter Epsilon = new("epsilon", 1e-5, "a task-vector entry counts as changed when |τ| > epsilon") { Min = 0 };

    public override string Name => "ram";

    public override string Formula => "θ0 + Σ τᵢ·[|τᵢ|>ε] / max(#models changing the entry, 1)";

    public override BaseUse Base => BaseUse.Required;

    public override IReadOnlyList<MethodParameter> Parameters => [Epsilon];

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) =>
        new Merger(arguments["epsilon"], null);

    /// <summary>
    /// RAM's merge; with <paramref name="unique"/> (RAM+), model i's unique changes are scaled by unique[i] computed per
    /// tensor from whole-tensor counts (one more pass; counts are exact in any order). Elementwise otherwise.
    /// </summary>
    internal sealed class Merger(double epsilon, Func<long[], long[], double[]>? unique) : StreamedMethod
    {
        protected override void MergeTensor(TensorInfo tensor, ChunkPasses passes, Span<float> buffer, TensorMerger.ITensorSink sink)
        {
            int n = passes.Models;
            double[] scales = [.. Enumerable.Repeat(1.0, n)];
            if (unique is not null)
            {
                // Per model: how many of its changed entries others change too (shared) and how many only it changes.
                var shared = new long[n];
                var only = new long[n];
                passes.Read((_, count, inputs, baseline) =>
                {
                    for (int e = 0; e < count; e++)
                    {
                        int changes = Changes(inputs, baseline!, e);
                        for (int i = 0; i < n; i++)
                        {
                            if (Math.Abs(inputs[i][e] - baseline![e]) > epsilon)
                            {
                                shared[i] += changes > 1 ? 1 : 0;
                                only[i] += changes == 1 ? 1 : 0;
                            }
                        }
                    }
                });
                scales = unique(shared, only);
            }

            passes.Write(buffer, sink, (_, inputs, baseline, output) =>
            {
                for (int e = 0; e < output.Length; e++)
                {
                    int changes = Changes(inputs, baseline!, e);
                    double sum = 0;
                    for (int i = 0; i < n; i++)
                    {
                        float tau = inputs[i][e] - baseline![e];
                        if (Math.Abs(tau) > epsilon)
                        {
                            sum += changes == 1 ? scales[i] * tau : (double)tau / changes;
                        }
                    }

                    output[e] = (float)(baseline![e] + sum);
                }
            });
        }

        /// <summary>How many models change entry e (|τᵢ| &gt; ε).</summary>
        private int Changes(float[][] inputs, float[] baseline, int e)
        {
            int changes = 0;
            for (int i = 0; i < inputs.Length; i++)
            {
                changes += Math.Abs(inputs[i][e] - baseline[e]) > epsilon ? 1 : 0;
            }

            return changes;
        }
    }
}
