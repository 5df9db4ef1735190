using System.Text;

namespace Recycling.Onnx.Alignment;

/// <summary>What to do with tensors whose shapes differ across the inputs (task heads with different label counts).</summary>
public enum HeadPolicy
{
    /// <summary>Refuse to merge (default).</summary>
    Error,

    /// <summary>Write a body-only model whose output is the value the head reads (the penultimate features).</summary>
    Drop,

    /// <summary>Keep the first model's head.</summary>
    First,

    /// <summary>Keep the base model's head.</summary>
    Base,
}

/// <summary>How the tensors of one parameter were recognised across the inputs.</summary>
public enum MatchKind
{
    /// <summary>Same initializer name in every input, at the same place in the graph.</summary>
    Name,

    /// <summary>Different names (e.g. shifted onnx::MatMul_&lt;n&gt;), matched by the role the weight plays in the graph.</summary>
    Role,
}

/// <summary>One parameter of the shared architecture: the weight read at a set of graph sites, with its tensor in each input.</summary>
public sealed class AlignedParameter
{
    internal AlignedParameter(string key, IReadOnlyList<WeightSite> sites, IReadOnlyList<OnnxTensor> tensors, OnnxTensor? baseTensor, string consumer)
    {
        Key = key;
        Sites = sites;
        Tensors = tensors;
        Base = baseTensor;
        Consumer = consumer;
    }

    /// <summary>Stable canonical key: the first site that reads it ("n12:1" = canonical node 12, input slot 1) and its op.</summary>
    public string Key { get; }

    /// <summary>The parameter's tensor in each fine-tuned input, in input order.</summary>
    public IReadOnlyList<OnnxTensor> Tensors { get; }

    /// <summary>The parameter's tensor in the base model, when one was given.</summary>
    public OnnxTensor? Base { get; }

    /// <summary>Op type and input slot of the first consumer, e.g. "MatMul input 1".</summary>
    public string Consumer { get; }

    public MatchKind Match { get; internal set; }

    /// <summary>Inputs in which this parameter's tensor is shared with another parameter (Identity deduplication).</summary>
    public IReadOnlyList<string> AliasedIn { get; internal set; } = [];

    /// <summary>Key of the parameter this one is a copy of (tied weights), or null.</summary>
    public string? TiedTo { get; internal set; }

    /// <summary>True when the tie is a transposed copy (e.g. an output projection folded from an embedding).</summary>
    public bool TiedTransposed { get; internal set; }

    /// <summary>Why the exporter's transformation of this weight matters for averaging, or null.</summary>
    public string? Transformed { get; internal set; }

    /// <summary>The exporter's transformation of this weight (<see cref="Transformed"/> says it in words).</summary>
    public ParameterTransform Transform { get; internal set; }

    /// <summary>Shapes differ across inputs: a task head handled by the <see cref="HeadPolicy"/>.</summary>
    public bool IsHead { get; internal set; }

    /// <summary>BatchNormalization running mean or variance: merged by averaging, never extrapolated.</summary>
    public bool IsBatchNormStatistic { get; internal set; }

    public bool IsFloat => OnnxDataTypes.IsFloatingPoint(Tensors[0].DataType);

    internal IReadOnlyList<WeightSite> Sites { get; }

    internal IEnumerable<OnnxTensor> AllTensors => Base is null ? Tensors : Tensors.Append(Base);
}

/// <summary>The result of aligning fine-tuned exports of one base: every parameter, how it was matched, and the template to write.</summary>
public sealed class AlignmentPlan
{
    internal AlignmentPlan(IReadOnlyList<OnnxModel> inputs, OnnxModel? baseModel, IReadOnlyList<AlignedParameter> parameters, OnnxModel template, HeadPolicy heads)
    {
        Inputs = inputs;
        Base = baseModel;
        Parameters = parameters;
        Template = template;
        Heads = heads;
    }

    public IReadOnlyList<OnnxModel> Inputs { get; }

    public OnnxModel? Base { get; }

    public IReadOnlyList<AlignedParameter> Parameters { get; }

    /// <summary>The input whose graph the merged model is written from.</summary>
    public OnnxModel Template { get; }

    public HeadPolicy Heads { get; }

    /// <summary>Nodes not in every model (a cut with a new head); the parameters are those of the shared body. Empty when the graphs are identical.</summary>
    internal IReadOnlyList<UnsharedPart> Unshared { get; init; } = [];

