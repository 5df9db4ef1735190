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

    /// <summary>
    /// How one node's results are reused: keyed by its input's shape (a Shape or Size node), or by the training flag and
    /// the entries its Shape nodes found in this call (an entry's index in its node's list stands for that shape).
    /// Keys are compared as numbers, without building strings: this runs for every static node on every step.
    /// </summary>
    private sealed class StaticNode(int[] shapeSources, bool isShape)
    {
        public int[] ShapeSources { get; } = shapeSources;

        public bool IsShape { get; } = isShape;

        public List<(long[] Key, Tensor[] Results)> Entries { get; } = [];

        /// <summary>The index of the entry for <paramref name="key"/>, or -1.</summary>
        public int Find(ReadOnlySpan<long> key)
        {
            for (var k = 0; k < Entries.Count; k++)
            {
                if (key.SequenceEqual(Entries[k].Key))
                {
                    return k;
                }
            }

            return -1;
        }
    }

    /// <summary>
    /// A node list to run (the fused one, or the nodes as compiled for a call that wants a value a fusion skips), with
    /// its static-value cache and which nodes each set of wanted values needs.
    /// </summary>
    private sealed class NodePlan
    {
        private readonly Dictionary<string, bool[]> _needed = new(StringComparer.Ordinal);

        public NodePlan(List<CompiledNode> nodes, Dictionary<string, Tensor> fixedValues, Dictionary<string, TorchSharp.Modules.Parameter> parameters,
            Dictionary<string, Tensor> buffers)
        {
            Nodes = nodes;
            Static = PlanStaticNodes(nodes, fixedValues, parameters, buffers, out var staticOutputs);
            StaticOutputs = staticOutputs;
        }

        public List<CompiledNode> Nodes { get; }

        public StaticNode?[] Static { get; }

        public HashSet<string> StaticOutputs { get; }

        /// <summary>Which nodes the values <paramref name="wanted"/> depend on: only those run (a graph cut before a
        /// head that cannot run at this input size, or an unused branch, costs nothing).</summary>
        public bool[] Needed(IEnumerable<string> wanted)
        {
            var key = string.Join("\n", wanted);
            lock (_needed)
            {
                if (_needed.TryGetValue(key, out var cached))
                {
                    return cached;
                }

                var values = wanted.ToHashSet(StringComparer.Ordinal);
                var needed = new bool[Nodes.Count];
                for (var index = Nodes.Count - 1; index >= 0; index--)
                {
                    var node = Nodes[index];
                    if (node.Proto.Output.Any(values.Contains))
                    {
                        needed[index] = true;
                        values.UnionWith(node.Inputs.Where(i => i.Length > 0));
                    }
                }

                _needed[key] = needed;
                return needed;
            }
        }

        public void DisposeStaticResults()
        {
            foreach (var plan in Static.OfType<StaticNode>())
            {
                foreach (var (_, results) in plan.Entries)
                {
                    foreach (var result in results)
                    {
                        result.Dispose();
                    }
                }

                plan.Entries.Clear();
            }
        }
    }

    /// <summary>The nodes as compiled, unfused: built on the first call that wants a value inside a fused pattern.</summary>
    private NodePlan Compiled
    {
        get
        {
            lock (_fused)
            {
                return _compiled ??= new NodePlan(_nodes, _fixed, _parameters, _buffers);
            }
        }
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
    private static void RunMainGraph(NodePlan nodePlan, bool[] needed, Dictionary<string, Tensor> values, OpContext context, bool cache)
    {
        // Per static node, the entry it used in this call (-1: not cached, so neither is anything computed from it).
        var entries = new int[nodePlan.Nodes.Count];
        Span<long> buffer = stackalloc long[16];
        for (var index = 0; index < nodePlan.Nodes.Count; index++)
        {
            if (!needed[index])
            {
                continue;
            }

            var node = nodePlan.Nodes[index];
            if (!cache || nodePlan.Static[index] is not { } plan)
            {
                Store(node, RunNode(node, values, context), values);
                continue;
            }

            scoped ReadOnlySpan<long> key;
            var cacheable = true;
            if (plan.IsShape)
            {
                key = Input(node, values, 0).shape;
            }
            else
            {
                var keyBuffer = plan.ShapeSources.Length < buffer.Length ? buffer[..(plan.ShapeSources.Length + 1)] : new long[plan.ShapeSources.Length + 1];
                keyBuffer[0] = context.Training ? 1 : 0;
                for (var s = 0; s < plan.ShapeSources.Length; s++)
                {
                    keyBuffer[s + 1] = entries[plan.ShapeSources[s]];
                    cacheable &= keyBuffer[s + 1] >= 0;
                }

                key = keyBuffer;
            }

            Tensor[]? results = null;
            var entry = -1;
            if (cacheable)
            {
                lock (plan)
                {
                    entry = plan.Find(key);
                    results = entry >= 0 ? plan.Entries[entry].Results : null;
                }
            }

            if (results is null)
            {
                results = RunNode(node, values, context);
                if (cacheable)
                {
                    lock (plan)
                    {
                        entry = plan.Find(key);
                        if (entry < 0 && plan.Entries.Count < MaxCachedShapes)
                        {
                            // Kept across calls: out of the caller's dispose scope, disposed with the program.
                            foreach (var result in results)
                            {
                                result.DetachFromDisposeScope();
                            }

                            plan.Entries.Add((key.ToArray(), results));
                            entry = plan.Entries.Count - 1;
                        }
                    }
                }
            }

            entries[index] = entry;
            Store(node, results, values);
        }
    }

    private static Tensor Input(CompiledNode node, Dictionary<string, Tensor> values, int slot) =>
        values.TryGetValue(node.Inputs[slot], out var value) ? value
            : throw new RecyclingException($"node {node.Label}: input '{node.Inputs[slot]}' is not produced before it (the graph is not in topological order)");

    /// <summary>How many node results are cached (one per node and input shape).</summary>
    internal int CachedResults => new[] { _fused, _compiled }.OfType<NodePlan>().SelectMany(n => n.Static).OfType<StaticNode>().Sum(p =>
    {
        lock (p)
        {
            return p.Entries.Count;
        }
    });

    private void DisposeStaticResults()
    {
        _fused.DisposeStaticResults();
        _compiled?.DisposeStaticResults();
    }
}
