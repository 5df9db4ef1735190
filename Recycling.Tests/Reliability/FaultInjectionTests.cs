using System.Diagnostics;
using System.Security.Cryptography;
using Recycling.Onnx;

namespace Recycling.Tests.Reliability;

/// <summary>
/// Faults during writing, with the real CLI and writer: `recycle merge` killed with SIGKILL at random points never leaves
/// a partial file at the output path nor touches an input; a full disk and a read-only folder give a clear
/// <see cref="RecyclingException"/> and leave no temporary file; merges are byte-identical run to run and at any
/// thread count.
/// </summary>
[TestClass]
public sealed class FaultInjectionTests
{
    private static string _root = null!;
    private static string[] _large = null!;
    private static string[] _small = null!;

    public TestContext TestContext { get; set; } = null!;

    [ClassInitialize]
    public static void CreateInputs(TestContext context)
    {
        _root = Directory.CreateTempSubdirectory("recycling-faults-").FullName;
        _large = SyntheticMlp.Write(Path.Combine(_root, "large"), layers: 4, width: 768, fineTunings: 3); // 9 MiB per model
        _small = SyntheticMlp.Write(Path.Combine(_root, "small"), layers: 2, width: 1024, fineTunings: 3); // 4 chunks per weight
    }

    [ClassCleanup]
    public static void RemoveInputs() => Directory.Delete(_root, recursive: true);

    [TestMethod]
    public void MergeKilledAtRandomPointsNeverLeavesAPartialOutputNorTouchesInputs() => KillRuns(runs: 10, seed: 1);

    [TestMethod]
    [TestCategory("Exhaustive")]
    public void MergeKilledAtRandomPointsManyTimes() => KillRuns(runs: 60, seed: 2);

    private void KillRuns(int runs, int seed)
    {
        var inputHashes = _large.Select(Sha256).ToArray();
        var folder = Directory.CreateDirectory(Path.Combine(_root, $"kills-{seed}")).FullName;
        var references = new Dictionary<bool, (byte[] Model, byte[]? Data, TimeSpan Elapsed)>();
        foreach (var external in new[] { false, true })
        {
            // Same file name as the killed runs' output: the model names its data file.
            var output = Path.Combine(Directory.CreateDirectory(Path.Combine(folder, external ? "reference-external" : "reference")).FullName, "merged.onnx");
            var (code, _, stderr, elapsed) = RecycleProcess.Run(MergeArguments(_large, output, external));
            Assert.AreEqual(0, code, stderr);
            references[external] = (File.ReadAllBytes(output), external ? File.ReadAllBytes(output + ".data") : null, elapsed);
        }

        var random = new Random(seed);
        var target = Path.Combine(folder, "merged.onnx");
        int completed = 0, absent = 0, kept = 0, leftTemporaries = 0;
        for (var run = 0; run < runs; run++)
        {
            var external = run % 2 == 1;
            var (model, data, elapsed) = references[external];
            Array.ForEach(Directory.GetFiles(folder, "merged.onnx.*.data"), Delete);
            var overwrite = run % 3 == 0;
            Delete(target);
            Delete(target + ".data");
            if (overwrite)
            {
                File.WriteAllBytes(target, model);
                if (data is not null)
                {
                    File.WriteAllBytes(target + ".data", data);
                }
            }

            var delay = TimeSpan.FromMilliseconds(random.NextDouble() * elapsed.TotalMilliseconds * 1.1);
            using (var process = RecycleProcess.Start(MergeArguments(_large, target, external)))
            {
                Thread.Sleep(delay);
                process.Kill(entireProcessTree: true);
                process.WaitForExit();
            }

            var temporaries = Directory.GetFiles(folder, ".merged.onnx*");
            leftTemporaries += temporaries.Length > 0 ? 1 : 0;
            if (!File.Exists(target))
            {
                Assert.IsFalse(overwrite, $"run {run}: killed after {delay.TotalMilliseconds:F0} ms, the previous output is gone");
                absent++;
                continue;
            }

            // Replacing an external-data output writes its data under a new name, so compare what the model reads.
            using (var expected = OnnxModel.Open(Path.Combine(folder, external ? "reference-external" : "reference", "merged.onnx")))
            using (var actual = OnnxModel.Open(target))
            {
                Assert.IsNull(Onnx.ModelComparer.Difference(expected, actual), $"run {run} (external {external}): killed after {delay.TotalMilliseconds:F0} ms, the output is not the complete merge");
            }

            if (overwrite)
            {
                kept++;
            }
            else
            {
                completed++;
            }
        }

        // One more merge, run to the end: it removes the temporary files its killed predecessors left, and only
        // those (this test process is alive, so a temporary file carrying its id belongs to a write in progress).
        var live = Path.Combine(folder, $".merged.onnx.{Environment.ProcessId}-0123456789ab.tmp");
        File.WriteAllBytes(live, [1]);
        var last = RecycleProcess.Run(MergeArguments(_large, target, external: false));
        Assert.AreEqual(0, last.ExitCode, last.Stderr);
        CollectionAssert.AreEqual(references[false].Model, File.ReadAllBytes(target));
        CollectionAssert.AreEqual(new[] { live }, Directory.GetFiles(folder, ".*"), "temporary files of dead processes left after a complete run");
        File.Delete(live);
        CollectionAssert.AreEqual(inputHashes, _large.Select(Sha256).ToArray(), "an input was modified");
        TestContext.WriteLine($"{runs} runs killed at random points within 1.1 x the merge time ({references[false].Elapsed.TotalSeconds:F2} s embedded, {references[true].Elapsed.TotalSeconds:F2} s external): " +
            $"{absent} left no output, {completed} had completed, {kept} kept the previous output intact; {leftTemporaries} left temporary files, removed by the next run; inputs unchanged");
    }

