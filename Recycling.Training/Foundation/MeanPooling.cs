using System.Runtime.InteropServices;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;

namespace Recycling.Training.Foundation;

/// <summary>
/// Adds sentence-transformers' mean pooling to a BERT-style export: the output <see cref="Output"/> [batch, width] =
/// Σₜ mask·hiddenₜ / max(Σₜ mask, 1e-9) over the token axis of <c>last_hidden_state</c> [batch, tokens, width] with
/// the <c>attention_mask</c> input. all-MiniLM-L6-v2's export also has a pooled output ('924'), but that is BERT's
/// pooler (Gemm + Tanh on the [CLS] token), which sentence-transformers never trained or used: the sentence
/// embedding is this mean (which the model then L2-normalises; a linear head on standardised features does not need that).
/// Every existing node, name and tensor is kept, so a fine-tuning still aligns with its parent.
/// </summary>
internal static class MeanPooling
{
    public const string Output = "sentence_embedding";

    public static void Write(OnnxModel model, string outputPath, string hidden = "last_hidden_state", string mask = "attention_mask")
    {
        ArgumentNullException.ThrowIfNull(model);
        var structure = model.Proto.Clone();
        var graph = structure.Graph;
        var hiddenInfo = graph.Output.FirstOrDefault(o => o.Name == hidden)
            ?? throw new RecyclingException($"{MessageText.Path(model.Path)}: no output '{hidden}' to mean-pool (outputs: {string.Join(", ", graph.Output.Select(o => o.Name))})");
        if (!graph.Input.Any(i => i.Name == mask))
        {
            throw new RecyclingException($"{MessageText.Path(model.Path)}: no input '{mask}' to mean-pool with");
        }

        var taken = graph.Node.SelectMany(n => n.Output.Concat(n.Input)).Concat(graph.Input.Select(i => i.Name)).Concat(graph.Initializer.Select(i => i.Name))
            .ToHashSet(StringComparer.Ordinal);
        if (taken.Contains(Output) || taken.Any(n => n.StartsWith("pool.", StringComparison.Ordinal)))
        {
            throw new RecyclingException($"{MessageText.Path(model.Path)}: already has a value '{Output}' or 'pool.*'");
        }

        var dims = hiddenInfo.Type?.TensorType?.Shape?.Dim;
        var width = dims is { Count: 3 } && dims[2].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? dims[2].DimValue : (long?)null;

        var sites = TensorCollector.Collect(structure);
        var items = new List<WriteItem>();
        for (var i = 0; i < sites.Count; i++)
        {
            items.Add(new WriteItem(sites[i].Proto, sites[i].Kind, model.Tensors[i], null));
        }

        items.Add(Constant(graph, "pool.last_axis", OnnxDataType.Int64, MemoryMarshal.AsBytes<long>([-1]).ToArray(), 1));
        items.Add(Constant(graph, "pool.token_axis", OnnxDataType.Int64, MemoryMarshal.AsBytes<long>([1]).ToArray(), 1));
        items.Add(Constant(graph, "pool.min_count", OnnxDataType.Float, MemoryMarshal.AsBytes<float>([1e-9f]).ToArray()));

        var keep = new AttributeProto { Name = "keepdims", Type = AttributeProto.Types.AttributeType.Int, I = 0 };
        graph.Node.Add(new NodeProto { Name = "pool/Cast", OpType = "Cast", Input = { mask }, Output = { "pool.mask" }, Attribute = { new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (int)OnnxDataType.Float } } });
        graph.Node.Add(new NodeProto { Name = "pool/Unsqueeze", OpType = "Unsqueeze", Input = { "pool.mask", "pool.last_axis" }, Output = { "pool.mask3" } });
        graph.Node.Add(new NodeProto { Name = "pool/Mul", OpType = "Mul", Input = { hidden, "pool.mask3" }, Output = { "pool.masked" } });
        graph.Node.Add(new NodeProto { Name = "pool/Sum", OpType = "ReduceSum", Input = { "pool.masked", "pool.token_axis" }, Output = { "pool.sum" }, Attribute = { keep } });
        graph.Node.Add(new NodeProto { Name = "pool/Count", OpType = "ReduceSum", Input = { "pool.mask3", "pool.token_axis" }, Output = { "pool.count" }, Attribute = { keep.Clone() } });
        graph.Node.Add(new NodeProto { Name = "pool/Clamp", OpType = "Max", Input = { "pool.count", "pool.min_count" }, Output = { "pool.count_clamped" } });
        graph.Node.Add(new NodeProto { Name = "pool/Div", OpType = "Div", Input = { "pool.sum", "pool.count_clamped" }, Output = { Output } });

        var shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "batch" } } };
        shape.Dim.Add(width is { } w ? new TensorShapeProto.Types.Dimension { DimValue = w } : new TensorShapeProto.Types.Dimension { DimParam = "width" });
        graph.Output.Add(new ValueInfoProto { Name = Output, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float, Shape = shape } } });
        ModelWriter.Write(structure, items, outputPath, new OnnxWriteOptions(), model.Files);
    }

    private static WriteItem Constant(GraphProto graph, string name, OnnxDataType type, byte[] bytes, params long[] dims)
    {
        var proto = new TensorProto { Name = name, DataType = (int)type };
        proto.Dims.AddRange(dims);
        graph.Initializer.Add(proto);
        return new WriteItem(proto, TensorKind.Initializer, null, () => new TensorReplacement(type, bytes));
    }
}
