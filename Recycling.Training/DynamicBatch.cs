using Recycling.Onnx.Proto;

namespace Recycling.Training;

/// <summary>
/// Rewrites a graph exported with a fixed batch size (CNTK's ResNet18: input [1,3,224,224]) so that it runs with
/// any batch: the batch axis of inputs, outputs and value_info becomes <c>dim_param "batch"</c>, and Reshape shape
/// constants that bake the batch size into the first element of data computed from the inputs copy it instead (0).
/// </summary>
internal static class DynamicBatch
{
    public const string AxisName = "batch";

    /// <summary>The fixed batch size of the graph's real inputs, or null when none has a fixed first dimension.</summary>
    public static long? FixedBatch(GraphProto graph)
    {
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var sizes = graph.Input.Where(i => !initializers.Contains(i.Name)).Select(FirstDim).OfType<long>().Distinct().ToList();
        return sizes.Count == 1 ? sizes[0] : null;
    }

    /// <summary>
    /// Makes the batch axis dynamic in place. Returns the shape initializers whose first element must be written as 0
    /// (their values live in the source file; the caller replaces them while writing).
    /// </summary>
    /// <param name="firstElement">Reads the first int64 of a shape initializer (its values are not in the parsed structure).</param>
    public static IReadOnlySet<string> Apply(GraphProto graph, Func<string, long?> firstElement)
    {
        var fixedBatch = FixedBatch(graph);
        if (fixedBatch is not { } batch)
        {
            return new HashSet<string>();
        }

        var initializers = graph.Initializer.ToDictionary(i => i.Name, StringComparer.Ordinal);
        foreach (var input in graph.Input.Where(i => !initializers.ContainsKey(i.Name) && FirstDim(i) == batch))
        {
            SetDynamic(input);
        }

        foreach (var output in graph.Output.Where(o => FirstDim(o) == batch))
        {
            SetDynamic(output);
        }

        foreach (var info in graph.ValueInfo.Where(v => FirstDim(v) == batch))
        {
            // A rank-1 value of the batch size may be a shape or an index list, not a batch: its shape is left unknown.
            if (info.Type.TensorType.Shape!.Dim.Count >= 2)
            {
                SetDynamic(info);
            }
            else
            {
                info.Type.TensorType.Shape = null;
            }
        }

        return BatchReshapes(graph, initializers, batch, firstElement);
    }

    /// <summary>Shape initializers read only by Reshape nodes of batched data, whose first element is the fixed batch size.</summary>
    private static HashSet<string> BatchReshapes(GraphProto graph, Dictionary<string, TensorProto> initializers, long batch, Func<string, long?> firstElement)
    {
        // Values that depend on a real graph input carry the batch; weights and constants do not.
        var batched = graph.Input.Where(i => !initializers.ContainsKey(i.Name)).Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            if (node.Input.Any(batched.Contains) && node.OpType != "Shape")
            {
                batched.UnionWith(node.Output.Where(o => o.Length > 0));
            }
        }

        var candidates = new HashSet<string>(StringComparer.Ordinal);
        var refused = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            for (var slot = 0; slot < node.Input.Count; slot++)
            {
                var name = node.Input[slot];
                if (!initializers.TryGetValue(name, out var shape))
                {
                    continue;
                }

                var isBatchReshape = node.OpType == "Reshape" && slot == 1 && batched.Contains(node.Input[0])
                    && !node.Attribute.Any(a => a.Name == "allowzero" && a.I != 0)
                    && shape.DataType == (int)Recycling.Onnx.OnnxDataType.Int64 && shape.Dims.Count == 1 && shape.Dims[0] >= 1
                    && firstElement(name) == batch;
                (isBatchReshape ? candidates : refused).Add(name);
            }
        }

        candidates.ExceptWith(refused);
        return candidates;
    }

    private static long? FirstDim(ValueInfoProto info)
    {
        var dims = info.Type?.TensorType?.Shape?.Dim;
        return dims is { Count: > 0 } && dims[0].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? dims[0].DimValue : null;
    }

    private static void SetDynamic(ValueInfoProto info) => info.Type.TensorType.Shape.Dim[0] = new TensorShapeProto.Types.Dimension { DimParam = AxisName };
}
