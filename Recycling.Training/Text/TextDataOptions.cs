namespace Recycling.Training;

/// <summary>
/// How labelled text (CSV, TSV or JSONL with a header naming the columns) is read and tokenised for a BERT-style
/// model (inputs input_ids, attention_mask and optionally token_type_ids).
/// </summary>
public sealed record TextDataOptions
{
    /// <summary>The WordPiece vocabulary (vocab.txt); null: vocab.txt beside the model.</summary>
    public string? Vocab { get; init; }

    /// <summary>Tokens per sample, [CLS] and [SEP] included; longer texts are truncated (the longest of a pair first).</summary>
    public int MaxLength { get; init; } = 128;

    /// <summary>Lowercase (and strip accents) before WordPiece; null: when the vocabulary has no upper-case token.</summary>
    public bool? Uncased { get; init; }

    /// <summary>The text column; null: text, sentence or sentence1, whichever the header has.</summary>
    public string? TextColumn { get; init; }

    /// <summary>The second text of a pair; null: sentence2 or text_pair when the header has it, else single texts.</summary>
    public string? PairColumn { get; init; }

    /// <summary>The class-index column; null: label.</summary>
    public string? LabelColumn { get; init; }
}