    private static string[] MergeArguments(string[] inputs, string output, bool external) =>
        [.. new[] { "merge", "--method", "dare", "--drop-rate", "0.5", "--seed", "42", "--base", inputs[0], "--output", output, "--json" }.Concat(external ? ["--external-data"] : []).Concat(inputs[1..])];

    [TestMethod]
    public void MergesAreByteIdenticalRunToRunAndAtAnyThreadCount() => Determinism(["dare", "ties"], [1, 2, 7]);

    [TestMethod]
    [TestCategory("Exhaustive")]
    public void EveryMethodIsByteIdenticalAtAnyThreadCount() => Determinism(["average", "task-arithmetic", "ties", "dare", "dare-ties", "dare-average", "dare_linear", "della", "breadcrumbs_ties", "slerp", "model-stock"], [1, 2, 3, 7, 16]);

    private void Determinism(string[] methods, int[] threadCounts)
    {
        var folder = Directory.CreateDirectory(Path.Combine(_root, $"determinism-{methods.Length}")).FullName;
        var runs = 0;
        foreach (var method in methods)
        {
            var inputs = method == "slerp" ? _small[1..2] : _small[1..]; // SLERP from the base to one model, as mergekit
            byte[]? first = null;
            foreach (var threads in threadCounts.Append(threadCounts[^1]))
            {
                var output = Path.Combine(folder, $"{method}-{threads}-{runs}.onnx");
                var arguments = new[] { "merge", "--method", method, "--base", _small[0], "--seed", "7", "--density", "0.3", "--output", output, "--json" }.Concat(inputs);
                var (code, stdout, stderr, _) = RecycleProcess.Run(arguments, new Dictionary<string, string> { ["DOTNET_PROCESSOR_COUNT"] = threads.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                Assert.AreEqual(0, code, stderr);
                StringAssert.Contains(stdout, $" x{threads}\"", $"the kernels ran with {threads} threads");
                var bytes = File.ReadAllBytes(output);
                File.Delete(output);
                runs++;
                if (first is null)
                {
                    first = bytes;
                }
                else
                {
                    CollectionAssert.AreEqual(first, bytes, $"{method} with {threads} threads differs from {threadCounts[0]} threads");
                }
            }
        }

        if (methods.Contains("dare"))
        {
            // The seed does reach the mask: another seed gives another model.
            var output = Path.Combine(folder, "dare-other-seed.onnx");
            var (code, _, stderr, _) = RecycleProcess.Run(new[] { "merge", "--method", "dare", "--base", _small[0], "--seed", "8", "--density", "0.3", "--output", output }.Concat(_small[1..]));
            Assert.AreEqual(0, code, stderr);
            var seven = Path.Combine(folder, "dare-seed-7.onnx");
            (code, _, stderr, _) = RecycleProcess.Run(new[] { "merge", "--method", "dare", "--base", _small[0], "--seed", "7", "--density", "0.3", "--output", seven }.Concat(_small[1..]));
            Assert.AreEqual(0, code, stderr);
            CollectionAssert.AreNotEqual(File.ReadAllBytes(seven), File.ReadAllBytes(output));
        }

        TestContext.WriteLine($"{runs} merges ({string.Join(", ", methods)}) at {string.Join(", ", threadCounts)} threads and once more: byte-identical per method");
    }

    [TestMethod]
    public void DiskFullGivesARecyclingExceptionAndLeavesNoTemporaryFile()
    {
        var mount = MountTmpfs("full", "size=256k");
        try
        {
            var previous = Path.Combine(mount, "previous.onnx");
            File.WriteAllBytes(previous, "a previous output"u8.ToArray());
            using var model = OnnxModel.Open(_small[1]); // 8 MiB of initializers
            foreach (var mode in new[] { ExternalDataMode.Embedded, ExternalDataMode.External })
            {
                foreach (var output in new[] { Path.Combine(mount, "new.onnx"), previous })
                {
                    var e = Assert.ThrowsExactly<RecyclingException>(() => OnnxWriter.Write(model, output, new OnnxWriteOptions { ExternalData = mode }));
                    StringAssert.Contains(e.Message, output);
                    StringAssert.Contains(e.Message, "No space left on device");
                    CollectionAssert.AreEquivalent(new[] { previous }, Directory.GetFiles(mount), $"{mode}: only the previous output may remain");
                    Assert.AreEqual("a previous output", File.ReadAllText(previous));
                }
            }

            var (code, stdout, stderr, _) = RecycleProcess.Run(new[] { "merge", "--output", Path.Combine(mount, "merged.onnx") }.Concat(_small[1..]));
            Assert.AreEqual(1, code);
            Assert.AreEqual("", stdout);
            StringAssert.StartsWith(stderr, $"error: {Path.Combine(mount, "merged.onnx")}: writing failed");
            Assert.AreEqual(1, stderr.TrimEnd().Split('\n').Length, stderr);
            CollectionAssert.AreEquivalent(new[] { previous }, Directory.GetFiles(mount));
        }
        finally
        {
            Unmount(mount);
        }
    }

    [TestMethod]
    public void ReadOnlyFolderGivesARecyclingExceptionAndCreatesNothing()
    {
        var mount = MountTmpfs("readonly", "size=1m");
        try
        {
            Remount(mount, "remount,ro");
            using var model = OnnxModel.Open(_small[1]);
            foreach (var mode in new[] { ExternalDataMode.Embedded, ExternalDataMode.External })
            {
                var output = Path.Combine(mount, "out.onnx");
                var e = Assert.ThrowsExactly<RecyclingException>(() => OnnxWriter.Write(model, output, new OnnxWriteOptions { ExternalData = mode }));
                StringAssert.Contains(e.Message, output);
                StringAssert.Contains(e.Message, "Read-only file system");
                Assert.IsEmpty(Directory.GetFileSystemEntries(mount));
            }

            var (code, _, stderr, _) = RecycleProcess.Run(new[] { "merge", "--output", Path.Combine(mount, "merged.onnx") }.Concat(_small[1..]));
            Assert.AreEqual(1, code);
            StringAssert.StartsWith(stderr, $"error: {Path.Combine(mount, "merged.onnx")}: writing failed");
        }
        finally
        {
            Unmount(mount);
        }
    }

    private static string MountTmpfs(string name, string options)
    {
        var folder = Directory.CreateDirectory(Path.Combine(_root, name)).FullName;
        var (code, error) = Tool("mount", "-t", "tmpfs", "-o", options, "tmpfs", folder);
        if (code != 0)
        {
            Assert.Inconclusive($"mounting a tmpfs is not permitted here ({error.Trim()}); run the tests as root to check disk-full and read-only handling");
        }

        return folder;
    }

    private static void Remount(string folder, string options)
    {
        var (code, error) = Tool("mount", "-o", options, folder);
        Assert.AreEqual(0, code, error);
    }

    private static void Unmount(string folder) => Tool("umount", folder);

    private static (int Code, string Error) Tool(string file, params string[] arguments)
    {
        try
        {
            var start = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            arguments.ToList().ForEach(start.ArgumentList.Add);
            using var process = Process.Start(start)!;
            var error = process.StandardError.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, error);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, e.Message);
        }
    }

    private static void Delete(string path)
    {
        if (File.Exists(path))
        {
            File.Delete(path);
        }
    }

    private static string Sha256(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
}
