using System.Text;
using Recycling.Onnx.Proto;

namespace Recycling.Onnx.Alignment;

/// <summary>One place where a weight is read: the consuming node's canonical index and the input slot.</summary>
internal readonly record struct WeightSite(int Node, int Slot)
{
    public override string ToString() => $"n{Node}:{Slot}";
}

/// <summary>
/// A model's main graph in canonical form: the nodes in the exporter's topological order without the Identity
/// nodes that merely alias an initializer (exporters insert them when deduplicating equal tensors), each node
/// described by op type, attributes and inputs that refer to graph inputs, node outputs or weights by position,
/// never by (exporter-chosen) value names. Two exports of fine-tunings of one base have equal canonical forms.
/// </summary>
internal sealed class CanonicalGraph
{
    private CanonicalGraph(OnnxModel model, List<NodeProto> nodes, List<int> originalIndex, List<string> signatures, List<string> structuralIds,
        Dictionary<WeightSite, OnnxTensor> sites, Dictionary<string, string> aliases, Dictionary<string, (int Node, int Slot)> producers)
    {
        StructuralIds = structuralIds;
        Model = model;
        OriginalIndex = originalIndex;
        Nodes = nodes;
        Signatures = signatures;
        Sites = sites;
        Aliases = aliases;
        Producers = producers;
    }

    public OnnxModel Model { get; }

    /// <summary>Nodes in canonical order (alias Identity nodes removed).</summary>
    public IReadOnlyList<NodeProto> Nodes { get; }

    /// <summary>Per canonical node, its index in the graph's node list.</summary>
    public IReadOnlyList<int> OriginalIndex { get; }

    /// <summary>Per canonical node, a string that two equal graphs share: op, domain, attributes, positional inputs.</summary>
    public IReadOnlyList<string> Signatures { get; }

    /// <summary>
    /// Per canonical node, an id that the same node has in another export even when other nodes were added or removed
    /// (a cut with a new head): a hash of op, attributes, weight shapes and its inputs' ids (its whole ancestry),
    /// numbered by occurrence in graph order.
    /// </summary>
    public IReadOnlyList<string> StructuralIds { get; }

    /// <summary>Every weight read, by site, resolved through Identity chains to the initializer holding the bytes.</summary>
    public IReadOnlyDictionary<WeightSite, OnnxTensor> Sites { get; }

    /// <summary>Identity outputs that alias an initializer: output name -> initializer name.</summary>
    public IReadOnlyDictionary<string, string> Aliases { get; }

    /// <summary>Value name -> (canonical node, output slot) that produces it.</summary>
    public IReadOnlyDictionary<string, (int Node, int Slot)> Producers { get; }

    /// <param name="keep">Graph node indices to keep (a shared body), or null for all.</param>
    public static CanonicalGraph Build(OnnxModel model, IReadOnlySet<int>? keep = null)
    {
        var graph = model.Proto.Graph;
        var initializers = new Dictionary<string, OnnxTensor>(StringComparer.Ordinal);
        foreach (var tensor in model.Tensors.Where(t => t.Kind == TensorKind.Initializer && t.Path.StartsWith("graph/initializer[", StringComparison.Ordinal)))
        {
            initializers[tensor.Name] = tensor;
        }

        var graphInputs = graph.Input.Select(i => i.Name).Where(n => !initializers.ContainsKey(n)).Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);

        // Identity nodes whose input resolves to an initializer are aliases, not computation.
        var aliases = new Dictionary<string, string>(StringComparer.Ordinal);
        bool changed;
        do
        {
            changed = false;
            foreach (var node in graph.Node)
            {
                if (OpRules.For(node).IsIdentity && node.Input.Count == 1 && node.Output.Count == 1 && !aliases.ContainsKey(node.Output[0]))
                {
                    var source = node.Input[0];
                    var resolved = aliases.TryGetValue(source, out var target) ? target : initializers.ContainsKey(source) ? source : null;
                    if (resolved is not null && !graphInputs.ContainsKey(source))
                    {
                        aliases[node.Output[0]] = resolved;
                        changed = true;
                    }
                }
            }
        }
        while (changed);

