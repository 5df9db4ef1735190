using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using ILGPU;
using ILGPU.Runtime;
using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Bench;

/// <summary>
/// <c>gpu [--size 512MiB] [--counts 2,4,8] [--e2e-size 1GiB] [--json FILE] [--cpu-accelerator]</c>: the ILGPU merge kernels
/// on a GPU, each beside its baseline in the same run (issue 19):
/// <list type="bullet">
/// <item>device-resident weighted mean, TIES (tally + merge) and Fisher on N inputs of --mib each, against a
/// device-to-device copy of the N inputs (GB/s counting bytes read + written; ratio = kernel GB/s / copy GB/s);</item>
/// <item>the merge API from host memory (page-locked staging, two chunks in flight) against the host-to-device copy
/// rate of a page-locked buffer (ratio = input bytes uploaded per second / that rate), beside pageable copies and the
/// CPU kernels on every core on the same host data;</item>
/// <item>with --e2e-size, a whole merge of 4 generated models of that size from files, --device cpu against cuda.</item>
/// </list>
/// Times are medians of synchronised wall-clock runs after warm-up. --cpu-accelerator runs everything on ILGPU's CPU
/// accelerator (a rehearsal on machines without a GPU; its figures mean nothing).
/// </summary>
internal static unsafe class GpuBench
{
    private const int Repeats = 10;

    private static readonly BenchCommand Command = new(
        "gpu [--size 512MiB] [--counts 2,4,8] [--e2e-size SIZE] [--json FILE] [--cpu-accelerator]\n"
        + "  the ILGPU merge kernels on a GPU, each beside its baseline (--cpu-accelerator: a rehearsal on ILGPU's CPU accelerator)",
        ["--size", "--counts", "--e2e-size", "--json"], ["--cpu-accelerator"]);

    public static bool TryRun(string[] args, out int exitCode)
    {
        exitCode = 0;
        if (args.Length == 0 || args[0] != "gpu")
        {
            return false;
        }

        exitCode = BenchSupport.CheckArguments(args, Command) ?? Run(args);
        return true;
    }

