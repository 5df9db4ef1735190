using System.Text;
using Microsoft.ML.OnnxRuntime;
using Recycling.Onnx;

namespace Recycling.Tests.Onnx;

/// <summary>
/// Round trip of the ONNX backend test corpus (Debian package libonnx-testdata): every model is read, rewritten
/// (embedded and with external data), read again and compared semantically; each rewritten model whose
/// test_data_set_0 ONNX Runtime can run must reproduce the stored outputs.
/// </summary>
[TestClass]
public sealed class BackendCorpusTests
{
    public const string CorpusRoot = "/usr/share/libonnx-testdata/data";

    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    public void EveryCorpusModelRoundTripsAndRewrittenModelsReproduceStoredOutputs()
    {
        if (!Directory.Exists(CorpusRoot))
        {
            Assert.Inconclusive($"{CorpusRoot} is missing: apt-get install libonnx-testdata (.ci/run does)");
        }

        var models = Directory.GetFiles(CorpusRoot, "model.onnx", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        Assert.IsGreaterThan(1000, models.Count, "the corpus should hold about 1,000 models");
        var failures = new List<string>();
        var skipped = new Dictionary<string, int>();
        int roundTripped = 0, ran = 0;
        var scratch = Directory.CreateTempSubdirectory("recycling-corpus-");
        try
        {
            foreach (var path in models)
            {
                var name = Path.GetRelativePath(CorpusRoot, Path.GetDirectoryName(path)!);
                try
                {
                    using var source = OnnxModel.Open(path);
                    var embedded = Path.Combine(scratch.FullName, name.Replace('/', '_') + ".onnx");
                    var external = Path.Combine(scratch.FullName, name.Replace('/', '_') + ".ext.onnx");
                    OnnxWriter.Write(source, embedded, new OnnxWriteOptions { ExternalData = ExternalDataMode.Embedded });
                    OnnxWriter.Write(source, external, new OnnxWriteOptions { ExternalData = ExternalDataMode.External, ExternalThreshold = 0 });
                    foreach (var rewritten in new[] { embedded, external })
                    {
                        using var again = OnnxModel.Open(rewritten);
                        var diff = ModelComparer.Difference(source, again);
                        if (diff is not null)
                        {
                            failures.Add($"{name} ({Path.GetFileName(rewritten)}): {diff}");
                        }
                    }

                    roundTripped++;
                    var outcome = RunTestData(path, external);
                    if (outcome.Failure is not null)
                    {
                        failures.Add($"{name}: {outcome.Failure}");
                    }
                    else if (outcome.SkipReason is not null)
                    {
                        skipped[outcome.SkipReason] = skipped.GetValueOrDefault(outcome.SkipReason) + 1;
                    }
                    else
                    {
                        ran++;
                    }
                }
                catch (Exception e) when (e is OnnxFormatException or RecyclingException or InvalidOperationException or ArgumentException)
                {
                    failures.Add($"{name}: {e.GetType().Name}: {e.Message}");
                }
            }
        }
        finally
        {
            scratch.Delete(recursive: true);
        }

        var report = new StringBuilder();
        report.AppendLine($"corpus models: {models.Count}; round-tripped (embedded and external data): {roundTripped}; rewritten model run by ONNX Runtime and matched stored outputs: {ran}");
        foreach (var (reason, count) in skipped.OrderByDescending(p => p.Value))
        {
            report.AppendLine($"  not run ({count}): {reason}");
        }

        report.AppendLine($"failures: {failures.Count}");
        foreach (var failure in failures.Take(40))
        {
            report.AppendLine($"  {failure}");
        }

        TestContext.WriteLine(report.ToString());
        Console.WriteLine(report.ToString());
        Assert.IsEmpty(failures, report.ToString());
        Assert.IsGreaterThan(700, ran, report.ToString());
    }

    private sealed record Outcome(string? Failure, string? SkipReason);

    /// <summary>Runs test_data_set_0 through the rewritten model; a model ONNX Runtime cannot load is skipped only if the original cannot be loaded either.</summary>
    private static Outcome RunTestData(string originalPath, string rewrittenPath)
    {
        var dataSet = Path.Combine(Path.GetDirectoryName(originalPath)!, "test_data_set_0");
        if (!Directory.Exists(dataSet))
        {
            return new Outcome(null, "no test_data_set_0");
        }

        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        InferenceSession session;
        try
        {
            session = new InferenceSession(rewrittenPath, options);
        }
        catch (OnnxRuntimeException rewrittenError)
        {
            try
            {
                using var original = new InferenceSession(originalPath, options);
            }
            catch (OnnxRuntimeException)
            {
                return new Outcome(null, "ONNX Runtime 1.31 cannot load the original model either (unsupported op, type or opset)");
            }

            return new Outcome($"original loads in ONNX Runtime but the rewritten model does not: {rewrittenError.Message}", null);
        }

        using (session)
        {
            var inputFiles = Directory.GetFiles(dataSet, "input_*.pb").OrderBy(f => int.Parse(Path.GetFileNameWithoutExtension(f)[6..], System.Globalization.CultureInfo.InvariantCulture)).ToList();
            var outputFiles = Directory.GetFiles(dataSet, "output_*.pb").OrderBy(f => int.Parse(Path.GetFileNameWithoutExtension(f)[7..], System.Globalization.CultureInfo.InvariantCulture)).ToList();
            var inputNames = session.InputNames;
            if (session.InputMetadata.Values.Any(m => !m.IsTensor) || session.OutputMetadata.Values.Any(m => !m.IsTensor))
            {
                return new Outcome(null, "sequence, map or optional inputs/outputs (not TensorProto test data)");
            }

            if (inputFiles.Count != inputNames.Count)
            {
                return new Outcome(null, "test data does not supply every graph input (optional inputs omitted)");
            }

            var owners = new List<IDisposable>();
            var inputFilesOpen = new List<OnnxTensorFile>();
            try
            {
                var inputs = new Dictionary<string, OrtValue>();
                for (var i = 0; i < inputFiles.Count; i++)
                {
                    var file = OnnxTensorFile.Open(inputFiles[i]);
                    inputFilesOpen.Add(file);
                    var (value, owner) = OrtTestValues.Create(file.Tensor);
                    owners.Add(owner);
                    inputs[inputNames[i]] = value;
                }

                IDisposableReadOnlyCollection<OrtValue> results;
                try
                {
                    using var runOptions = new RunOptions();
                    results = session.Run(runOptions, inputs.Keys.ToList(), [.. inputs.Values], session.OutputNames);
                }
                catch (OnnxRuntimeException e)
                {
                    return new Outcome(null, $"ONNX Runtime fails to run the stored inputs ({FirstWords(e.Message)})");
                }

                using (results)
                {
                    for (var i = 0; i < Math.Min(outputFiles.Count, results.Count); i++)
                    {
                        using var expected = OnnxTensorFile.Open(outputFiles[i]);
                        var diff = OrtTestValues.Compare(results[i], expected.Tensor);
                        if (diff is not null)
                        {
                            return VerifyAgainstOriginal(originalPath, inputs, results, diff);
                        }
                    }
                }

                return new Outcome(null, null);
            }
            finally
            {
                owners.ForEach(o => o.Dispose());
                inputFilesOpen.ForEach(f => f.Dispose());
            }
        }
    }

    /// <summary>When an output disagrees with the stored one, the rewrite is at fault only if the original model, run on
    /// the same inputs, gives a different result than the rewritten model.</summary>
    private static Outcome VerifyAgainstOriginal(string originalPath, Dictionary<string, OrtValue> inputs, IDisposableReadOnlyCollection<OrtValue> rewrittenResults, string diff)
    {
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var original = new InferenceSession(originalPath, options);
        using var runOptions = new RunOptions();
        using var results = original.Run(runOptions, inputs.Keys.ToList(), [.. inputs.Values], original.OutputNames);
        for (var i = 0; i < results.Count; i++)
        {
            if (!rewrittenResults[i].IsTensor || rewrittenResults[i].GetTensorTypeAndShape().ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.String)
            {
                continue;
            }

            if (!rewrittenResults[i].GetTensorDataAsSpan<byte>().SequenceEqual(results[i].GetTensorDataAsSpan<byte>()))
            {
                return new Outcome($"rewritten model's output {i} differs from the original model's ({diff})", null);
            }
        }

        return new Outcome(null, "ONNX Runtime's result differs from the stored output for the original model too");
    }

    private static string FirstWords(string message) => message.Length > 60 ? message[..60] : message;
}
