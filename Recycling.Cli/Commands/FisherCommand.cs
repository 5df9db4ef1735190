using System.CommandLine;
using Recycling.Onnx;
using Recycling.Training;
using static Recycling.Cli.Commands.CommandSupport;

namespace Recycling.Cli.Commands;

/// <summary>`recycle fisher`: the diagonal Fisher of an ONNX model on labelled data, as an .npz that `recycle merge --method fisher` reads.</summary>
internal static class FisherCommand
{
    internal static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The .onnx model." };
        var data = new Option<string>("--data", "-d") { Description = "Samples. " + DataDescription + DataOptionSet.DataNote, Required = true };
        var output = new Option<string>("--output", "-o") { Description = "The .npz written: one float32 array per trainable initializer.", Required = true };
        var samples = new Option<int?>("--samples") { Description = "Use the first N samples (default: all)." };
        var labels = new Option<string>("--labels") { Description = "sampled: y drawn from the model's prediction (the Fisher); true: the data's labels (empirical Fisher).", DefaultValueFactory = _ => "sampled" };
        var seed = new Option<int>("--seed") { Description = "Seed of the label draws.", DefaultValueFactory = _ => 0 };
        var outputName = new Option<string?>("--output-name") { Description = "The graph output read as logits (default: logits, else the only output)." };
        var device = TrainingDeviceOption();
        var command = new Command("fisher", "Diagonal Fisher of an ONNX model (mean squared per-sample gradient of log p(y|x)) for Fisher merging.")
        {
            Arguments = { model },
            Options = { data, output, samples, labels, seed, outputName, device },
        };
        var dataOptions = new DataOptionSet();
        dataOptions.AddTo(command);

        command.SetAction(parseResult =>
        {
            var chosen = ChosenTrainingDevice(parseResult, device);
            var options = new FisherOptions
            {
                Model = parseResult.GetValue(model)!,
                Data = parseResult.GetValue(data)!,
                Output = parseResult.GetValue(output)!,
                Samples = parseResult.GetValue(samples),
                Labels = parseResult.GetValue(labels)!.ToLowerInvariant() switch
                {
                    "sampled" => FisherLabels.Sampled,
                    "true" => FisherLabels.True,
                    var other => throw new RecyclingException($"--labels {other}: use sampled or true"),
                },
                Seed = parseResult.GetValue(seed),
                OutputName = parseResult.GetValue(outputName),
                Text = dataOptions.Text(parseResult),
                Preprocessing = dataOptions.Preprocessing(parseResult),
                Device = chosen,
            };
            var count = FisherFile.Compute(options);
            parseResult.InvocationConfiguration.Output.WriteLine($"{Path.GetFullPath(options.Output)}: diagonal Fisher of {MessageText.Count(count, "tensor")}");
            return 0;
        });
        return command;
    }
}