    private static int Run(string[] args)
    {
        long bytes = SyntheticModels.ParseSize(BenchSupport.Option(args, "--size") ?? "512MiB");
        int[] counts = (BenchSupport.Option(args, "--counts") ?? "2,4,8").Split(',').Select(c => int.Parse(c, CultureInfo.InvariantCulture)).ToArray();
        long e2e = BenchSupport.Option(args, "--e2e-size") is { } size ? SyntheticModels.ParseSize(size) : 0;
        bool cpu = args.Contains("--cpu-accelerator");
        var results = new JsonArray();
        using IlgpuMergeKernels kernels = cpu ? IlgpuMergeKernels.CreateCpuAccelerator() : IlgpuMergeKernels.CreateCuda();
        Accelerator accelerator = kernels.Accelerator;
        var report = new JsonObject
        {
            ["device"] = accelerator.Name,
            ["acceleratorType"] = accelerator.AcceleratorType.ToString(),
            ["deviceMemoryGiB"] = Math.Round(accelerator.MemorySize / (double)(1L << 30), 1),
            ["multiprocessors"] = accelerator.NumMultiprocessors,
            ["hostCores"] = Environment.ProcessorCount,
            ["bytesPerInput"] = bytes,
            ["chunkElements"] = kernels.ChunkElements,
            ["results"] = results,
        };
        Console.WriteLine($"device: {accelerator.Name} ({accelerator.AcceleratorType}), {report["deviceMemoryGiB"]} GiB, "
            + $"{accelerator.NumMultiprocessors} SMs; host cores {Environment.ProcessorCount}; {bytes} bytes per input");
        string? json = BenchSupport.Option(args, "--json");

        void Add(JsonObject row)
        {
            results.Add(row);
            Console.WriteLine(row.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            if (json is not null)
            {
                File.WriteAllText(json, report.ToJsonString(new JsonSerializerOptions
                {
                    WriteIndented = true,
                    Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
                }));
            }
        }

        Step("device-resident kernels", () => DeviceResident(kernels, bytes / 4, counts, Add));
        Step("host merges", () => HostMerges(kernels, bytes / 4, counts, Add));
        if (e2e > 0)
        {
            Step("end-to-end merges", () => EndToEnd(e2e, cpu ? [MergeDevice.Cpu] : [MergeDevice.Cpu, MergeDevice.Cuda], Add));
        }

        return 0;
    }

    private static void Step(string name, Action step)
    {
        try
        {
            step();
        }
        catch (Exception e)
        {
            Console.WriteLine($"{name} failed: {e.GetType().Name}: {e.Message}");
            Console.WriteLine(e.StackTrace);
        }
    }

    private static double Median(Accelerator accelerator, Action run, int repeats = Repeats)
    {
        run();
        accelerator.Synchronize();
        run();
        accelerator.Synchronize();
        var times = new double[repeats];
        for (int r = 0; r < repeats; r++)
        {
            long start = Stopwatch.GetTimestamp();
            run();
            accelerator.Synchronize();
            times[r] = Stopwatch.GetElapsedTime(start).TotalSeconds;
        }

        Array.Sort(times);
        return times[repeats / 2];
    }

    private static JsonObject Row(string test, int count, double bytesMoved, double seconds, string baseline, double baselineGbps) => new()
    {
        ["test"] = test,
        ["n"] = count,
        ["gbMoved"] = Math.Round(bytesMoved / 1e9, 3),
        ["ms"] = Math.Round(seconds * 1e3, 3),
        ["gbps"] = Math.Round(bytesMoved / seconds / 1e9, 1),
        ["baseline"] = baseline,
        ["baselineGbps"] = Math.Round(baselineGbps, 1),
        ["ratio"] = Math.Round(bytesMoved / seconds / 1e9 / baselineGbps, 3),
    };

    private static void DeviceResident(IlgpuMergeKernels kernels, long elements, int[] counts, Action<JsonObject> add)
    {
        Accelerator accelerator = kernels.Accelerator;
        int n = checked((int)elements);
        int most = counts.Max();
        var fill = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, int>(FillKernel);
        using var stacked = accelerator.Allocate1D<float>((long)most * n);
        using var fishers = accelerator.Allocate1D<float>((long)most * n);
        using var copy = accelerator.Allocate1D<float>((long)most * n);
        using var baseline = accelerator.Allocate1D<float>(n);
        using var output = accelerator.Allocate1D<float>(n);
        using var partials = accelerator.Allocate1D<long>(1 << 16);
        for (int k = 0; k < most; k++)
        {
            fill(n, stacked.View.SubView((long)k * n, n), k + 1, 0);
            fill(n, fishers.View.SubView((long)k * n, n), k + 101, 1);
        }

        fill(n, baseline.View, 1000, 0);
        accelerator.Synchronize();
        var copyKernel = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(CopyKernel);
        foreach (int count in counts)
        {
            long inputs = (long)count * n;
            using var weights = Upload(accelerator, Enumerable.Repeat(1f / count, count).ToArray());
            using var keys = Upload(accelerator, new ulong[count]);
            using var thresholds = Upload(accelerator, Enumerable.Repeat(BitConverter.SingleToUInt32Bits(0.05f), count).ToArray());
            using var coefficients = Upload(accelerator, Enumerable.Repeat(1f, count).ToArray());
            ArrayView<float> x = stacked.View.SubView(0, inputs), f = fishers.View.SubView(0, inputs);

            ArrayView<float> target = copy.View.SubView(0, inputs);
            double copySeconds = Median(accelerator, () => x.CopyTo(accelerator.DefaultStream, target));
            double copyGbps = 2.0 * inputs * 4 / copySeconds / 1e9;
            add(Row("device copy (cuMemcpyDtoD) of the N inputs", count, 2.0 * inputs * 4, copySeconds, "itself", copyGbps));
            double kernelCopy = Median(accelerator, () => copyKernel((int)inputs, x, copy.View.SubView(0, inputs)));
            add(Row("device copy kernel (ILGPU, one element per thread)", count, 2.0 * inputs * 4, kernelCopy, "device copy", copyGbps));

            double mean = Median(accelerator, () => kernels.WeightedSumOnDevice(x, count, weights.View, keys.View, output.View));
            add(Row("device-resident weighted mean", count, (count + 1.0) * n * 4, mean, "device copy", copyGbps));
            double ties = Median(accelerator, () => kernels.TiesOnDevice(x, count, baseline.View, thresholds.View, keys.View, 1f,
                partials.View, output.View));
            add(Row("device-resident TIES (sign tally + merge)", count, (2.0 * count + 3) * n * 4, ties, "device copy", copyGbps));
            double fisher = Median(accelerator, () => kernels.FisherOnDevice(x, f, count, coefficients.View, 1e-8f, output.View));
            add(Row("device-resident Fisher", count, (2.0 * count + 1) * n * 4, fisher, "device copy", copyGbps));
        }
    }

    private static void HostMerges(IlgpuMergeKernels kernels, long elements, int[] counts, Action<JsonObject> add)
    {
        Accelerator accelerator = kernels.Accelerator;
        int n = checked((int)elements);
        int most = counts.Max();
        var inputs = new TensorSource[most];
        var fisherSources = new TensorSource[most];
        float[] output = GC.AllocateUninitializedArray<float>(n, pinned: true);
        float[] reference = GC.AllocateUninitializedArray<float>(n, pinned: true);
        try
        {
            for (int k = 0; k < most; k++)
            {
                inputs[k] = HostTensor(n, k + 1, positive: false);
                fisherSources[k] = HostTensor(n, k + 101, positive: true);
            }

            TensorSource theta0 = HostTensor(n, 1000, positive: false);
            using var deviceBuffer = accelerator.Allocate1D<float>(n);
            ArrayView<float> device = deviceBuffer.View;
            using var pinned = accelerator.AllocatePageLocked1D<float>(n, true);
            float* pinnedData = (float*)Unsafe.AsPointer(ref pinned[0L]);
            new Span<float>(pinnedData, n).Fill(0.25f);
            double pinnedUp = Median(accelerator, () => device.CopyFromCPUUnsafeAsync(accelerator.DefaultStream, ref Unsafe.AsRef<float>(pinnedData), n));
            double h2d = n * 4.0 / pinnedUp / 1e9;
            add(Row("host-to-device copy, page-locked", 1, n * 4.0, pinnedUp, "itself", h2d));
            double pinnedDown = Median(accelerator, () => device.CopyToCPUUnsafeAsync(accelerator.DefaultStream, ref Unsafe.AsRef<float>(pinnedData), n));
            add(Row("device-to-host copy, page-locked", 1, n * 4.0, pinnedDown, "host-to-device page-locked", h2d));
            double pageable = Median(accelerator, () => device.CopyFromCPU(ref Unsafe.AsRef<float>((float*)inputs[0].Data), n), 3);
            add(Row("host-to-device copy, pageable", 1, n * 4.0, pageable, "host-to-device page-locked", h2d));

            var cpu = new CpuMergeKernels();
            foreach (int count in counts)
            {
                TensorSource[] x = inputs[..count];
                float[] weights = Enumerable.Repeat(1f / count, count).ToArray();
                double merge = Median(accelerator, () => kernels.WeightedSum(x, weights, null, null, output), 3);
                double onCpu = Median(accelerator, () => cpu.WeightedSum(x, weights, null, null, reference), 3);
                add(Checked(Row("host weighted mean, GPU (bytes = inputs uploaded)", count, count * n * 4.0, merge, "host-to-device page-locked", h2d), output, reference));
                add(Row("host weighted mean, CPU kernels on every core (same bytes)", count, count * n * 4.0, onCpu, "host-to-device page-locked", h2d));
            }

            int four = Math.Min(4, most);
            TensorSource[] some = inputs[..four];
            uint[] thresholds = Enumerable.Repeat(BitConverter.SingleToUInt32Bits(0.05f), four).ToArray();
            double ties = Median(accelerator, () => kernels.Ties(some, theta0, thresholds, 1f, null, output), 3);
            double tiesCpu = Median(accelerator, () => cpu.Ties(some, theta0, thresholds, 1f, null, reference), 3);
            add(Checked(Row("host TIES, GPU (two passes: bytes = 2 × (N + 1) inputs uploaded)", four, 2.0 * (four + 1) * n * 4, ties, "host-to-device page-locked", h2d), output, reference));
            add(Row("host TIES, CPU kernels on every core (same bytes)", four, 2.0 * (four + 1) * n * 4, tiesCpu, "host-to-device page-locked", h2d));
            float[] c = Enumerable.Repeat(1f, four).ToArray();
            double fisher = Median(accelerator, () => kernels.Fisher(some, fisherSources[..four], c, 1e-8f, output), 3);
            double fisherCpu = Median(accelerator, () => cpu.Fisher(some, fisherSources[..four], c, 1e-8f, reference), 3);
            add(Checked(Row("host Fisher, GPU (bytes = 2N inputs uploaded)", four, 2.0 * four * n * 4, fisher, "host-to-device page-locked", h2d), output, reference));
            add(Row("host Fisher, CPU kernels on every core (same bytes)", four, 2.0 * four * n * 4, fisherCpu, "host-to-device page-locked", h2d));
            NativeMemory.AlignedFree(theta0.Data);
        }
        finally
        {
            foreach (TensorSource source in inputs.Concat(fisherSources).Where(s => s.Data != null))
            {
                NativeMemory.AlignedFree(source.Data);
            }
        }
    }

    /// <summary>Adds the largest difference from the CPU kernels' result: the GPU path must agree within fp32 rounding.</summary>
    private static JsonObject Checked(JsonObject row, float[] gpu, float[] cpu)
    {
        double most = 0;
        for (int i = 0; i < gpu.Length; i++)
        {
            most = Math.Max(most, Math.Abs((double)gpu[i] - cpu[i]));
        }

        row["maxAbsDiffVsCpu"] = most;
        return row;
    }

    private static void EndToEnd(long bytes, MergeDevice[] devices, Action<JsonObject> add)
    {
        SyntheticModelSet set = EndToEndMerge.Models(bytes, Console.Out);
        string output = Path.Combine(set.Folder, "gpu-bench-merged.onnx");
        foreach (string method in new[] { "uniform", "ties" })
        {
            var seconds = devices.ToDictionary(device => device, _ => new List<double>());
            for (int round = 0; round < 3; round++)
            {
                foreach (MergeDevice device in devices)
                {
                    long start = Stopwatch.GetTimestamp();
                    ModelMerger.Merge(new MergeRequest
                    {
                        Inputs = set.FineTunings,
                        Base = method == "ties" ? set.Base : null,
                        Output = output,
                        Options = EndToEndMerge.Options(method) with { Device = device },
                        ExternalData = ExternalDataMode.External,
                    });
                    seconds[device].Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
                    EndToEndMerge.DeleteOutput(output);
                }
            }

            double inputBytes = set.FineTunings.Sum(file => new FileInfo(file).Length + new FileInfo(file + ".data").Length);
            double cpuSeconds = BenchSupport.Median(seconds[MergeDevice.Cpu]);
            add(Row($"end-to-end {method} merge from files, --device cpu", set.FineTunings.Count, inputBytes, cpuSeconds, "itself", inputBytes / cpuSeconds / 1e9));
            if (seconds.TryGetValue(MergeDevice.Cuda, out List<double>? cuda))
            {
                add(Row($"end-to-end {method} merge from files, --device cuda", set.FineTunings.Count, inputBytes, BenchSupport.Median(cuda),
                    "--device cpu", inputBytes / cpuSeconds / 1e9));
            }
        }
    }

    /// <summary>N(0, ~0.3)-like values from a hash of the index (or positive ones, for Fisher), in 64-byte aligned native memory.</summary>
    private static TensorSource HostTensor(int n, int seed, bool positive)
    {
        float* data = (float*)NativeMemory.AlignedAlloc((nuint)n * 4, 64);
        Parallel.For(0, (n + (1 << 20) - 1) >> 20, block =>
        {
            int start = block << 20, end = Math.Min(n, start + (1 << 20));
            for (int i = start; i < end; i++)
            {
                data[i] = Value(i, seed, positive ? 1 : 0);
            }
        });
        return new TensorSource(data, n, OnnxDataType.Float);
    }

    private static MemoryBuffer1D<T, Stride1D.Dense> Upload<T>(Accelerator accelerator, T[] values) where T : unmanaged
    {
        var buffer = accelerator.Allocate1D<T>(values.Length);
        buffer.CopyFromCPU(values);
        return buffer;
    }

    private static float Value(int i, int seed, int positive)
    {
        uint h = (uint)i * 0x9E3779B1u ^ (uint)seed * 0x85EBCA77u;
        h ^= h >> 15;
        h *= 0x2C1B3C6Du;
        h ^= h >> 12;
        float unit = (h >> 8) * (1f / (1 << 24));
        return positive != 0 ? unit * unit + 1e-6f : unit - 0.5f;
    }

    private static void FillKernel(Index1D i, ArrayView<float> data, int seed, int positive) => data[i] = Value(i, seed, positive);

    private static void CopyKernel(Index1D i, ArrayView<float> source, ArrayView<float> destination) => destination[i] = source[i];
}
