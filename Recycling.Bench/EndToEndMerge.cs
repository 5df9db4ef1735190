using System.Buffers;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Bench;

/// <summary>The end-to-end merge runs shared by <see cref="MergeBenchmarks"/> and the merge-rss/peer commands.</summary>
internal static class EndToEndMerge
{
    public const int FineTunings = 4;
    public const string DefaultSize = "256MiB";

    /// <summary>Where generated models live: $RECYCLING_BENCH_DIR or /tmp/recycling-mergebench, one folder per size.</summary>
    public static string FolderFor(long bytesPerModel) =>
        Path.Combine(Environment.GetEnvironmentVariable("RECYCLING_BENCH_DIR") is { Length: > 0 } root ? root : Path.Combine(Path.GetTempPath(), "recycling-mergebench"),
            $"{bytesPerModel >> 20}MiB");

    public static SyntheticModelSet Models(long bytesPerModel, TextWriter? log = null) => SyntheticModels.Ensure(FolderFor(bytesPerModel), FineTunings, bytesPerModel, log: log);

    /// <summary>
    /// A bench method: uniform, ties (the paper's: density 0.2, global trim), dare (p 0.9, 1/(1−p), seed 1), or any
    /// registry method as NAME[:PARAM=VALUE,...] with its own defaults, e.g. <c>della:density=0.5,epsilon=0.1</c>.
    /// </summary>
    public static MergeOptions Options(string method) => method.ToLowerInvariant() switch
    {
        "uniform" or "average" => new MergeOptions { Method = MergeMethod.Average },
        "ties" => new MergeOptions { Method = MergeMethod.Ties, Density = 0.2, TrimScope = TiesTrimScope.Global },
        "dare" => new MergeOptions { Method = MergeMethod.Dare, DropRate = 0.9, Seed = 1 },
        _ => Registry(method),
    };

    private static MergeOptions Registry(string method)
    {
        var parts = method.Split(':', 2);
        var definition = MergeMethods.TryFind(parts[0]) ?? throw new ArgumentException(
            $"unknown method '{method}' (uniform, ties, dare, or one of {string.Join(", ", MergeMethods.All.Select(m => m.Name))}[:param=value,...])");
        var parameters = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
        foreach (var pair in parts.Length > 1 ? parts[1].Split(',', StringSplitOptions.RemoveEmptyEntries) : [])
        {
            var (name, value) = (pair.Split('=', 2)[0], pair.Split('=', 2).ElementAtOrDefault(1) ?? "");
            var parameter = definition.Parameters.FirstOrDefault(p => p.Name.Equals(name, StringComparison.OrdinalIgnoreCase))
                ?? throw new ArgumentException($"{definition.Name} has no parameter '{name}'");
            parameters[parameter.Name] = parameter.Parse(value, method);
        }

        return new MergeOptions { MethodName = definition.Name, Parameters = parameters, Seed = 1 };
    }

    /// <summary>
    /// Which generated files a run merges: every method of one run (and so the uniform merge it is paired with) reads
    /// the same files. <see cref="Inputs.All"/>: the 4 fine-tunings (and the base where the method needs it);
    /// <see cref="Inputs.Two"/>: the first 2 fine-tunings; <see cref="Inputs.BaseAndOne"/>: the base and the first
    /// fine-tuning (a one-model method merges the fine-tuning into the base, the uniform merge averages both).
    /// </summary>
    public enum Inputs
    {
        All,
        Two,
        BaseAndOne,
    }

    /// <summary>The input set a method can merge: the fewest models any of <paramref name="methods"/> accepts.</summary>
    public static Inputs InputsFor(IEnumerable<string> methods) =>
        methods.Select(m => Options(m).Definition.MaxModels).DefaultIfEmpty(int.MaxValue).Min() switch
        {
            1 => Inputs.BaseAndOne,
            2 or 3 => Inputs.Two,
            _ => Inputs.All,
        };

    public static MergeSummary Merge(SyntheticModelSet set, string method, string output, Inputs inputs = Inputs.All)
    {
        var options = Options(method);
        var definition = options.Definition;
        var needsBase = definition.Base == BaseUse.Required;
        IReadOnlyList<string> models = inputs switch
        {
            Inputs.Two => [.. set.FineTunings.Take(2)],
            Inputs.BaseAndOne when needsBase => [set.FineTunings[0]],
            Inputs.BaseAndOne => [set.Base, set.FineTunings[0]],
            _ => definition.MaxModels < set.FineTunings.Count ? [.. set.FineTunings.Take(definition.MaxModels)] : set.FineTunings,
        };
        return ModelMerger.Merge(new MergeRequest
        {
            Inputs = models,
            Base = needsBase ? set.Base : null,
            Output = output,
            Options = options,
            ExternalData = ExternalDataMode.External,
            FisherFiles = definition.NeedsFisher ? FisherStandIns(set, models) : null,
        });
    }

    /// <summary>
    /// Fisher files for a bench merge: model k's stand-in is the next fine-tuning's file (same tensor names and shapes,
    /// different values; negative entries are floored like any Fisher value below fisher_floor). The merge then reads
    /// twice the bytes of the uniform merge, as a real Fisher merge does.
    /// </summary>
    private static List<string> FisherStandIns(SyntheticModelSet set, IReadOnlyList<string> models) =>
        [.. models.Select(m => set.FineTunings[(set.FineTunings.ToList().IndexOf(m) + 1) % set.FineTunings.Count])];

    /// <summary>
    /// The I/O floor of a merge: every input file read once, sequentially, and <paramref name="outputBytes"/> written
    /// once and flushed to disk (fsync), as the merge's atomic writer does. Returns the bytes moved.
    /// </summary>
    public static long IoFloor(IEnumerable<string> inputFiles, long outputBytes, string output)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            long moved = 0;
            foreach (var file in inputFiles)
            {
                using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
                int n;
                while ((n = stream.Read(buffer, 0, buffer.Length)) > 0)
                {
                    moved += n;
                }
            }

            using (var stream = new FileStream(output, FileMode.Create, FileAccess.Write, FileShare.None, 1))
            {
                for (long left = outputBytes; left > 0;)
                {
                    var n = (int)Math.Min(left, buffer.Length);
                    stream.Write(buffer, 0, n);
                    left -= n;
                    moved += n;
                }

                stream.Flush(flushToDisk: true);
            }

            return moved;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Deletes a merged model and its data file.</summary>
    public static void DeleteOutput(string output)
    {
        File.Delete(output);
        File.Delete(output + ".data");
    }
}
