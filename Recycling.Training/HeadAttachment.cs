using System.Runtime.InteropServices;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;

namespace Recycling.Training;

/// <summary>A K-way linear head on the value <see cref="At"/> flattened per sample: logits = flatten(At) · Wᵀ + b.</summary>
/// <param name="Weight">Row-major [Classes, Features], as PyTorch's nn.Linear stores it.</param>
internal sealed record LinearHead(string At, int Classes, int Features, float[] Weight, float[] Bias)
{
    public void Validate(string modelPath)
    {
        if (Classes < 1 || Features < 1 || Weight.Length != (long)Classes * Features || Bias.Length != Classes)
        {
            throw new RecyclingException($"{MessageText.Path(modelPath)}: a head of {Classes} classes on {Features} features needs {(long)Classes * Features} weights and {Classes} biases, got {Weight.Length} and {Bias.Length}");
        }
    }
}

/// <summary>
/// Cuts a model's graph at a value and attaches a new linear head (Flatten + Gemm, initializers "head.weight" and
/// "head.bias", output "logits"), and makes a fixed batch dimension dynamic; writes the result through the shared
/// writer. The nodes only the old outputs needed are removed with their initializers; every kept node, name and
/// value is unchanged, so the body still aligns with its parent. The written outputs are "logits" and the cut value.
/// </summary>
internal static class HeadAttachment
{
    public const string Logits = "logits";

    /// <summary>The value a head reads when none is named: the output "features", else the only output.</summary>
    public static string DefaultCut(OnnxModel model)
    {
        var outputs = model.Proto.Graph.Output.Select(o => o.Name).ToList();
        return outputs.Contains("features") ? "features"
            : outputs.Count == 1 ? outputs[0]
            : throw new RecyclingException($"{MessageText.Path(model.Path)}: {outputs.Count} outputs and none named 'features'; name the value the head reads with --at ({string.Join(", ", outputs)})");
    }

    /// <summary>Throws unless <paramref name="at"/> is a value a head can read: a node output or a graph input that is not an initializer.</summary>
    public static void CheckCut(OnnxModel model, string at)
    {
        var graph = model.Proto.Graph;
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var produced = graph.Node.Any(n => n.Output.Contains(at)) || graph.Input.Any(i => i.Name == at && !initializers.Contains(i.Name));
        if (!produced)
        {
            var hint = initializers.Contains(at) ? "it is an initializer (a weight), not a computed value" : "no node computes it";
            throw new RecyclingException($"{MessageText.Path(model.Path)}: --at '{at}': {hint} (graph outputs: {string.Join(", ", graph.Output.Select(o => o.Name))})");
        }

        var opset = model.Opsets.Where(o => o.Domain.Length == 0 || o.Domain == "ai.onnx").Select(o => o.Version).DefaultIfEmpty(0).Max();
        if (opset < 7)
        {
            throw new RecyclingException($"{MessageText.Path(model.Path)}: opset {opset}: a new head needs opset 7 or later (Gemm with broadcast bias)");
        }
    }

    /// <summary>
    /// Writes <paramref name="model"/> with <paramref name="head"/> attached (null: the graph unchanged but for a
    /// dynamic batch axis) to <paramref name="outputPath"/>, atomically, never over one of the model's files.
    /// </summary>
    /// <param name="sampleShape">The per-sample shape the single input is fed with when it differs from the declared one
    /// (images resized for training): the input declares it, and the inner shapes exported for the old size are dropped.</param>
    /// <returns>The names given to the head's weight and bias initializers ("head.weight", "head.bias" unless taken); null without a head.</returns>
    public static (string Weight, string Bias)? Write(OnnxModel model, string outputPath, LinearHead? head, OnnxWriteOptions? options = null, IReadOnlyList<long>? sampleShape = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new OnnxWriteOptions();
        var structure = model.Proto.Clone();
        var sites = TensorCollector.Collect(structure);
        var sources = new Dictionary<TensorProto, OnnxTensor>(ReferenceEqualityComparer.Instance);
        for (var i = 0; i < sites.Count; i++)
        {
            sources[sites[i].Proto] = model.Tensors[i];
        }

        var graph = structure.Graph;
        var batchReshapes = DynamicBatch.Apply(graph, proto => sources.GetValueOrDefault(proto) is { DataType: OnnxDataType.Int64, ElementCount: > 0 } t
            ? BitConverter.ToInt64(t.ReadRawBytes(), 0) : null);
        if (sampleShape is not null)
        {
            SetSampleShape(model.Path, graph, sampleShape);
        }

        var extra = new List<WriteItem>();
        if (head is not null)
        {
            head.Validate(model.Path);
            CheckCut(model, head.At);
            CheckFeatures(model.Path, graph, head);
            extra.AddRange(Attach(model.Path, graph, head));
        }

        (string, string)? names = extra.Count == 0 ? null : (extra[0].Target.Name, extra[1].Target.Name);

        var kept = TensorCollector.Collect(structure).Select(s => s.Proto).ToHashSet(ReferenceEqualityComparer.Instance);
        var items = new List<WriteItem>();
        foreach (var site in sites.Where(s => kept.Contains(s.Proto)))
        {
            var source = sources[site.Proto];
            items.Add(new WriteItem(site.Proto, site.Kind, source, batchReshapes.Contains(site.Proto) ? () => CopyBatch(source) : null));
        }

        items.AddRange(extra);
        ModelWriter.Write(structure, items, outputPath, options, model.Files);
        return names;
    }

