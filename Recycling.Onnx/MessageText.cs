using System.Globalization;
using System.Text;

namespace Recycling.Onnx;

/// <summary>
/// How error messages show paths and other user-supplied text: always on one line (control characters escaped), and a
/// path quoted when it holds anything a reader could mistake for the message around it.
/// </summary>
internal static class MessageText
{
    /// <summary>The path as a message shows it: bare when it is plain, else in single quotes with \n, \t, \', \xNN escapes (backslashes kept as they are).</summary>
    public static string Path(string? path)
    {
        if (string.IsNullOrEmpty(path))
        {
            return "''";
        }

        return path.All(IsPlain) ? path : "'" + Escape(path, quote: true) + "'";
    }

    /// <summary>Escapes control characters (and line or paragraph separators) so that the text stays on one line.</summary>
    public static string OneLine(string text) => text.Any(NeedsEscape) ? Escape(text, quote: false) : text;

    /// <summary>A count and its noun, singular for one: "1 target", "3 targets" (the plural <paramref name="noun"/> + "s" unless given).</summary>
    public static string Count(int count, string noun, string? plural = null) =>
        count.ToString(CultureInfo.InvariantCulture) + " " + (count == 1 ? noun : plural ?? noun + "s");

    /// <summary>
    /// A multi-line message from a native library (ONNX Runtime's "[ErrorCode:...] ... \n index: 1 Got: 3 Expected: 4\n
    /// Please fix either the inputs/the model.") as one line: its lines joined with "; ", the boilerplate dropped.
    /// </summary>
    public static string Joined(string message, int maxLength = 400)
    {
        var lines = message.Split(['\n', '\r'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => !l.StartsWith("Please fix either the inputs", StringComparison.Ordinal));
        var text = OneLine(string.Join("; ", lines));
        return text.Length > maxLength ? text[..maxLength] + "..." : text;
    }

    private static bool IsPlain(char c) => char.IsAsciiLetterOrDigit(c) || c is '/' or '\\' or '.' or '_' or '-' or '+' or '~' or ',' or '@' or '=' or '%' or (>= '\u00a0' and not '\u2028' and not '\u2029');

    private static bool NeedsEscape(char c) => char.IsControl(c) || c is '\u2028' or '\u2029' or '\u0085';

    private static string Escape(string text, bool quote)
    {
        var escaped = new StringBuilder(text.Length + 8);
        foreach (var c in text)
        {
            escaped.Append(c switch
            {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\'' when quote => "\\'",
                _ when NeedsEscape(c) => c <= '\xff' ? "\\x" + ((int)c).ToString("x2", CultureInfo.InvariantCulture) : "\\u" + ((int)c).ToString("x4", CultureInfo.InvariantCulture),
                _ => c.ToString(),
            });
        }

        return escaped.ToString();
    }
}
