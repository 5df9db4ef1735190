using System.Buffers;
using Recycling.Onnx;
using Recycling.Onnx.Merging;

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

    public static MergeOptions Options(string method) => method.ToLowerInvariant() switch
    {
        "uniform" or "average" => new MergeOptions { Method = MergeMethod.Average },
        "ties" => new MergeOptions { Method = MergeMethod.Ties, Density = 0.2, TrimScope = TiesTrimScope.Global },
        "dare" => new MergeOptions { Method = MergeMethod.Dare, DropRate = 0.9, Seed = 1 },
        _ => throw new ArgumentException($"unknown method '{method}' (uniform, ties, dare)"),
    };

    public static MergeSummary Merge(SyntheticModelSet set, string method, string output) =>
        ModelMerger.Merge(new MergeRequest
        {
            Inputs = set.FineTunings,
            Base = method.Equals("uniform", StringComparison.OrdinalIgnoreCase) || method.Equals("average", StringComparison.OrdinalIgnoreCase) ? null : set.Base,
            Output = output,
            Options = Options(method),
            ExternalData = ExternalDataMode.External,
        });

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
