using Recycling.MLNet.Data;
using Recycling.Onnx;

namespace Recycling.Training;

/// <summary>
/// Loads the labelled data a model is trained or measured on: text (tokenised with the model's vocabulary) for a model
/// that takes token ids, else anything <see cref="DatasetLoader.Load"/> reads.
/// </summary>
internal sealed class TrainingData
{
    private readonly TextTokenizer? _tokenizer;
    private readonly TextDataOptions _text;

    private TrainingData(TextTokenizer? tokenizer, TextDataOptions text)
    {
        _tokenizer = tokenizer;
        _text = text;
    }

    /// <param name="text">Null: the defaults for a text model; set for a model without token inputs: an error.</param>
    public static TrainingData For(OnnxProgram program, string modelPath, TextDataOptions? text)
    {
        if (!BatchFeeder.TakesTokens(program))
        {
            return text is null ? new TrainingData(null, new TextDataOptions())
                : throw new RecyclingException($"{MessageText.Path(modelPath)}: takes no token ids (inputs {string.Join(", ", program.Inputs.Select(i => $"{i.Name} {i.Type}"))}); the text options (--vocab, --max-length, --uncased, columns) apply to text models");
        }

        text ??= new TextDataOptions();
        var vocab = text.Vocab ?? FindVocabulary(modelPath);
        return new TrainingData(TextTokenizer.Load(vocab, text.Uncased, text.MaxLength), text);
    }

    public Dataset Load(string path) => _tokenizer is null ? DatasetLoader.Load(path) : TextDataset.Load(path, _tokenizer, _text);

    /// <summary>vocab.txt beside the model, else the vocabulary of the foundation model it is (by SHA-256).</summary>
    private static string FindVocabulary(string modelPath)
    {
        var beside = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelPath))!, "vocab.txt");
        if (File.Exists(beside))
        {
            return beside;
        }

        return FoundationModels.VocabularyOf(modelPath)
            ?? throw new RecyclingException($"{MessageText.Path(modelPath)}: a text model needs its WordPiece vocabulary: give --vocab vocab.txt (there is no vocab.txt beside the model)");
    }
}
