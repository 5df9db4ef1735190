using Recycling.Onnx.Proto;

namespace Recycling.Onnx;

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
    /// Makes the batch axis of a parsed model dynamic in place, the Reshape shape constants included (their values
    /// are in the proto; one stored in an external file is left alone, and the graph may then take no other batch).
    /// False when the model has no fixed batch.
    /// </summary>
    public static bool Apply(ModelProto model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.Graph is not { } graph || FixedBatch(graph) is null)
        {
            return false;
        }

        foreach (var shape in Apply(graph, FirstInt64))
        {
            if (shape.RawData.Length >= sizeof(long))
            {
                var bytes = shape.RawData.ToByteArray();
                bytes.AsSpan(0, sizeof(long)).Clear();
                shape.RawData = Google.Protobuf.ByteString.CopyFrom(bytes);
            }
            else
            {
                shape.Int64Data[0] = 0;
            }
        }

        return true;
    }

    private static long? FirstInt64(TensorProto tensor) =>
        tensor.DataLocation == TensorProto.Types.DataLocation.External ? null
        : tensor.RawData.Length >= sizeof(long) ? System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(tensor.RawData.Span)
        : tensor.Int64Data.Count > 0 ? tensor.Int64Data[0]
        : null;

    /// <summary>
    /// Makes the batch axis dynamic in place. Returns the shape tensors (initializers or Constant-node values) whose
    /// first element must be written as 0; their values live in the source file, so the caller replaces them while writing.
    /// </summary>
    /// <param name="firstElement">Reads the first int64 of a shape tensor (its values are not in the parsed structure).</param>
    public static IReadOnlySet<TensorProto> Apply(GraphProto graph, Func<TensorProto, long?> firstElement)
    {
        var fixedBatch = FixedBatch(graph);
        if (fixedBatch is not { } batch)
        {
            return new HashSet<TensorProto>();
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

    /// <summary>Shape constants read only by Reshape nodes of batched data, whose first element is the fixed batch size.</summary>
    private static HashSet<TensorProto> BatchReshapes(GraphProto graph, Dictionary<string, TensorProto> initializers, long batch, Func<TensorProto, long?> firstElement)
    {
        // Values that depend on a real graph input carry the batch; weights and constants do not.
        var batched = graph.Input.Where(i => !initializers.ContainsKey(i.Name)).Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var constants = new Dictionary<string, TensorProto>(initializers, StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            if (node.Input.Any(batched.Contains) && node.OpType != "Shape")
            {
                batched.UnionWith(node.Output.Where(o => o.Length > 0));
            }

            if (node.OpType == "Constant" && node.Output.Count == 1 && node.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } value)
            {
                constants[node.Output[0]] = value;
            }
        }

        var candidates = new HashSet<string>(StringComparer.Ordinal);
        var refused = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            for (var slot = 0; slot < node.Input.Count; slot++)
            {
                var name = node.Input[slot];
                if (!constants.TryGetValue(name, out var shape))
                {
                    continue;
                }

                var isBatchReshape = node.OpType == "Reshape" && slot == 1 && batched.Contains(node.Input[0])
                    && !node.Attribute.Any(a => a.Name == "allowzero" && a.I != 0)
                    && shape.DataType == (int)OnnxDataType.Int64 && shape.Dims.Count == 1 && shape.Dims[0] >= 1
                    && firstElement(shape) == batch;
                (isBatchReshape ? candidates : refused).Add(name);
            }
        }

        candidates.ExceptWith(refused);
        candidates.ExceptWith(graph.Output.Select(o => o.Name));
        return new HashSet<TensorProto>(candidates.Select(c => constants[c]), ReferenceEqualityComparer.Instance);
    }

    private static long? FirstDim(ValueInfoProto info)
    {
        var dims = info.Type?.TensorType?.Shape?.Dim;
        return dims is { Count: > 0 } && dims[0].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? dims[0].DimValue : null;
    }

    private static void SetDynamic(ValueInfoProto info) => info.Type.TensorType.Shape.Dim[0] = new TensorShapeProto.Types.Dimension { DimParam = AxisName };
}
