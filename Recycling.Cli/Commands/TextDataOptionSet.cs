using System.CommandLine;
using Recycling.Training;

namespace Recycling.Cli.Commands;

/// <summary>The options of `finetune` and `fisher` that say how text data are tokenised for a model taking token ids.</summary>
internal sealed class TextDataOptionSet
{
    private readonly Option<string?> _vocab = new("--vocab") { Description = "Text models: the WordPiece vocab.txt (default: vocab.txt beside the model, or the fetched vocabulary of a zoo model)." };
    private readonly Option<int?> _maxLength = new("--max-length") { Description = "Text models: tokens per sample with [CLS]/[SEP], longer texts truncated (default 128)." };
    private readonly Option<bool?> _uncased = new("--uncased") { Description = "Text models: lowercase and strip accents (true/false; default: when the vocabulary has no upper-case token)." };
    private readonly Option<string?> _textColumn = new("--text-column") { Description = "Text models: the text column (default: text, sentence or sentence1)." };
    private readonly Option<string?> _pairColumn = new("--pair-column") { Description = "Text models: the second text of a pair (default: sentence2 or text_pair when present)." };
    private readonly Option<string?> _labelColumn = new("--label-column") { Description = "CSV/TSV/JSONL data: the class-index column, by header name (default: label, any case; numeric CSV without a header: the first column) or, for numeric data, 0-based index." };

    /// <summary>Appended to the --data description.</summary>
    public const string DataNote = " For a model taking token ids (BERT-style): a .csv, .tsv or .jsonl file whose header names a text column, an optional pair column and an integer label column.";

    public IEnumerable<Option> All => [_vocab, _maxLength, _uncased, _textColumn, _pairColumn, _labelColumn];

    /// <summary>Whether an option that only text models take (all but --label-column) was given.</summary>
    public bool TokenOptionsGiven(ParseResult parseResult) =>
        All.Where(o => o != _labelColumn).Any(o => parseResult.GetResult(o) is { Implicit: false });

    public string? LabelColumn(ParseResult parseResult) => parseResult.GetValue(_labelColumn);

    /// <summary>Null when no text option was given (the model decides whether its data are text).</summary>
    public TextDataOptions? Read(ParseResult parseResult)
    {
        if (!All.Any(o => parseResult.GetResult(o) is { Implicit: false }))
        {
            return null;
        }

        var options = new TextDataOptions
        {
            Vocab = parseResult.GetValue(_vocab),
            Uncased = parseResult.GetValue(_uncased),
            TextColumn = parseResult.GetValue(_textColumn),
            PairColumn = parseResult.GetValue(_pairColumn),
            LabelColumn = parseResult.GetValue(_labelColumn),
        };
        return parseResult.GetValue(_maxLength) is { } n ? options with { MaxLength = n } : options;
    }
}
