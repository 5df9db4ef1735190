using System.CommandLine;
using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Training;

namespace Recycling.Cli.Commands;

/// <summary>
/// The one declaration of how labelled data are read for a model, shared by every command that scores, trains on or
/// computes a Fisher from labelled data (eval, probe, finetune, fisher ...): image preprocessing (--resize, --channels,
/// --normalize), the tokenisation of text for a text model (<see cref="TextDataOptionSet"/>), and one --label-column
/// for CSV/TSV/JSONL data of either kind.
/// </summary>
internal sealed class DataOptionSet
{
    private readonly TextDataOptionSet _text = new();
    private readonly Option<string?> _resize = new("--resize") { Description = "Image models: HxW, resize images bilinearly (as torch F.interpolate, align_corners=False)." };
    private readonly Option<int?> _channels = new("--channels") { Description = "Image models: copy grey images to this many channels (automatic: 3 when the model's input declares 3 channels)." };
    private readonly Option<string[]> _normalize;
    private readonly string[] _otherNormalizations;

    /// <param name="otherNormalizations">Values --normalize also takes for the command's own use (probe's feature
    /// normalisations); any other value is an image normalisation.</param>
    /// <param name="otherDescription">What those values mean, for the help.</param>
    public DataOptionSet(string[]? otherNormalizations = null, string? otherDescription = null)
    {
        _otherNormalizations = otherNormalizations ?? [];
        const string image = "Image models: imagenet or MEANS:STDS per channel, e.g. 0.5,0.5,0.5:0.5,0.5,0.5: (x - mean) / std after resizing.";
        _normalize = new Option<string[]>("--normalize")
        {
            Description = otherDescription is null ? image : $"{image} {otherDescription} Repeat --normalize to give both.",
            Arity = ArgumentArity.ZeroOrMore,
        };
    }

    /// <summary>Appended to the --data description.</summary>
    public const string DataNote = TextDataOptionSet.DataNote;

    public IEnumerable<Option> All => [_resize, _channels, _normalize, .. _text.All];

    public void AddTo(Command command)
    {
        foreach (var option in All)
        {
            command.Options.Add(option);
        }
    }

    /// <summary>The --normalize value among the command's own values, or null.</summary>
    public string? OtherNormalization(ParseResult parseResult)
    {
        var own = Normalizations(parseResult).Where(v => _otherNormalizations.Contains(v.ToLowerInvariant())).ToList();
        return own.Count switch
        {
            0 => null,
            1 => own[0],
            _ => throw new RecyclingException($"--normalize: {string.Join(" and ", own)} both given; choose one"),
        };
    }

    /// <summary>
    /// How data are read for <paramref name="model"/> (with the other models of a command, exports of one base): a text
    /// model (token-id inputs) reads text files tokenised with its vocabulary; any other model reads what
    /// <see cref="DatasetLoader"/> reads, preprocessed as asked (grey images copied to 3 channels when its input takes 3).
    /// </summary>
    public Func<string, Dataset> Reader(ParseResult parseResult, string model)
    {
        var label = _text.LabelColumn(parseResult);
        var images = Preprocessing(parseResult);
        using var onnx = OnnxModel.Open(model);
        if (TrainingData.TakesTokens(onnx))
        {
            if (images is not null)
            {
                throw new RecyclingException($"{MessageText.Path(model)}: a text model (it takes token ids); --resize, --channels and --normalize apply to image models");
            }

            var text = (_text.Read(parseResult) ?? new TextDataOptions()) with { LabelColumn = label };
            var loader = TrainingData.For(onnx, text);
            return loader.Load;
        }

        if (_text.TokenOptionsGiven(parseResult))
        {
            // TrainingData names the model and its inputs.
            TrainingData.For(onnx, _text.Read(parseResult));
        }

        var inputs = ImagePreprocessing.InputDims(onnx);
        return spec =>
        {
            var data = DatasetLoader.Load(spec, new TextColumns { Label = label });
            var preprocessing = ImagePreprocessing.ForModel(inputs, data, images);
            return preprocessing is null ? data : preprocessing.Apply(data);
        };
    }

    private IEnumerable<string> Normalizations(ParseResult parseResult) => parseResult.GetValue(_normalize) ?? [];

    /// <summary>How text data are read for a text model (null: no text option given, the model decides), as
    /// `finetune` and `fisher` pass it on (<see cref="FineTuneOptions.Text"/>, <see cref="FisherOptions.Text"/>).</summary>
    public TextDataOptions? Text(ParseResult parseResult) => _text.Read(parseResult);

    /// <summary>The image preprocessing asked for (null: none given; grey data still go to 3 channels for a model that
    /// takes 3), as `finetune` and `fisher` apply it batch by batch and the scoring commands through <see cref="Reader"/>.</summary>
    public ImagePreprocessing? Preprocessing(ParseResult parseResult)
    {
        var image = Normalizations(parseResult).Where(v => !_otherNormalizations.Contains(v.ToLowerInvariant())).ToList();
        if (image.Count > 1)
        {
            throw new RecyclingException($"--normalize: {string.Join(" and ", image)}: give one image normalisation");
        }

        return ImagePreprocessing.Parse(parseResult.GetValue(_resize), parseResult.GetValue(_channels), image.SingleOrDefault());
    }
}
