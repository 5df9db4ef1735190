using Recycling.Onnx;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>
/// Values that do not change from step to step are computed once: the outputs of nodes that read only constants
/// (Constant nodes, integer initializers, and whatever is computed from them) and the Shape/Size chains exporters
/// emit (Shape → Gather → Unsqueeze → Concat → Reshape). A Shape node's result depends only on its input's shape, so
/// such a chain is cached by the shapes its Shape nodes saw in this call; a new batch size or sequence length is a new
/// entry. Trainable parameters, BatchNorm buffers and random ops (Dropout) never count as constant, so nothing that
/// training changes is cached; a call that replaces initializers caches nothing.
/// </summary>
internal sealed partial class OnnxProgram
{
    /// <summary>At most this many shapes per node are kept (text batches padded to their longest sample vary).</summary>
    private const int MaxCachedShapes = 64;

    private static readonly HashSet<string> Impure = new(StringComparer.Ordinal)
    {
        "Dropout", "If", "Loop", "Scan", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    };

    /// <summary>How one node's results are reused: keyed by its input's shape (a Shape or Size node) or by the keys of the Shape nodes it depends on.</summary>
    private sealed class StaticNode(int[] shapeSources, bool isShape)
    {
        public int[] ShapeSources { get; } = shapeSources;

        public bool IsShape { get; } = isShape;

        public Dictionary<string, Tensor[]> Results { get; } = new(StringComparer.Ordinal);
    }

    /// <summary>Which nodes compute only from constants and tensor shapes; null where a node reads data, a parameter or a buffer, or is random.</summary>
    private static StaticNode?[] PlanStaticNodes(List<CompiledNode> nodes, Dictionary<string, Tensor> fixedValues, Dictionary<string, TorchSharp.Modules.Parameter> parameters,
        Dictionary<string, Tensor> buffers, out HashSet<string> staticOutputs)
    {
        // Static value -> the Shape/Size nodes it depends on.
        var sources = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var name in fixedValues.Keys.Where(n => !parameters.ContainsKey(n) && !buffers.ContainsKey(n) && !n.Contains('\0', StringComparison.Ordinal)))
        {
            sources[name] = [];
        }

        staticOutputs = new HashSet<string>(StringComparer.Ordinal);
        var plans = new StaticNode?[nodes.Count];
        for (var index = 0; index < nodes.Count; index++)
        {
            var node = nodes[index];
            var standard = OpRegistry.NormalizeDomain(node.Proto.Domain).Length == 0;
            if (standard && node.Proto.OpType is "Shape" or "Size" && node.Inputs.Count == 1)
            {
                plans[index] = new StaticNode([index], isShape: true);
            }
            else if (!(standard && Impure.Contains(node.Proto.OpType)) && node.Inputs.All(i => i.Length == 0 || sources.ContainsKey(i)))
            {
                plans[index] = new StaticNode([.. node.Inputs.Where(i => i.Length > 0).SelectMany(i => sources[i]).Distinct().Order()], isShape: false);
            }
            else
            {
                continue;
            }

            foreach (var output in node.Proto.Output.Where(o => o.Length > 0))
            {
                sources[output] = plans[index]!.ShapeSources;
                staticOutputs.Add(output);
            }
        }

        return plans;
    }

    /// <summary>
    /// Runs the needed nodes, reusing static results (<paramref name="cache"/> false: computes everything, as for a call
    /// that replaces initializers).
    /// </summary>
    private void RunMainGraph(bool[] needed, Dictionary<string, Tensor> values, OpContext context, bool cache)
    {
        var keys = new string?[_nodes.Count];
        for (var index = 0; index < _nodes.Count; index++)
        {
            if (!needed[index])
            {
                continue;
            }

            var node = _nodes[index];
            if (!cache || _static[index] is not { } plan)
            {
                Store(node, RunNode(node, values, context), values);
                continue;
            }

            var key = plan.IsShape
                ? string.Join(",", Input(node, values, 0).shape)
                : string.Join(";", plan.ShapeSources.Select(s => keys[s])) + (context.Training ? "|t" : "|e");
            keys[index] = key;
            Tensor[]? results;
            lock (plan)
            {
                plan.Results.TryGetValue(key, out results);
            }

            if (results is null)
            {
                results = RunNode(node, values, context);
                lock (plan)
                {
                    if (plan.Results.Count < MaxCachedShapes)
                    {
                        // Kept across calls: out of the caller's dispose scope, disposed with the program.
                        foreach (var result in results)
                        {
                            result.DetachFromDisposeScope();
                        }

                        plan.Results.TryAdd(key, results);
                    }
                }
            }

            Store(node, results, values);
        }
    }

    private static Tensor Input(CompiledNode node, Dictionary<string, Tensor> values, int slot) =>
        values.TryGetValue(node.Inputs[slot], out var value) ? value
            : throw new RecyclingException($"node {node.Label}: input '{node.Inputs[slot]}' is not produced before it (the graph is not in topological order)");

    /// <summary>How many node results are cached (one per node and input shape).</summary>
    internal int CachedResults => _static.OfType<StaticNode>().Sum(p =>
    {
        lock (p)
        {
            return p.Results.Count;
        }
    });

    private void DisposeStaticResults()
    {
        foreach (var plan in _static.OfType<StaticNode>())
        {
            foreach (var results in plan.Results.Values)
            {
                foreach (var result in results)
                {
                    result.Dispose();
                }
            }

            plan.Results.Clear();
        }
    }
}
