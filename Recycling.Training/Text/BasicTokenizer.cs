using System.Globalization;
using System.Text;

namespace Recycling.Training;

/// <summary>
/// BERT's basic tokenizer, the step before WordPiece, as Google's and Hugging Face's BertTokenizer do it: control
/// characters dropped, whitespace (tab, line breaks, Zs) separating words, CJK ideographs words of their own,
/// lowercasing with accents stripped when uncased, and every punctuation character (Unicode P*, and all ASCII
/// symbols such as $ + &lt; ^) a word of its own. Microsoft.ML.Tokenizers' own pre-tokenisation drops symbols that
/// are not P* ($, €, emoji) and joins words across tabs and line breaks, so it is used for WordPiece only.
/// </summary>
internal static class BasicTokenizer
{
    public static List<string> Words(string text, bool uncased)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        foreach (var rune in Clean(text).EnumerateRunes())
        {
            if (IsWhitespace(rune))
            {
                Flush();
            }
            else if (IsCjk(rune.Value))
            {
                Flush();
                words.Add(rune.ToString());
            }
            else
            {
                word.Append(rune.ToString());
            }
        }

        Flush();
        return words;

        void Flush()
        {
            if (word.Length == 0)
            {
                return;
            }

            var token = word.ToString();
            word.Clear();
            if (uncased)
            {
                token = AccentStripping.Strip(token.ToLowerInvariant());
            }

            var current = new StringBuilder();
            foreach (var rune in token.EnumerateRunes())
            {
                if (IsPunctuation(rune))
                {
                    if (current.Length > 0)
                    {
                        words.Add(current.ToString());
                        current.Clear();
                    }

                    words.Add(rune.ToString());
                }
                else
                {
                    current.Append(rune.ToString());
                }
            }

            if (current.Length > 0)
            {
                words.Add(current.ToString());
            }
        }
    }

    /// <summary>Drops NUL, U+FFFD and control/format characters (category C*) other than tab and line breaks.</summary>
    private static string Clean(string text)
    {
        var clean = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes())
        {
            var c = rune.Value;
            if (c is 0 or 0xFFFD || (c is not ('\t' or '\n' or '\r') && IsOther(Rune.GetUnicodeCategory(rune))))
            {
                continue;
            }

            clean.Append(rune.ToString());
        }

        return clean.ToString();
    }

    private static bool IsOther(UnicodeCategory category) => category is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
        or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;

    private static bool IsWhitespace(Rune rune) => rune.Value is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(rune) == UnicodeCategory.SpaceSeparator;

    private static bool IsPunctuation(Rune rune) =>
        rune.Value is (>= 33 and <= 47) or (>= 58 and <= 64) or (>= 91 and <= 96) or (>= 123 and <= 126)
        || Rune.GetUnicodeCategory(rune) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation
            or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

    private static bool IsCjk(int c) => c is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF) or (>= 0x20000 and <= 0x2A6DF) or (>= 0x2A700 and <= 0x2B73F)
        or (>= 0x2B740 and <= 0x2B81F) or (>= 0x2B820 and <= 0x2CEAF) or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);
}
