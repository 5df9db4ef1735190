using System.CommandLine;
using Recycling.Onnx;
using Recycling.Onnx.IO;

namespace Recycling.Cli.Commands;

/// <summary>
/// `-o/--output` of a command that reports results (interpolate, diversity): a file whose extension picks the format
/// (.csv, .png or .json), or a folder that receives all three under the command's name (created when missing, as
/// demo's report folder is). The older --csv and --plot options stay as hidden aliases for the CSV and the PNG.
/// </summary>
internal sealed record ReportOutput(string? Csv, string? Png, string? Json)
{
    /// <summary>Where a folder given to -o is created before writing (null: no folder given).</summary>
    public string? Folder { get; private init; }

    internal static Option<string?> Option(string what) => new("--output", "-o")
    {
        Description = $"Write {what}: a .csv, .png or .json file (the extension picks the format), or a folder that receives all three.",
        HelpName = "file|folder",
    };

    /// <summary>
    /// Resolves -o (and the legacy --csv/--plot) into the files to write, each checked now, before the command's long work:
    /// an input named as an output, an unwritable path or a file where a folder is wanted is one line naming the option.
    /// </summary>
    internal static ReportOutput Prepare(ParseResult parseResult, Option<string?> output, Option<string?> csv, Option<string?> plot, InputFiles inputs, string stem)
    {
        (string? Path, string Option) csvPath = (parseResult.GetValue(csv), csv.Name);
        (string? Path, string Option) pngPath = (parseResult.GetValue(plot), plot.Name);
        (string? Path, string Option) jsonPath = (null, output.Name);
        string? folder = null;
        if (parseResult.GetValue(output) is { } path)
        {
            var extension = Path.GetExtension(path).ToLowerInvariant();
            bool isFolder = Directory.Exists(path);
            if (!isFolder && extension == ".csv")
            {
                csvPath = (path, output.Name);
            }
            else if (!isFolder && extension == ".png")
            {
                pngPath = (path, output.Name);
            }
            else if (!isFolder && extension == ".json")
            {
                jsonPath = (path, output.Name);
            }
            else if (!isFolder && extension.Length > 0)
            {
                throw new RecyclingException($"{output.Name} {MessageText.Path(path)}: give a .csv, .png or .json file, or a folder (a name without extension)");
            }
            else
            {
                folder = CommandSupport.OutputFolder(path, output.Name);
                csvPath = (Path.Combine(folder, stem + ".csv"), output.Name);
                pngPath = (Path.Combine(folder, stem + ".png"), output.Name);
                jsonPath = (Path.Combine(folder, stem + ".json"), output.Name);
            }
        }

        foreach (var (file, option) in new[] { csvPath, pngPath, jsonPath })
        {
            if (file is not null)
            {
                OutputFile.Prepare(file, inputs, option, createFolder: folder is not null);
            }
        }

        return new ReportOutput(csvPath.Path, pngPath.Path, jsonPath.Path) { Folder = folder };
    }

    /// <summary>The file beside <see cref="Csv"/> for a second table (e.g. diversity's disagreement matrix).</summary>
    internal string? CsvBeside(string suffix) => Csv is null ? null : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(Csv))!, Path.GetFileNameWithoutExtension(Csv) + suffix + ".csv");

    /// <summary>Creates the folder given to -o (after the long work, so a failed run leaves nothing behind).</summary>
    internal void CreateFolder()
    {
        if (Folder is not null)
        {
            Directory.CreateDirectory(Folder);
        }
    }

    /// <summary>Writes <paramref name="document"/> in the one JSON style when a JSON file was asked for.</summary>
    internal void WriteJson(object document)
    {
        if (Json is not null)
        {
            OutputFile.WriteAllText(Json, JsonStyle.Serialize(document) + "\n");
        }
    }
}
