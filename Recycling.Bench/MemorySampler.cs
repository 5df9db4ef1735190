using System.Globalization;
using System.Text.Json.Nodes;

namespace Recycling.Bench;

/// <summary>
/// Where a merge's peak resident set lies: a thread reads /proc/self/status every few milliseconds while the merge runs
/// and keeps the largest anonymous (heap, native buffers, stacks), file-backed (mapped files and libraries) and shared
/// resident sizes, and, at the largest total, the GC's committed and heap bytes. VmHWM alone cannot tell a leaked
/// managed heap from mapped input pages: both count.
/// </summary>
internal sealed class MemorySampler : IDisposable
{
    private readonly Thread _thread;
    private volatile bool _stop;
    private long _anon, _file, _shmem, _rss;
    private long _gcCommittedAtPeak, _gcHeapAtPeak, _anonAtPeak, _fileAtPeak;
    private int _samples;
    private long _dumpedAt;

    /// <summary>$RECYCLING_BENCH_SMAPS: a file to copy /proc/self/smaps to at each new peak (diagnosis only).</summary>
    private static readonly string? SmapsDump = Environment.GetEnvironmentVariable("RECYCLING_BENCH_SMAPS");

    private MemorySampler()
    {
        _thread = new Thread(Sample) { IsBackground = true, Name = "rss sampler", Priority = ThreadPriority.AboveNormal };
        _thread.Start();
    }

    public static MemorySampler Start() => new();

    private void Sample()
    {
        while (!_stop)
        {
            var status = BenchSupport.ProcessStatus();
            long anon = status.GetValueOrDefault("RssAnon"), file = status.GetValueOrDefault("RssFile"), shmem = status.GetValueOrDefault("RssShmem");
            _anon = Math.Max(_anon, anon);
            _file = Math.Max(_file, file);
            _shmem = Math.Max(_shmem, shmem);
            if (anon + file + shmem > _rss)
            {
                _rss = anon + file + shmem;
                (_anonAtPeak, _fileAtPeak) = (anon, file);
                var gc = GC.GetGCMemoryInfo();
                (_gcCommittedAtPeak, _gcHeapAtPeak) = (gc.TotalCommittedBytes, gc.HeapSizeBytes);
                if (SmapsDump is { } dump && _rss > _dumpedAt + (8 << 20))
                {
                    _dumpedAt = _rss;
                    File.Copy("/proc/self/smaps", dump, overwrite: true);
                }
            }

            _samples++;
            Thread.Sleep(5);
        }
    }

    /// <summary>Stops sampling and returns the figures (bytes), with the GC's view after the merge.</summary>
    public JsonObject Stop()
    {
        _stop = true;
        _thread.Join();
        var gc = GC.GetGCMemoryInfo();
        return new JsonObject
        {
            ["samples"] = _samples,
            ["rss_anon_peak_bytes"] = _anon,
            ["rss_file_peak_bytes"] = _file,
            ["rss_shmem_peak_bytes"] = _shmem,
            ["sampled_rss_peak_bytes"] = _rss,
            ["rss_anon_at_peak_bytes"] = _anonAtPeak,
            ["rss_file_at_peak_bytes"] = _fileAtPeak,
            ["gc_committed_at_peak_bytes"] = _gcCommittedAtPeak,
            ["gc_heap_at_peak_bytes"] = _gcHeapAtPeak,
            ["gc_committed_after_bytes"] = gc.TotalCommittedBytes,
            ["gc_heap_after_bytes"] = gc.HeapSizeBytes,
            ["gc_fragmented_after_bytes"] = gc.FragmentedBytes,
            ["gc_loh_after_bytes"] = gc.GenerationInfo[3].SizeAfterBytes,
            ["gc_poh_after_bytes"] = gc.GenerationInfo[4].SizeAfterBytes,
            ["gc_count"] = GC.CollectionCount(0),
        };
    }

    /// <summary>The shared libraries this process has mapped whose names contain one of <paramref name="names"/> (e.g. onnxruntime, torch).</summary>
    public static JsonArray LoadedLibraries(params string[] names)
    {
        var found = new SortedSet<string>(StringComparer.Ordinal);
        if (File.Exists("/proc/self/maps"))
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                var path = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).ElementAtOrDefault(5);
                if (path is not null && names.Any(n => Path.GetFileName(path).Contains(n, StringComparison.OrdinalIgnoreCase)))
                {
                    found.Add(Path.GetFileName(path));
                }
            }
        }

        return new JsonArray([.. found.Select(f => JsonValue.Create(f))]);
    }

    public void Dispose()
    {
        _stop = true;
        _thread.Join();
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"anon {_anon >> 20} MiB, file {_file >> 20} MiB");
}