    public string ToText()
    {
        var text = new StringBuilder();
        text.AppendLine($"inputs: {string.Join(", ", Inputs.Select(m => Path.GetFileName(m.Path)))}{(Base is null ? "" : $"; base: {Path.GetFileName(Base.Path)}")}");
        if (Unshared.Count == 0)
        {
            text.AppendLine($"graphs: identical up to weights ({Parameters.Count} parameters); template: {Path.GetFileName(Template.Path)}");
        }
        else
        {
            text.AppendLine($"graphs: a shared body ({Parameters.Count} parameters, aligned below), then parts not in every model (not merged):");
            foreach (var part in Unshared)
            {
                text.AppendLine($"  {Path.GetFileName(part.Model)}: {Describe(part)}");
            }
        }

        var counts = Summary();
        text.AppendLine(string.Join(", ", counts.Select(c => $"{c.Key}: {c.Value}")));
        foreach (var p in Parameters)
        {
            var names = p.AllTensors.Select(t => t.Name).Distinct().ToList();
            text.Append($"  {Category(p),-11} {p.Key,-10} {string.Join(" | ", names)}  {p.Tensors[0].DataType} [{string.Join(",", p.Tensors[0].Shape)}]");
            text.Append($"  <- {Reason(p)}");
            text.AppendLine();
        }

        return text.ToString();
    }

    public string ToJson()
    {
        var document = new
        {
            inputs = Inputs.Select(m => m.Path).ToArray(),
            @base = Base?.Path,
            template = Template.Path,
            heads = Heads.ToString().ToLowerInvariant(),
            summary = Summary(),
            unshared = Unshared.Select(u => new
            {
                model = u.Model,
                kind = u.Kind switch { UnsharedKind.NewHead => "new-head", UnsharedKind.CutOff => "cut-off", _ => "other" },
                absentFrom = u.AbsentFrom,
                reads = u.Reads,
                nodes = u.Nodes,
                weights = u.Weights,
                description = Describe(u),
            }).ToArray(),
            parameters = Parameters.Select(p => new
            {
                key = p.Key,
                category = Category(p),
                names = p.Tensors.Select(t => t.Name).ToArray(),
                baseName = p.Base?.Name,
                dataType = p.Tensors[0].DataType.ToString(),
                shapes = p.AllTensors.Select(t => t.Shape.ToArray()).ToArray(),
                consumer = p.Consumer,
                match = p.Match.ToString().ToLowerInvariant(),
                aliasedIn = p.AliasedIn,
                tiedTo = p.TiedTo,
                tiedTransposed = p.TiedTransposed,
                transformed = p.Transformed,
                head = p.IsHead,
                batchNormStatistic = p.IsBatchNormStatistic,
                reason = Reason(p),
            }).ToArray(),
        };
        return JsonStyle.Serialize(document);
    }

    private static string Describe(UnsharedPart part)
    {
        var after = part.Reads.Count > 0 ? $" after '{string.Join("', '", part.Reads)}'" : "";
        var others = string.Join(", ", part.AbsentFrom.Select(p => Path.GetFileName(p)));
        var what = part.Kind switch
        {
            UnsharedKind.NewHead => $"a new head of {part.Nodes.Count} node(s){after}, not in {others}",
            UnsharedKind.CutOff => $"{part.Nodes.Count} node(s){after} that {others} cut off",
            _ => $"{part.Nodes.Count} node(s){after} not in {others}",
        };
        var weights = part.Weights.Count == 0 ? "no weights" : $"weights {string.Join(", ", part.Weights.Take(8))}{(part.Weights.Count > 8 ? $" and {part.Weights.Count - 8} more" : "")}";
        return $"{what}: {string.Join(", ", part.Nodes.Take(6))}{(part.Nodes.Count > 6 ? ", ..." : "")}; {weights}";
    }

    internal Dictionary<string, int> Summary()
    {
        var counts = new Dictionary<string, int>();
        foreach (var p in Parameters)
        {
            counts[Category(p)] = counts.GetValueOrDefault(Category(p)) + 1;
        }

        return counts;
    }

    internal static string Category(AlignedParameter p) =>
        p.IsHead ? "head"
        : p.TiedTo is not null ? "tied"
        : p.AliasedIn.Count > 0 ? "aliased"
        : p.Transformed is not null ? "transformed"
        : !p.IsFloat ? "constant"
        : p.Match == MatchKind.Role ? "renamed"
        : "matched";

    internal static string Reason(AlignedParameter p)
    {
        var reasons = new List<string> { p.Match == MatchKind.Name ? $"same name, read by {p.Consumer}" : $"matched by role: read by {p.Consumer}" };
        if (p.AliasedIn.Count > 0)
        {
            reasons.Add($"shared with another parameter through Identity deduplication in {string.Join(", ", p.AliasedIn)}; it gets its own merged value");
        }

        if (p.TiedTo is not null)
        {
            reasons.Add($"{(p.TiedTransposed ? "transposed copy" : "copy")} of {p.TiedTo} in every input (values checked): merged once, written to both");
        }

        if (p.Transformed is not null)
        {
            reasons.Add(p.Transformed);
        }

        if (p.IsHead)
        {
            reasons.Add($"shapes differ across inputs: {string.Join(" / ", p.AllTensors.Select(t => $"[{string.Join(",", t.Shape)}]").Distinct())}");
        }

        if (p.IsBatchNormStatistic)
        {
            reasons.Add("BatchNorm running statistic: averaged, never extrapolated (variances stay non-negative)");
        }

        if (!p.IsFloat)
        {
            reasons.Add($"{p.Tensors[0].DataType} tensor: never averaged, equal in every input");
        }

        return string.Join("; ", reasons);
    }
}