    /// <summary>Rewrites <paramref name="graph"/>: prunes it to what <see cref="LinearHead.At"/> needs and adds the head; returns the head's tensors to write.</summary>
    private static List<WriteItem> Attach(string modelPath, GraphProto graph, LinearHead head)
    {
        // Keep the nodes the cut value depends on (graph order kept).
        var needed = new HashSet<string>(StringComparer.Ordinal) { head.At };
        var keep = new bool[graph.Node.Count];
        for (var index = graph.Node.Count - 1; index >= 0; index--)
        {
            var node = graph.Node[index];
            if (node.Output.Any(needed.Contains))
            {
                keep[index] = true;
                needed.UnionWith(node.Input.Where(i => i.Length > 0));
            }
        }

        var nodes = graph.Node.Where((_, index) => keep[index]).ToList();
        graph.Node.Clear();
        graph.Node.AddRange(nodes);

        var used = nodes.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
        var dropped = graph.Initializer.Where(i => !used.Contains(i.Name)).Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        RemoveWhere(graph.Initializer, i => dropped.Contains(i.Name));
        RemoveWhere(graph.Input, i => dropped.Contains(i.Name));

        var taken = nodes.SelectMany(n => n.Output.Concat(n.Input)).Concat(graph.Input.Select(i => i.Name)).Concat(graph.Initializer.Select(i => i.Name)).Concat(nodes.Select(n => n.Name)).ToHashSet(StringComparer.Ordinal);
        if (taken.Contains(Logits))
        {
            throw new RecyclingException($"{MessageText.Path(modelPath)}: the value '{Logits}' feeds --at '{head.At}'; cut at '{Logits}' itself or before it");
        }

        string Fresh(string name)
        {
            var candidate = name;
            for (var k = 1; taken.Contains(candidate); k++)
            {
                candidate = $"{name}.{k}";
            }

            taken.Add(candidate);
            return candidate;
        }

        // A value declared [batch, features] is read as it is (the exporters' own heads do so, and `recycle align` then
        // sees the parent's graph); any other is flattened per sample first.
        var known = graph.Output.Concat(graph.ValueInfo).GroupBy(v => v.Name).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var flat = known.TryGetValue(head.At, out var declared) && declared.Type?.TensorType?.Shape?.Dim.Count == 2 ? head.At : Fresh("head.flatten");
        var weight = new TensorProto { Name = Fresh("head.weight"), DataType = (int)OnnxDataType.Float, Dims = { head.Classes, head.Features } };
        var bias = new TensorProto { Name = Fresh("head.bias"), DataType = (int)OnnxDataType.Float, Dims = { head.Classes } };
        graph.Initializer.Add(weight);
        graph.Initializer.Add(bias);
        if (flat != head.At)
        {
            graph.Node.Add(new NodeProto
            {
                Name = Fresh("head/Flatten"), OpType = "Flatten", Input = { head.At }, Output = { flat },
                Attribute = { new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 1 } },
            });
        }

