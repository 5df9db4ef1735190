using System.CommandLine;
using System.Globalization;
using Recycling.MLNet.Certificates;
using Spectre.Console;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle certify`: datasets as test certificates (minimum accuracy, maximum forgetting against each ingredient).</summary>
internal static class CertifyCommand
{
    /// <summary>Exit code when a certificate fails (1 is an error in the input).</summary>
    public const int FailedExitCode = 2;

    internal static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The (merged) ONNX model to certify." };
        var certificates = new Option<string>("--certificates", "-c")
        {
            Description = "JSON file: {\"ingredients\": [\"ft1.onnx\", ...], \"certificates\": [{\"name\", \"data\", \"minAccuracy\", \"maxForgetting\"}]}; paths relative to it.",
            Required = true,
        };
        var outputName = new Option<string>("--output-name") { Description = "The model output holding class scores.", DefaultValueFactory = _ => "logits" };
        var device = DeviceOption();
        var batch = BatchOption();
        var json = JsonOption();
        var command = new Command("certify", "Check a model against certificate datasets; exits 2 when any certificate fails.")
        {
            Arguments = { model },
            Options = { certificates, outputName, device, batch, json },
        };
        command.SetAction(parseResult =>
        {
            var modelPath = Model(parseResult.GetValue(model)!);
            var set = CertificateSet.Load(parseResult.GetValue(certificates)!);
            bool asJson = parseResult.GetValue(json);
            var results = WithStatus(asJson, "certifying", _ =>
                Certifier.Run(modelPath, set, Scoring(parseResult, device, batch), parseResult.GetValue(outputName)!));
            var stdout = parseResult.InvocationConfiguration.Output;
            bool passed = results.All(r => r.Passed);
            if (asJson)
            {
                WriteJson(parseResult, new
                {
                    model = Path.GetFullPath(modelPath),
                    passed,
                    certificates = results.Select(r => new
                    {
                        name = r.Certificate.Name,
                        data = r.Certificate.Data,
                        samples = r.Samples,
                        accuracy = r.Accuracy,
                        minAccuracy = r.Certificate.MinAccuracy,
                        maxForgetting = r.Certificate.MaxForgetting,
                        forgetting = r.Forgetting,
                        passed = r.Passed,
                        failures = r.Failures,
                    }),
                });
                return passed ? 0 : FailedExitCode;
            }

            var console = Terminal(stdout);
            var table = new Table().AddColumns("certificate", "samples", "accuracy", "minimum", "worst forgetting", "result");
            foreach (var r in results)
            {
                var worst = r.Forgetting.Count == 0 ? "" : Pct(r.Forgetting.Max(f => f.Forgetting)) + $" (max {Pct(r.Certificate.MaxForgetting ?? 0)})";
                table.AddRow(Cell(r.Certificate.Name), r.Samples.ToString(CultureInfo.InvariantCulture), Pct(r.Accuracy),
                    r.Certificate.MinAccuracy is { } m ? Pct(m) : "", worst, r.Passed ? "pass" : "FAIL: " + Cell(string.Join("; ", r.Failures)));
            }

            Tables.Write(console, table);
            console.WriteLine(passed ? "all certificates pass" : $"{results.Count(r => !r.Passed)} of {results.Count} certificates fail");
            return passed ? 0 : FailedExitCode;
        });
        return command;
    }
}
