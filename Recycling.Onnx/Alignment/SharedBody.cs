namespace Recycling.Onnx.Alignment;

/// <summary>How a part not in every model relates to the others.</summary>
internal enum UnsharedKind
{
    /// <summary>Nodes only this model has, reading body values it exposes as graph outputs (finetune --head new:K --at V writes V as an output).</summary>
    NewHead,

    /// <summary>Nodes that the models lacking them cut off: those models expose the body values these nodes read.</summary>
    CutOff,

    /// <summary>Neither: nodes not in every model.</summary>
    Other,
}

/// <summary>
/// Nodes of one model that are not in every model: the part after a cut that other models dropped, or nodes only this
/// model has (a new head).
/// </summary>
/// <param name="Model">The model's path.</param>
/// <param name="AbsentFrom">The models that lack these nodes (every other model: nodes only this one has).</param>
/// <param name="Nodes">Each node as "name (OpType)", in graph order.</param>
/// <param name="Weights">The initializers only these nodes read.</param>
/// <param name="Reads">The shared body's values these nodes read (where the models part).</param>
internal sealed record UnsharedPart(string Model, IReadOnlyList<string> AbsentFrom, IReadOnlyList<string> Nodes, IReadOnlyList<string> Weights, IReadOnlyList<string> Reads)
{
    public UnsharedKind Kind { get; init; }
}

/// <summary>
/// The body models share when one was cut at a value and given a new head (finetune --head new:K --at V): the nodes
/// whose whole ancestry is the same in every model (<see cref="CanonicalGraph.StructuralIds"/>), provided that in each
/// model every other node comes after them (a cut leaves a prefix of the graph and appends its head).
/// </summary>
internal sealed class SharedBody
{
    private SharedBody(IReadOnlyList<IReadOnlySet<int>> keep, IReadOnlyList<UnsharedPart> unshared)
    {
        Keep = keep;
        Unshared = unshared;
    }

    /// <summary>Per model, the graph node indices of the body.</summary>
    public IReadOnlyList<IReadOnlySet<int>> Keep { get; }

    public IReadOnlyList<UnsharedPart> Unshared { get; }

    /// <summary>The shared body of <paramref name="graphs"/> when they differ by cuts and heads only; null otherwise (different bases).</summary>
    public static SharedBody? Find(IReadOnlyList<CanonicalGraph> graphs)
    {
        var common = new HashSet<string>(graphs[0].StructuralIds, StringComparer.Ordinal);
        foreach (var g in graphs.Skip(1))
        {
            common.IntersectWith(g.StructuralIds);
        }

        if (common.Count == 0)
        {
            return null;
        }

        var keep = new List<IReadOnlySet<int>>();
        foreach (var g in graphs)
        {
            var body = Enumerable.Range(0, g.Nodes.Count).Where(i => common.Contains(g.StructuralIds[i])).ToList();
            if (body[^1] != body.Count - 1 || !g.Nodes.Take(body.Count).Any(n => n.Input.Count > 0))
            {
                return null; // a node outside the body comes before one inside it: not a cut
            }

            keep.Add(body.Select(i => g.OriginalIndex[i]).ToHashSet());
        }

        var outputs = graphs.ToDictionary(g => g.Model.Path, g => g.Model.Proto.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal);
        var unshared = new List<UnsharedPart>();
        for (var m = 0; m < graphs.Count; m++)
        {
            var g = graphs[m];
            var rest = Enumerable.Range(0, g.Nodes.Count).Where(i => !common.Contains(g.StructuralIds[i])).ToList();
            foreach (var part in rest.GroupBy(i => string.Join("\n", graphs.Where(o => !o.StructuralIds.Contains(g.StructuralIds[i])).Select(o => o.Model.Path))))
            {
                var nodes = part.ToList();
                var absent = graphs.Where(o => !o.StructuralIds.Contains(g.StructuralIds[nodes[0]])).Select(o => o.Model.Path).ToList();
                var produced = nodes.SelectMany(i => g.Nodes[i].Output).ToHashSet(StringComparer.Ordinal);
                var inputs = nodes.SelectMany(i => g.Nodes[i].Input).Where(v => v.Length > 0).Distinct().ToList();
                var bodyValues = Enumerable.Range(0, rest.Count == 0 ? g.Nodes.Count : rest[0]).SelectMany(i => g.Nodes[i].Output).ToHashSet(StringComparer.Ordinal);
                var onlyRead = nodes.SelectMany(i => g.Sites.Where(s => s.Key.Node == i).Select(s => s.Value.Name)).Distinct()
                    .Where(w => !g.Sites.Any(s => common.Contains(g.StructuralIds[s.Key.Node]) && s.Value.Name == w)).ToList();
                var reads = inputs.Where(v => !produced.Contains(v) && bodyValues.Contains(v)).ToList();
                var kind = reads.Count > 0 && absent.Count == graphs.Count - 1 && reads.All(outputs[g.Model.Path].Contains) ? UnsharedKind.NewHead
                    : reads.Count > 0 && absent.All(a => reads.Any(outputs[a].Contains)) ? UnsharedKind.CutOff
                    : UnsharedKind.Other;
                unshared.Add(new UnsharedPart(g.Model.Path, absent, [.. nodes.Select(g.Describe)], onlyRead, reads) { Kind = kind });
            }
        }

        return new SharedBody(keep, unshared);
    }
}