        graph.Node.Add(new NodeProto
        {
            Name = Fresh("head/Gemm"), OpType = "Gemm", Input = { flat, weight.Name, bias.Name }, Output = { Logits },
            // Attributes as PyTorch's exporter writes them, so a replaced head reads as the parent's to `recycle align`.
            Attribute =
            {
                new AttributeProto { Name = "alpha", Type = AttributeProto.Types.AttributeType.Float, F = 1 },
                new AttributeProto { Name = "beta", Type = AttributeProto.Types.AttributeType.Float, F = 1 },
                new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 },
            },
        });

        // Outputs: logits, then the cut value (with its declared type when the model gave one).
        var isInput = graph.Input.Any(i => i.Name == head.At);
        var cutInfo = known.TryGetValue(head.At, out var info) ? info.Clone() : new ValueInfoProto { Name = head.At };
        graph.Output.Clear();
        graph.Output.Add(new ValueInfoProto
        {
            Name = Logits,
            Type = new TypeProto
            {
                TensorType = new TypeProto.Types.Tensor
                {
                    ElemType = (int)OnnxDataType.Float,
                    Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = DynamicBatch.AxisName }, new TensorShapeProto.Types.Dimension { DimValue = head.Classes } } },
                },
            },
        });
        if (!isInput)
        {
            cutInfo.Type ??= new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float } };
            graph.Output.Add(cutInfo);
        }

        var values = nodes.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
        RemoveWhere(graph.ValueInfo, v => !values.Contains(v.Name) || v.Name == head.At);

        return
        [
            new WriteItem(weight, TensorKind.Initializer, null, () => new TensorReplacement(OnnxDataType.Float, MemoryMarshal.AsBytes(head.Weight.AsSpan()).ToArray())),
            new WriteItem(bias, TensorKind.Initializer, null, () => new TensorReplacement(OnnxDataType.Float, MemoryMarshal.AsBytes(head.Bias.AsSpan()).ToArray())),
        ];
    }

    /// <summary>When the cut value's shape is declared, its per-sample size must be the head's feature count.</summary>
    private static void CheckFeatures(string modelPath, GraphProto graph, LinearHead head)
    {
        var info = graph.Output.Concat(graph.ValueInfo).Concat(graph.Input).FirstOrDefault(v => v.Name == head.At);
        var dims = info?.Type?.TensorType?.Shape?.Dim;
        if (dims is not { Count: >= 1 } || dims.Skip(1).Any(d => d.ValueCase != TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue))
        {
            return;
        }

        var features = dims.Skip(1).Aggregate(1L, (p, d) => p * d.DimValue);
        if (features != head.Features)
        {
            throw new RecyclingException($"{MessageText.Path(modelPath)}: '{head.At}' has {features} values per sample, the head {head.Features} features");
        }
    }

    /// <summary>The single input declares [batch, ..sampleShape]; value_info and the outputs' non-batch sizes, exported for another input size, are dropped.</summary>
    private static void SetSampleShape(string modelPath, GraphProto graph, IReadOnlyList<long> sampleShape)
    {
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var inputs = graph.Input.Where(i => !initializers.Contains(i.Name)).ToList();
        if (inputs.Count != 1 || inputs[0].Type?.TensorType is not { } tensorType)
        {
            throw new RecyclingException($"{MessageText.Path(modelPath)}: a new input size needs one tensor input, the graph has {inputs.Count}");
        }

        tensorType.Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = DynamicBatch.AxisName } } };
        tensorType.Shape.Dim.AddRange(sampleShape.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        graph.ValueInfo.Clear();
        foreach (var output in graph.Output.Where(o => o.Type?.TensorType?.Shape is not null))
        {
            var dims = output.Type.TensorType.Shape.Dim;
            for (var d = 1; d < dims.Count; d++)
            {
                dims[d] = new TensorShapeProto.Types.Dimension();
            }
        }
    }

    /// <summary>A Reshape shape whose first element was the fixed batch size, now 0 (copy the data's batch).</summary>
    private static TensorReplacement CopyBatch(OnnxTensor shape)
    {
        var bytes = shape.ReadRawBytes();
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), 0L);
        return new TensorReplacement(OnnxDataType.Int64, bytes);
    }

    private static void RemoveWhere<T>(Google.Protobuf.Collections.RepeatedField<T> field, Func<T, bool> drop)
    {
        var keep = field.Where(x => !drop(x)).ToList();
        field.Clear();
        field.AddRange(keep);
    }
}
