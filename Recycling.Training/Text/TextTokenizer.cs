using Microsoft.ML.Tokenizers;
using Recycling.Onnx;

namespace Recycling.Training;

/// <summary>
/// BERT tokenisation (<see cref="BasicTokenizer"/>, then WordPiece by Microsoft.ML.Tokenizers' BertTokenizer) of a text or a text
/// pair into [CLS] a [SEP] (b [SEP]) with token type ids 0 for the first segment and 1 for the second, truncated to a
/// maximum length the way Hugging Face's "longest_first" does: one token at a time from the longer text.
/// </summary>
internal sealed class TextTokenizer
{
    private readonly BertTokenizer _tokenizer;

    private TextTokenizer(BertTokenizer tokenizer, string vocab, bool uncased, int maxLength)
    {
        _tokenizer = tokenizer;
        Vocab = vocab;
        Uncased = uncased;
        MaxLength = maxLength;
    }

    public string Vocab { get; }

    public bool Uncased { get; }

    public int MaxLength { get; }

    /// <summary>Reads <paramref name="vocab"/> (one token per line, the id is the line number).</summary>
    public static TextTokenizer Load(string vocab, bool? uncased, int maxLength)
    {
        if (maxLength is < 4 or > 65536)
        {
            throw new RecyclingException($"--max-length {maxLength}: must be between 4 and 65536");
        }

        Onnx.IO.InputFile.RequireRegular(vocab);
        string[] lines;
        try
        {
            lines = File.ReadAllLines(vocab);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecyclingException($"{MessageText.Path(vocab)}: cannot read the vocabulary ({e.Message})", e);
        }

        var tokens = lines.Select(l => l.TrimEnd('\r')).ToHashSet(StringComparer.Ordinal);
        foreach (var special in new[] { "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]" })
        {
            if (!tokens.Contains(special))
            {
                throw new RecyclingException($"{MessageText.Path(vocab)}: not a BERT WordPiece vocabulary (no {special} line among {lines.Length})");
            }
        }

        // Uncased vocabularies (bert-base-uncased, MiniLM) hold no upper-case letter outside the [SPECIAL] tokens.
        var lower = uncased ?? !tokens.Any(t => !(t.StartsWith('[') && t.EndsWith(']')) && t.ToLowerInvariant() != t);
        BertTokenizer tokenizer;
        try
        {
            tokenizer = BertTokenizer.Create(vocab, new BertOptions { LowerCaseBeforeTokenization = false, ApplyBasicTokenization = false });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or IOException)
        {
            throw new RecyclingException($"{MessageText.Path(vocab)}: not a readable WordPiece vocabulary ({e.Message})", e);
        }

        return new TextTokenizer(tokenizer, vocab, lower, maxLength);
    }

    public int PadId => _tokenizer.PaddingTokenId;

    /// <summary>WordPiece ids without special tokens: BERT's basic tokenisation here, WordPiece by BertTokenizer word by word.</summary>
    private List<int> Pieces(string text)
    {
        var ids = new List<int>();
        foreach (var word in BasicTokenizer.Words(text, Uncased))
        {
            ids.AddRange(word.Length > MaxWordChars
                ? [_tokenizer.UnknownTokenId]
                : _tokenizer.EncodeToIds(word, addSpecialTokens: false, considerPreTokenization: false, considerNormalization: false));
        }

        return ids;
    }

    /// <summary>Longer words are [UNK] (BERT's max_input_chars_per_word).</summary>
    private const int MaxWordChars = 100;

    /// <summary>The ids of one sample and its token type ids, at most <see cref="MaxLength"/> long.</summary>
    public (int[] Ids, int[] TypeIds) Encode(string text, string? pair)
    {
        var a = Pieces(text);
        var b = pair is null ? null : Pieces(pair);
        var room = MaxLength - (b is null ? 2 : 3);
        while (a.Count + (b?.Count ?? 0) > room)
        {
            if (b is null || a.Count > b.Count)
            {
                a.RemoveAt(a.Count - 1);
            }
            else
            {
                b.RemoveAt(b.Count - 1);
            }
        }

        var ids = new List<int>(MaxLength) { _tokenizer.ClassificationTokenId };
        ids.AddRange(a);
        ids.Add(_tokenizer.SeparatorTokenId);
        var first = ids.Count;
        if (b is not null)
        {
            ids.AddRange(b);
            ids.Add(_tokenizer.SeparatorTokenId);
        }

        var types = new int[ids.Count];
        types.AsSpan(first).Fill(1);
        return ([.. ids], types);
    }
}
