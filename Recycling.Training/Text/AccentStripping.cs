using System.Globalization;
using System.Text;

namespace Recycling.Training;

/// <summary>
/// Uncased BERT's accent stripping: canonical decomposition (NFD), then every non-spacing mark (Mn) dropped. The
/// decompositions come from accents.txt (made by scripts/training/make_accent_table.py from Python's Unicode data),
/// since string.Normalize needs ICU, which the toolkit does without (InvariantGlobalization); Hangul syllables
/// decompose by the Unicode formula.
/// </summary>
internal static class AccentStripping
{
    private static readonly Lazy<Dictionary<int, string>> Table = new(Load);

    public static string Strip(string text)
    {
        if (text.All(c => c < 0x80))
        {
            return text;
        }

        var table = Table.Value;
        var kept = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes())
        {
            if (table.TryGetValue(rune.Value, out var stripped))
            {
                kept.Append(stripped);
            }
            else if (rune.Value is >= 0xAC00 and <= 0xD7A3)
            {
                var s = rune.Value - 0xAC00;
                kept.Append((char)(0x1100 + (s / 588))).Append((char)(0x1161 + (s % 588 / 28)));
                if (s % 28 != 0)
                {
                    kept.Append((char)(0x11A7 + (s % 28)));
                }
            }
            else if (Rune.GetUnicodeCategory(rune) != UnicodeCategory.NonSpacingMark)
            {
                kept.Append(rune.ToString());
            }
        }

        return kept.ToString();
    }

    private static Dictionary<int, string> Load()
    {
        using var stream = typeof(AccentStripping).Assembly.GetManifestResourceStream("Recycling.Training.accents.txt")
            ?? throw new InvalidOperationException("the accents.txt resource is missing from Recycling.Training");
        using var reader = new StreamReader(stream);
        var table = new Dictionary<int, string>();
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.StartsWith('#') || line.Length == 0)
            {
                continue;
            }

            var points = line.Split(' ').Select(p => int.Parse(p, NumberStyles.HexNumber, CultureInfo.InvariantCulture)).ToArray();
            table[points[0]] = string.Concat(points.Skip(1).Select(p => char.ConvertFromUtf32(p)));
        }

        return table;
    }
}
