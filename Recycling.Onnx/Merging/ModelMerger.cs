using System.Diagnostics;
using System.Text.Json;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.IO;

namespace Recycling.Onnx.Merging;

/// <summary>A merge of fine-tuned exports into one model file.</summary>
public sealed record MergeRequest
{
    public required IReadOnlyList<string> Inputs { get; init; }

    public required string Output { get; init; }

    public string? Base { get; init; }

    public MergeOptions Options { get; init; } = new();

    public HeadPolicy Heads { get; init; } = HeadPolicy.Error;

    /// <summary>Element type of merged float tensors; null keeps each tensor's type in the template.</summary>
    public OnnxDataType? OutputType { get; init; }

    public ExternalDataMode ExternalData { get; init; } = ExternalDataMode.Auto;

    /// <summary>Proceed when inputs hold NaN or infinities (they are reported either way).</summary>
    public bool AllowNonFinite { get; init; }

    /// <summary>One diagonal-Fisher file per input (.onnx with initializers, or .npz arrays, keyed by the input's tensor names).</summary>
    public IReadOnlyList<string>? FisherFiles { get; init; }

    /// <summary>More entries for the written model's lineage metadata (e.g. recycling.tuning), beside the merge's own.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }
}

public sealed record MergeSummary(int Parameters, int Merged, long BytesRead, long BytesWritten, TimeSpan Elapsed, string Kernels, IReadOnlyList<string> Notes)
{
    /// <summary>Signs that the merged model is likely broken (a task vector far longer than any input's); empty when none.</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];
}

/// <summary>
/// Streams a merge: aligns the inputs, then produces each merged tensor as the writer reaches it, reading the inputs in
/// place from their memory mappings, so peak memory is a few tensors whatever the model size. Linear methods read each
/// input once; global TIES first samples and counts magnitudes (one full pass; three when the sample misleads), Fisher first measures Fisher norms (one pass).
/// </summary>
public static class ModelMerger
{
    public const string ToolVersion = "0.1.0";

    public static MergeSummary Merge(MergeRequest request, IProgress<long>? bytesProgress = null)
    {
        using var models = AlignedModels.Open(request.Inputs, request.Base, request.Heads);
        using var fishers = request.FisherFiles is null ? null : FisherSet.Open(request.FisherFiles, models.Inputs);
        return Merge(models.Plan, request, fishers, bytesProgress);
    }

    internal static MergeSummary Merge(AlignmentPlan plan, MergeRequest request, FisherSet? fishers, IProgress<long>? bytesProgress)
    {
        var clock = Stopwatch.StartNew();
        var models = plan.Inputs.Concat(plan.Base is null ? [] : [plan.Base]).ToList();
        var inputFiles = models.SelectMany(m => m.Files).Concat(fishers?.Files ?? []).ToList();
        ModelWriter.Prepare(request.Output, new InputFiles(inputFiles), request.ExternalData); // before the prepasses, which may take long
        // Hashed from the bytes the merge reads (cached across runs), not by a second read of every input.
        var hashes = models.Select(m => IngredientHashes.Follow(m.OpenedFiles)).ToList();
        try
        {
            return MergeAndWrite(plan, request, fishers, bytesProgress, models, inputFiles, hashes, clock);
        }
        finally
        {
            hashes.ForEach(h => h.Dispose());
        }
    }

    private static MergeSummary MergeAndWrite(AlignmentPlan plan, MergeRequest request, FisherSet? fishers, IProgress<long>? bytesProgress,
        List<OnnxModel> models, List<string> inputFiles, List<IngredientHashes.Following> hashes, Stopwatch clock)
    {
        using var job = new MergeJob(plan, request.Options, request.OutputType, request.AllowNonFinite, fishers, bytesProgress);
        var lineage = job.Lineage();
        foreach (var (key, value) in request.Metadata ?? new Dictionary<string, string>())
        {
            lineage[key] = value;
        }

        var written = ModelWriter.Write(job.Structure, job.Items, request.Output, new OnnxWriteOptions { ExternalData = request.ExternalData, Metadata = lineage },
            inputFiles,
            () => LateLineage(models, hashes, plan));

        if (request.ExternalData == ExternalDataMode.Auto && job.Items.Any(i => i.Target.ExternalData.Count > 0))
        {
            job.Notes.Add("the merged model is over the 2 GiB protobuf limit embedded, so its tensors were written as external data beside it");
        }

        return new MergeSummary(plan.Parameters.Count, job.MergedCount, job.BytesRead, written, clock.Elapsed, job.KernelName, job.SummaryNotes())
        {
            Warnings = job.Warning() is { } warning ? [warning] : [],
        };
    }

    /// <summary>
    /// The input hashes, once every tensor was merged: the model is written only when no input changed in place meanwhile
    /// (the hashes and the merge read the same opened files, so a path replaced or deleted meanwhile changes neither).
    /// </summary>
    private static Dictionary<string, string> LateLineage(List<OnnxModel> models, List<IngredientHashes.Following> hashes, AlignmentPlan plan)
    {
        var digests = models.Zip(hashes, (m, h) => new { file = Path.GetFileName(m.Path), sha256 = h.Finish() }).ToList();
        models.ForEach(m => m.CheckUnchanged());
        return new Dictionary<string, string>
        {
            ["recycling.ingredients"] = JsonSerializer.Serialize(digests.Take(plan.Inputs.Count)),
            ["recycling.base"] = plan.Base is null ? "" : JsonSerializer.Serialize(digests[^1]),
        };
    }

    /// <summary>
    /// Merges into an embedded ONNX model in memory, without touching the disk: for evaluating candidates (soups,
    /// interpolation curves) of small models. The plan's models must stay open until this returns.
    /// </summary>
    public static byte[] MergeToBytes(AlignmentPlan plan, MergeOptions options, OnnxDataType? outputType = null) =>
        MergeToBytes(plan, options, fishers: null, outputType);

    /// <summary>As <see cref="MergeToBytes(AlignmentPlan, MergeOptions, OnnxDataType?)"/>, with the Fisher tensors a Fisher merge needs.</summary>
    internal static byte[] MergeToBytes(AlignmentPlan plan, MergeOptions options, FisherSet? fishers, OnnxDataType? outputType = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        using var job = new MergeJob(plan, options with { AllowOverflow = true }, outputType, allowNonFinite: true, fishers, progress: null);
        using var stream = new MemoryStream();
        ModelWriter.WriteEmbedded(job.Structure, job.Items, stream, job.Lineage());
        return stream.ToArray();
    }
}
