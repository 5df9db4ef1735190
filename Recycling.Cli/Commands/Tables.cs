using System.Text;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Recycling.Cli.Commands;

/// <summary>
/// Writes the commands' tables readable at any width: as a grid when it fits the console, otherwise one block per
/// row ("header: value" lines, long values wrapped at word breaks), so headers are never cut to "cnn_ta…" and cells
/// never wrapped into columns of three letters.
/// </summary>
internal static class Tables
{
    /// <param name="headers">Names for the columns in the block layout, when the grid's headers are abbreviations (e.g. diversity's numbered columns).</param>
    internal static void Write(IAnsiConsole console, Table table, IReadOnlyList<string>? headers = null)
    {
        int width = console.Profile.Width;
        if (NaturalWidth(table) <= width)
        {
            console.Write(table);
            return;
        }

        var options = RenderOptions.Create(console);
        var names = headers ?? [.. table.Columns.Select(c => Plain(c.Header, options))];
        var text = new StringBuilder();
        if (table.Title is { } title)
        {
            text.AppendLine(Markup.Remove(title.Text));
        }

        int labelWidth = names.Skip(1).Select(n => n.Length).DefaultIfEmpty(0).Max();
        foreach (var row in table.Rows)
        {
            var cells = row.Select(c => Plain(c, options)).ToList();
            text.AppendLine();
            Wrap(text, names.Count > 0 && names[0].Length > 0 ? $"{names[0]}: {cells[0]}" : cells[0], "", width);
            for (int i = 1; i < cells.Count && i < names.Count; i++)
            {
                if (cells[i].Length > 0)
                {
                    Wrap(text, cells[i], "  " + names[i].PadRight(labelWidth) + "  ", width);
                }
            }
        }

        if (table.Caption is { } caption)
        {
            text.AppendLine();
            text.AppendLine(Markup.Remove(caption.Text));
        }

        console.Write(new Text(text.ToString()));
    }

    /// <summary>The width the grid takes unwrapped: its longest line rendered on a console wider than any table.</summary>
    internal static int NaturalWidth(Table table)
    {
        var buffer = new StringWriter();
        var wide = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(buffer),
        });
        wide.Profile.Width = CommandSupport.UnwrappedWidth;
        wide.Write(table);
        return buffer.ToString().Split('\n').Max(line => line.TrimEnd('\r').Length);
    }

    /// <summary>Appends <paramref name="value"/> after <paramref name="label"/>, broken at spaces to fit <paramref name="width"/>; continuation lines are indented under the value (or by 4 when the label takes most of the width).</summary>
    private static void Wrap(StringBuilder text, string value, string label, int width)
    {
        var indent = label.Length <= width * 3 / 5 ? label.Length : 4;
        if (label.Length > width * 3 / 5)
        {
            text.AppendLine(label.TrimEnd());
            label = new string(' ', indent);
        }

        var line = new StringBuilder(label);
        bool empty = true;
        foreach (var word in value.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!empty && line.Length + 1 + word.Length > width)
            {
                text.AppendLine(line.ToString());
                line.Clear().Append(' ', indent);
                empty = true;
            }

            line.Append(empty ? "" : " ").Append(word);
            empty = false;
        }

        text.AppendLine(line.ToString());
    }

    /// <summary>The text of a cell or header without markup, on one line.</summary>
    private static string Plain(IRenderable renderable, RenderOptions options) =>
        string.Join(" ", string.Concat(renderable.Render(options, CommandSupport.UnwrappedWidth).Select(s => s.IsLineBreak ? "\n" : s.Text))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
}
