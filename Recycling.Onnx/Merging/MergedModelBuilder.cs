using Recycling.Onnx.Alignment;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;

namespace Recycling.Onnx.Merging;

/// <summary>
/// Builds the merged model's structure from the plan's template: every parameter gets its own initializer (a tensor
/// the template shares between parameters through Identity deduplication is split, and its readers rewired), heads
/// are dropped when asked, and each tensor is paired with where its values come from.
/// </summary>
internal sealed class MergedModelBuilder
{
    private readonly AlignmentPlan _plan;

    public MergedModelBuilder(AlignmentPlan plan)
    {
        _plan = plan;
        Structure = plan.Template.Proto.Clone();
    }

    public ModelProto Structure { get; }

    /// <param name="valuesFor">For a parameter, a producer of its merged values given the template's element type; null keeps the template's tensor.</param>
    /// <param name="storageType">When set, merged float initializers are stored in this type and a Cast back to the
    /// template's type is inserted before their readers, so the graph's arithmetic is unchanged.</param>
    public List<WriteItem> Build(Func<AlignedParameter, Func<OnnxDataType, TensorReplacement>?> valuesFor, OnnxDataType? storageType = null)
    {
        var template = _plan.Template;
        var graph = CanonicalGraph.Build(template);
        var cloneSites = TensorCollector.Collect(Structure);
        var sourceOf = new Dictionary<TensorProto, OnnxTensor>(ReferenceEqualityComparer.Instance);
        var cloneOf = new Dictionary<OnnxTensor, TensorProto>(ReferenceEqualityComparer.Instance);
        for (var i = 0; i < cloneSites.Count; i++)
        {
            sourceOf[cloneSites[i].Proto] = template.Tensors[i];
            cloneOf[template.Tensors[i]] = cloneSites[i].Proto;
        }

        var producers = new Dictionary<TensorProto, Func<TensorReplacement?>>(ReferenceEqualityComparer.Instance);
        var claimed = new HashSet<OnnxTensor>(ReferenceEqualityComparer.Instance);
        var names = Structure.Graph.Initializer.Select(t => t.Name).Concat(Structure.Graph.Node.SelectMany(n => n.Output)).ToHashSet(StringComparer.Ordinal);
        foreach (var p in _plan.Parameters)
        {
            var templateTensor = graph.Sites[p.Sites[0]];
            var proto = cloneOf[templateTensor];
            if (!claimed.Add(templateTensor))
            {
                // The template reads one tensor for several parameters: give this one its own initializer.
                proto = proto.Clone();
                proto.Name = UniqueName($"{templateTensor.Name}.{p.Key.Replace(':', '_')}", names);
                Structure.Graph.Initializer.Add(proto);
                sourceOf[proto] = templateTensor;
                foreach (var site in p.Sites)
                {
                    Structure.Graph.Node[graph.OriginalIndex[site.Node]].Input[site.Slot] = proto.Name;
                }
            }

            var produce = valuesFor(p);
            if (produce is not null)
            {
                var type = templateTensor.DataType;
                producers[proto] = () => produce(type);
                if (storageType is not null && storageType != type && templateTensor.Kind == TensorKind.Initializer)
                {
                    StoreAs(proto, storageType.Value, type, names);
                }
            }
        }

        if (_plan.Heads == HeadPolicy.Drop)
        {
            DropHeads(graph);
        }

        RemoveUnusedAliasesAndInitializers();
        var items = new List<WriteItem>();
        foreach (var site in TensorCollector.Collect(Structure))
        {
            var source = sourceOf.GetValueOrDefault(site.Proto);
            var produce = producers.GetValueOrDefault(site.Proto);
            items.Add(new WriteItem(site.Proto, site.Kind, source, produce));
        }

        return items;
    }

