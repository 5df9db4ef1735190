using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.MLNet.Inference;

/// <summary>Edits of a model's graph interface, on an in-memory copy (inputs are never modified).</summary>
internal static class OnnxGraph
{
    /// <summary>
    /// The model with <paramref name="values"/> added to graph.output, so ONNX Runtime (and ML.NET, which reads only
    /// graph outputs) can fetch internal values such as a penultimate layer. Values already outputs are left as they are;
    /// a name that no node produces is an error naming the model.
    /// </summary>
    public static byte[] WithOutputs(byte[] model, IEnumerable<string> values, string modelName)
    {
        ArgumentNullException.ThrowIfNull(model);
        ModelProto proto;
        try
        {
            proto = ModelProto.Parser.ParseFrom(model);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OnnxFormatException(modelName, $"not a valid ONNX protobuf: {e.Message}");
        }

        var graph = proto.Graph ?? throw new OnnxFormatException(modelName, "the model has no graph");
        var produced = graph.Node.SelectMany(n => n.Output).Concat(graph.Input.Select(i => i.Name)).ToHashSet(StringComparer.Ordinal);
        bool changed = false;
        foreach (var name in values)
        {
            if (graph.Output.Any(o => o.Name == name))
            {
                continue;
            }

            if (!produced.Contains(name))
            {
                var candidates = graph.Node.SelectMany(n => n.Output).Where(o => o.Length > 0).TakeLast(8);
                throw new RecyclingException($"{modelName}: no value named '{name}' in the graph (outputs: {string.Join(", ", graph.Output.Select(o => o.Name))}; last values computed: {string.Join(", ", candidates)})");
            }

            var known = graph.ValueInfo.Concat(graph.Input).FirstOrDefault(v => v.Name == name);
            graph.Output.Add(known?.Clone() ?? new ValueInfoProto
            {
                Name = name,
                Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float } },
            });
            changed = true;
        }

        return changed ? proto.ToByteArray() : model;
    }
}