        var originalIndex = Enumerable.Range(0, graph.Node.Count).Where(i => !IsAlias(graph.Node[i], aliases) && (keep is null || keep.Contains(i))).ToList();
        var nodes = originalIndex.Select(i => graph.Node[i]).ToList();
        var producers = new Dictionary<string, (int, int)>(StringComparer.Ordinal);
        for (var i = 0; i < nodes.Count; i++)
        {
            for (var j = 0; j < nodes[i].Output.Count; j++)
            {
                if (nodes[i].Output[j].Length > 0)
                {
                    producers[nodes[i].Output[j]] = (i, j);
                }
            }
        }

        var sites = new Dictionary<WeightSite, OnnxTensor>();
        var signatures = new List<string>(nodes.Count);
        var structuralIds = new List<string>(nodes.Count);
        var occurrences = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < nodes.Count; i++)
        {
            var node = nodes[i];
            var text = new StringBuilder().Append(node.Domain).Append("::").Append(node.OpType).Append('(');
            var structure = new StringBuilder().Append(node.Domain).Append("::").Append(node.OpType).Append('(');
            for (var s = 0; s < node.Input.Count; s++)
            {
                var name = node.Input[s];
                var resolved = aliases.TryGetValue(name, out var alias) ? alias : name;
                if (s > 0)
                {
                    text.Append(',');
                    structure.Append(',');
                }

                if (name.Length == 0)
                {
                    text.Append('-');
                    structure.Append('-');
                }
                else if (graphInputs.TryGetValue(name, out var inputIndex))
                {
                    text.Append("in").Append(inputIndex);
                    structure.Append("in").Append(inputIndex);
                }
                else if (initializers.TryGetValue(resolved, out var weight))
                {
                    sites[new WeightSite(i, s)] = weight;
                    text.Append('w');
                    structure.Append("w<").Append(weight.DataType).Append(">[").AppendJoin(',', weight.Shape).Append(']');
                }
                else if (producers.TryGetValue(name, out var producer))
                {
                    text.Append('n').Append(producer.Item1).Append('.').Append(producer.Item2);
                    structure.Append('(').Append(structuralIds[producer.Item1]).Append(").").Append(producer.Item2);
                }
                else
                {
                    text.Append("outer"); // a value from an enclosing scope or undefined: compared as such
                    structure.Append("outer");
                }
            }

            var tail = text.Length;
            text.Append(")->").Append(node.Output.Count).Append(' ');
            foreach (var attribute in node.Attribute.OrderBy(a => a.Name, StringComparer.Ordinal))
            {
                text.Append(attribute.Name).Append('=').Append(DescribeAttribute(attribute)).Append(';');
            }

            signatures.Add(text.ToString());
            structure.Append(text, tail, text.Length - tail);
            var hash = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(structure.ToString())), 0, 16);
            var occurrence = occurrences[hash] = occurrences.GetValueOrDefault(hash) + 1;
            structuralIds.Add($"{hash}#{occurrence}");
        }

        return new CanonicalGraph(model, nodes, originalIndex, signatures, structuralIds, sites, aliases, producers);
    }

    /// <summary>Node description for messages: its name (or index) and op type.</summary>
    public string Describe(int node) => Nodes[node].Name.Length > 0 ? $"{Nodes[node].Name} ({Nodes[node].OpType})" : $"#{node} ({Nodes[node].OpType})";

    private static bool IsAlias(NodeProto node, Dictionary<string, string> aliases) => OpRules.For(node).IsIdentity && node.Output.Count == 1 && aliases.ContainsKey(node.Output[0]);

    private static string DescribeAttribute(AttributeProto attribute)
    {
        // Tensor and graph attributes are compared by type and shape here; Constant values are weights (see Aligner).
        return attribute.Type switch
        {
            AttributeProto.Types.AttributeType.Tensor => $"tensor<{attribute.T?.DataType}>[{string.Join(",", attribute.T?.Dims ?? [])}]",
            AttributeProto.Types.AttributeType.Graph => $"graph<{attribute.G?.Node.Count}>",
            AttributeProto.Types.AttributeType.Graphs => $"graphs<{attribute.Graphs.Count}>",
            AttributeProto.Types.AttributeType.Tensors => $"tensors<{attribute.Tensors.Count}>",
            _ => attribute.Clone().ToString(),
        };
    }
}
