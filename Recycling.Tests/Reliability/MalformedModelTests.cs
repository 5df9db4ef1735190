using System.Diagnostics;
using Recycling.Onnx;

namespace Recycling.Tests.Reliability;

/// <summary>
/// The generated corpus of malformed models (<see cref="MalformedModelCorpus"/>): opening each one and reading every
/// tensor must end in <see cref="OnnxFormatException"/> naming the model file (or, for a random mutation that happens to
/// leave a valid model, succeed), within 5 s and 64 MiB of managed allocation, with no other exception type.
/// The default run takes every targeted case plus a fixed sample of the random mutations; the "Exhaustive"
/// category runs every truncation offset and more bit flips.
/// </summary>
[TestClass]
public sealed class MalformedModelTests
{
    /// <summary>Per case. Generous against the reader (a few ms per case here), tight against a hang.</summary>
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Managed bytes one case may allocate: the fixtures are under 64 KB, so this bounds any size taken from the file.</summary>
    private const long AllocationLimit = 64L << 20;

    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    public void SampledCorpusEndsInFormatErrorsWithinBounds() => RunCorpus([.. MalformedModelCorpus.Sample()], minimumCases: 200);

    [TestMethod]
    [TestCategory("Exhaustive")]
    public void ExhaustiveCorpusEndsInFormatErrorsWithinBounds() => RunCorpus([.. MalformedModelCorpus.All()], minimumCases: 20_000);

    [TestMethod]
    public void MergingWithAMalformedInputFailsWithTheFormatErrorAndWritesNothing()
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-malformed-merge-");
        try
        {
            var cases = MalformedModelCorpus.Targeted().Where(c => c.MustReject).GroupBy(c => c.Category).SelectMany(g => g.Take(4)).ToList();
            for (var i = 0; i < cases.Count; i++)
            {
                var folder = Directory.CreateDirectory(Path.Combine(scratch.FullName, i.ToString(System.Globalization.CultureInfo.InvariantCulture))).FullName;
                var malformed = cases[i].Build(folder);
                var output = Path.Combine(folder, "out", "merged.onnx");
                var e = Assert.ThrowsExactly<OnnxFormatException>(() => Recycling.Onnx.Merging.ModelMerger.Merge(new Recycling.Onnx.Merging.MergeRequest
                {
                    Inputs = [MalformedModelCorpus.FixturePath("cnn_default.onnx"), malformed],
                    Output = output,
                }), cases[i].ToString());
                StringAssert.StartsWith(e.File, folder, cases[i].ToString());
                Assert.IsFalse(Directory.Exists(Path.GetDirectoryName(output)), $"{cases[i]}: the merge created its output folder");
            }

            TestContext.WriteLine($"{cases.Count} merges with a malformed second input refused");
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    private void RunCorpus(IReadOnlyList<MalformedCase> cases, int minimumCases)
    {
        Assert.IsGreaterThanOrEqualTo(minimumCases, cases.Count);
        var scratch = Directory.CreateTempSubdirectory("recycling-malformed-");
        try
        {
            var outcomes = new List<CaseOutcome>(cases.Count);
            var failures = new List<string>();
            for (var i = 0; i < cases.Count; i++)
            {
                var folder = Directory.CreateDirectory(Path.Combine(scratch.FullName, i.ToString(System.Globalization.CultureInfo.InvariantCulture))).FullName;
                var outcome = Run(cases[i], folder);
                outcomes.Add(outcome);
                if (outcome.Failure is not null)
                {
                    failures.Add($"{cases[i]}: {outcome.Failure}");
                }

                Directory.Delete(folder, recursive: true);
            }

            foreach (var group in outcomes.GroupBy(o => o.Case.Category).OrderBy(g => g.Key, StringComparer.Ordinal))
            {
                TestContext.WriteLine($"{group.Key}: {group.Count()} cases, {group.Count(o => o.Rejected)} rejected, {group.Count(o => !o.Rejected && o.Failure is null)} valid after mutation, {group.Count(o => o.Failure is not null)} failures; max {group.Max(o => o.Allocated) / 1024} KiB allocated, max {group.Max(o => o.Elapsed.TotalMilliseconds):F0} ms");
            }

            TestContext.WriteLine($"total: {outcomes.Count} cases, {outcomes.Count(o => o.Rejected)} rejected, {failures.Count} failures");
            Assert.IsEmpty(failures, string.Join(Environment.NewLine, failures.Take(40)));
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    private sealed record CaseOutcome(MalformedCase Case, bool Rejected, long Allocated, TimeSpan Elapsed, string? Failure);

    private static CaseOutcome Run(MalformedCase malformed, string folder)
    {
        var path = malformed.Build(folder);
        var watch = Stopwatch.StartNew();
        var task = Task.Factory.StartNew(() => OpenAndReadEverything(path), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        if (!task.Wait(CaseTimeout))
        {
            return new CaseOutcome(malformed, false, 0, watch.Elapsed, $"still running after {CaseTimeout.TotalSeconds} s");
        }

        var (error, allocated) = task.Result;
        var elapsed = watch.Elapsed;
        string? failure = null;
        if (allocated > AllocationLimit)
        {
            failure = $"allocated {allocated} bytes";
        }
        else if (error is null && malformed.MustReject)
        {
            failure = "opened and read without error";
        }
        else if (error is not null and not OnnxFormatException)
        {
            failure = $"{error.GetType().Name}: {error.Message}";
        }
        else if (error is OnnxFormatException format && (format.File != Path.GetFullPath(path) && !format.File.StartsWith(folder, StringComparison.Ordinal) || format.Message.Contains('\n', StringComparison.Ordinal)))
        {
            failure = $"the error names '{format.File}' or spans lines: {format.Message}";
        }

        return new CaseOutcome(malformed, error is not null, allocated, elapsed, failure);
    }

    /// <summary>Opens the model and reads every tensor's values the way the merge engine does; returns the error (if any) and the bytes allocated.</summary>
    private static (Exception? Error, long Allocated) OpenAndReadEverything(string path)
    {
        var before = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            using var model = OnnxModel.Open(path);
            foreach (var tensor in model.Tensors)
            {
                if (tensor.DataType == OnnxDataType.String)
                {
                    _ = tensor.ReadStrings();
                }
                else
                {
                    _ = tensor.ReadRawBytes();
                }
            }

            return (null, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        catch (Exception e)
        {
            return (e, GC.GetAllocatedBytesForCurrentThread() - before);
        }
    }
}
