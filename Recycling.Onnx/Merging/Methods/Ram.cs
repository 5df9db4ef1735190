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

    /// <summary>RAM's merge; with <paramref name="unique"/> (RAM+), model i's unique changes are scaled by unique[i] computed per tensor.</summary>
    internal sealed class Merger(double epsilon, Func<int[], int[], double[]>? unique) : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            int n = inputs.Length, length = output.Length;
            var counts = new int[length];
            for (int i = 0; i < n; i++)
            {
                for (int e = 0; e < length; e++)
                {
                    counts[e] += Math.Abs(inputs[i][e] - baseline![e]) > epsilon ? 1 : 0;
                }
            }

            double[] scales = Enumerable.Repeat(1.0, n).ToArray();
            if (unique is not null)
            {
                // Per model: how many of its changed entries others change too (shared) and how many only it changes.
                var shared = new int[n];
                var only = new int[n];
                for (int i = 0; i < n; i++)
                {
                    for (int e = 0; e < length; e++)
                    {
                        if (Math.Abs(inputs[i][e] - baseline![e]) > epsilon)
                        {
                            shared[i] += counts[e] > 1 ? 1 : 0;
                            only[i] += counts[e] == 1 ? 1 : 0;
                        }
                    }
                }

                scales = unique(shared, only);
            }

            for (int e = 0; e < length; e++)
            {
                double sum = 0;
                for (int i = 0; i < n; i++)
                {
                    float tau = inputs[i][e] - baseline![e];
                    if (Math.Abs(tau) > epsilon)
                    {
                        sum += counts[e] == 1 ? scales[i] * tau : (double)tau / counts[e];
                    }
                }

                output[e] = (float)(baseline![e] + sum);
            }
        }
    }
}
