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
    public static TrainingData For(OnnxModel model, TextDataOptions? text)
    {
        if (!TakesTokens(model))
        {
            var graph = model.Proto.Graph;
            var inputs = graph.Input.Where(i => !graph.Initializer.Any(w => w.Name == i.Name)).ToList();
            return text is null ? new TrainingData(null, new TextDataOptions())
                : throw new RecyclingException($"{MessageText.Path(model.Path)}: takes no token ids (inputs {string.Join(", ", inputs.Select(i => i.Name))}); the text options (--vocab, --max-length, --uncased, columns) apply to text models");
        }

        text ??= new TextDataOptions();
        var vocab = text.Vocab ?? FindVocabulary(model.Path);
        return new TrainingData(TextTokenizer.Load(vocab, text.Uncased, text.MaxLength), text);
    }

    /// <summary>A text model: one taking integer (int64 or int32) graph inputs; initializers listed as inputs (IR &lt; 4) are not fed.</summary>
    public static bool TakesTokens(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var graph = model.Proto.Graph;
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        return graph.Input.Any(i => !initializers.Contains(i.Name) && i.Type?.TensorType?.ElemType is 6 or 7);
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
