using Microsoft.ML;
using Microsoft.ML.Transforms.Onnx;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Proto;

namespace Recycling.MLNet.Pipeline;

/// <summary>
/// An ML.NET estimator that merges fine-tuned ONNX exports (any registry method: <see cref="MergeOptions.MethodName"/>,
/// docs/merge-methods.md) and applies the merged model
/// with ML.NET's ONNX transformer, so a merge is one stage of a pipeline: <c>Append</c> it like any transform. The merge
/// runs once, in memory, when the estimator is created; <see cref="MergedModel"/> holds the bytes. Column names are
/// the model's input and output names (ML.NET's ONNX rule); symbolic dimensions are fixed to 1 (one row at a time), and a
/// fixed batch dimension is made dynamic first (as <see cref="Inference.OnnxScorer"/> does).
/// </summary>
public sealed class MergeAndApplyOnnxEstimator : IEstimator<OnnxTransformer>
{
    private readonly OnnxScoringEstimator _apply;

    internal MergeAndApplyOnnxEstimator(TransformsCatalog catalog, IReadOnlyList<string> models, MergeOptions options, string outputColumnName, string inputColumnName,
        string? baseModel, HeadPolicy heads, int? gpuDeviceId)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(options);
        using (var aligned = AlignedModels.Open(models, baseModel, heads))
        {
            MergedModel = ModelMerger.MergeToBytes(aligned.Plan, options);
        }

        // ML.NET feeds one row per run: an export with a fixed batch (of any size) gets a dynamic batch axis.
        var proto = ModelProto.Parser.ParseFrom(MergedModel);
        if (DynamicBatch.Apply(proto))
        {
            MergedModel = Google.Protobuf.MessageExtensions.ToByteArray(proto);
        }

        var graph = proto.Graph;
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var shapes = graph.Input.Where(i => !initializers.Contains(i.Name)).Concat(graph.Output)
            .Where(v => v.Type?.TensorType?.Shape is not null && v.Type.TensorType.Shape.Dim.Any(d => d.DimValue <= 0))
            .ToDictionary(v => v.Name, v => v.Type.TensorType.Shape.Dim.Select(d => d.DimValue > 0 ? checked((int)d.DimValue) : 1).ToArray());
        if (!graph.Input.Any(i => i.Name == inputColumnName))
        {
            throw new RecyclingException($"the merged model has no input '{inputColumnName}' (inputs: {string.Join(", ", graph.Input.Where(i => !initializers.Contains(i.Name)).Select(i => i.Name))}): ML.NET names columns after the model's inputs");
        }

        if (!graph.Output.Any(o => o.Name == outputColumnName))
        {
            throw new RecyclingException($"the merged model has no output '{outputColumnName}' (outputs: {string.Join(", ", graph.Output.Select(o => o.Name))})");
        }

        _apply = catalog.ApplyOnnxModel(outputColumnName, inputColumnName, new MemoryStream(MergedModel, writable: false), shapes, gpuDeviceId, fallbackToCpu: true);
    }

    /// <summary>The merged model (embedded ONNX).</summary>
    public byte[] MergedModel { get; }

    public OnnxTransformer Fit(IDataView input) => _apply.Fit(input);

    public SchemaShape GetOutputSchema(SchemaShape inputSchema) => _apply.GetOutputSchema(inputSchema);
}

/// <summary>MLContext extensions for recycling.</summary>
public static class RecyclingCatalog
{
    /// <summary>
    /// Merges <paramref name="models"/> with <paramref name="options"/> and applies the merged model:
    /// <c>mlContext.Transforms.MergeAndApplyOnnx(["ft1.onnx", "ft2.onnx"], new MergeOptions(), "logits", "input")</c>.
    /// </summary>
    /// <param name="baseModel">The base model, for the methods that need it (task arithmetic, TIES, DARE, model stock ...; <see cref="MergeOptions.RequiresBase"/>).</param>
    /// <param name="heads">Heads of different shapes: <see cref="HeadPolicy.Drop"/> applies the body (penultimate features).</param>
    /// <param name="gpuDeviceId">A CUDA device for ML.NET's ONNX transformer; it falls back to the CPU when none works.</param>
    public static MergeAndApplyOnnxEstimator MergeAndApplyOnnx(this TransformsCatalog catalog, IReadOnlyList<string> models, MergeOptions options,
        string outputColumnName, string inputColumnName, string? baseModel = null, HeadPolicy heads = HeadPolicy.Error, int? gpuDeviceId = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new MergeAndApplyOnnxEstimator(catalog, models, options, outputColumnName, inputColumnName, baseModel, heads, gpuDeviceId);
    }
}
