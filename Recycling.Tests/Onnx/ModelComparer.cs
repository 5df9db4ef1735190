using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Onnx;

/// <summary>Semantic comparison of two models: the whole graph structure, and every tensor bit for bit.</summary>
internal static class ModelComparer
{
    /// <summary>Null when the models are semantically identical, otherwise the first difference.</summary>
    public static string? Difference(OnnxModel expected, OnnxModel actual, bool ignoreMetadata = false)
    {
        var a = WithoutValues(expected.Proto, ignoreMetadata);
        var b = WithoutValues(actual.Proto, ignoreMetadata);
        if (!a.Equals(b))
        {
            return "graph structure differs";
        }

        if (expected.Tensors.Count != actual.Tensors.Count)
        {
            return $"{expected.Tensors.Count} tensors vs {actual.Tensors.Count}";
        }

        for (var i = 0; i < expected.Tensors.Count; i++)
        {
            var (x, y) = (expected.Tensors[i], actual.Tensors[i]);
            if (x.Path != y.Path || x.DataType != y.DataType || !x.Shape.SequenceEqual(y.Shape))
            {
                return $"tensor {x.Path} ({x.DataType} [{string.Join(",", x.Shape)}]) vs {y.Path} ({y.DataType} [{string.Join(",", y.Shape)}])";
            }

            var same = x.DataType == OnnxDataType.String
                ? x.ReadStrings().Count == y.ReadStrings().Count && x.ReadStrings().Zip(y.ReadStrings()).All(p => p.First.AsSpan().SequenceEqual(p.Second))
                : x.ReadRawBytes().AsSpan().SequenceEqual(y.ReadRawBytes());
            if (!same)
            {
                return $"values of {x.Path} differ";
            }
        }

        return null;
    }

    private static ModelProto WithoutValues(ModelProto model, bool ignoreMetadata)
    {
        var clone = model.Clone();
        foreach (var site in TensorCollector.Collect(clone))
        {
            var t = site.Proto;
            t.RecyclingDataRef = 0;
            t.DataLocation = TensorProto.Types.DataLocation.Default;
            t.ExternalData.Clear();
            t.RawData = Google.Protobuf.ByteString.Empty;
            t.FloatData.Clear();
            t.Int32Data.Clear();
            t.Int64Data.Clear();
            t.DoubleData.Clear();
            t.Uint64Data.Clear();
            t.StringData.Clear();
        }

        if (ignoreMetadata)
        {
            clone.MetadataProps.Clear();
        }

        return clone;
    }
}
