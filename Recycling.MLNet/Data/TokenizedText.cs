namespace Recycling.MLNet.Data;

/// <summary>
/// How tokenised text sits in a <see cref="Dataset"/>: each sample is [3, L], the rows token ids, attention mask and
/// token type ids, right-padded to L. A text model's inputs are fed from these rows by name.
/// </summary>
internal static class TokenizedText
{
    /// <summary>Rows of <see cref="Ids"/>, <see cref="Mask"/> and <see cref="TypeIds"/> in a sample.</summary>
    public const int Ids = 0, Mask = 1, TypeIds = 2, Rows = 3;

    /// <summary>The row that feeds a model input of this name (BERT's names), or null.</summary>
    public static int? RowOf(string inputName) => inputName switch
    {
        "input_ids" => Ids,
        "attention_mask" => Mask,
        "token_type_ids" => TypeIds,
        _ => null,
    };

    /// <summary>Whether <paramref name="data"/> holds samples of this layout.</summary>
    public static bool Holds(Dataset data) => data.SampleShape is [Rows, > 0];

    /// <summary>Tokens sample <paramref name="index"/> uses: one past its last non-zero mask value (at least 1).</summary>
    public static int Length(Dataset data, int index)
    {
        var width = data.SampleShape[1];
        var mask = data.Sample(index).Slice(Mask * width, width);
        return Math.Max(1, mask.LastIndexOfAnyExcept(0f) + 1);
    }
}