    /// <summary>Renames the initializer and reads it through a Cast to its original type, under its original name.</summary>
    private void StoreAs(TensorProto proto, OnnxDataType storage, OnnxDataType compute, HashSet<string> names)
    {
        var original = proto.Name;
        proto.Name = UniqueName($"{original}.{storage.ToString().ToLowerInvariant()}", names);
        var cast = new NodeProto { OpType = "Cast", Name = UniqueName($"{original}.cast", names) };
        cast.Input.Add(proto.Name);
        cast.Output.Add(original);
        cast.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)compute });
        Structure.Graph.Node.Insert(0, cast);
        foreach (var input in Structure.Graph.Input.Where(i => i.Name == original))
        {
            input.Name = proto.Name;
        }
    }

    /// <summary>Removes every node that depends on a head parameter; outputs that disappear are replaced by the value the head read.</summary>
    private void DropHeads(CanonicalGraph graph)
    {
        var nodes = Structure.Graph.Node;
        var removed = new HashSet<int>();
        var headNodes = _plan.Parameters.Where(p => p.IsHead).SelectMany(p => p.Sites).Select(s => graph.OriginalIndex[s.Node]).Distinct().Order().ToList();
        var features = new List<string>();
        var initializerNames = Structure.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var dead = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < nodes.Count; i++)
        {
            var isHead = headNodes.Contains(i);
            if (isHead || nodes[i].Input.Any(dead.Contains))
            {
                if (isHead && !nodes[i].Input.Any(dead.Contains))
                {
                    features.AddRange(nodes[i].Input.Where(n => n.Length > 0 && !initializerNames.Contains(n) && !graph.Aliases.ContainsKey(n)));
                }

                removed.Add(i);
                foreach (var output in nodes[i].Output)
                {
                    dead.Add(output);
                }
            }
        }

        for (var i = nodes.Count - 1; i >= 0; i--)
        {
            if (removed.Contains(i))
            {
                nodes.RemoveAt(i);
            }
        }

        var outputs = Structure.Graph.Output;
        for (var i = outputs.Count - 1; i >= 0; i--)
        {
            if (dead.Contains(outputs[i].Name))
            {
                outputs.RemoveAt(i);
            }
        }

        if (outputs.Count == 0)
        {
            foreach (var name in features.Distinct())
            {
                var info = Structure.Graph.ValueInfo.FirstOrDefault(v => v.Name == name)?.Clone()
                    ?? new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float } } };
                outputs.Add(info);
            }
        }

        if (outputs.Count == 0)
        {
            throw new RecyclingException($"{_plan.Template.Path}: dropping the heads leaves the model without outputs");
        }
    }

    /// <summary>Drops Identity alias nodes and initializers nothing reads any more (after rewiring or dropping heads).</summary>
    private void RemoveUnusedAliasesAndInitializers()
    {
        bool changed;
        do
        {
            var used = UsedNames(Structure.Graph);
            changed = false;
            var nodes = Structure.Graph.Node;
            for (var i = nodes.Count - 1; i >= 0; i--)
            {
                if (Alignment.OpRules.For(nodes[i]).IsIdentity && nodes[i].Output.All(o => !used.Contains(o)))
                {
                    nodes.RemoveAt(i);
                    changed = true;
                }
            }

            var initializers = Structure.Graph.Initializer;
            for (var i = initializers.Count - 1; i >= 0; i--)
            {
                if (!used.Contains(initializers[i].Name))
                {
                    initializers.RemoveAt(i);
                    changed = true;
                }
            }
        }
        while (changed);

        var remaining = UsedNames(Structure.Graph);
        var inputs = Structure.Graph.Input;
        for (var i = inputs.Count - 1; i >= 0; i--)
        {
            if (!remaining.Contains(inputs[i].Name) && Structure.Graph.Initializer.All(t => t.Name != inputs[i].Name) && _plan.Template.Proto.Graph.Initializer.Any(t => t.Name == inputs[i].Name))
            {
                inputs.RemoveAt(i); // an initializer listed as an input (IR < 4 style) that was dropped
            }
        }
    }

    /// <summary>Names read by any node (subgraphs included, since they may read outer values) or produced as graph outputs.</summary>
    private static HashSet<string> UsedNames(GraphProto graph)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        void Visit(GraphProto g)
        {
            foreach (var node in g.Node)
            {
                used.UnionWith(node.Input);
                foreach (var attribute in node.Attribute)
                {
                    if (attribute.G is not null)
                    {
                        Visit(attribute.G);
                    }

                    foreach (var sub in attribute.Graphs)
                    {
                        Visit(sub);
                    }
                }
            }

            used.UnionWith(g.Output.Select(o => o.Name));
        }

        Visit(graph);
        return used;
    }

    private static string UniqueName(string wanted, HashSet<string> names)
    {
        var name = wanted;
        for (var k = 2; !names.Add(name); k++)
        {
            name = $"{wanted}_{k}";
        }

        return name;
    }
}
