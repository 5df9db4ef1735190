using System.Text;
using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Onnx.IO;

namespace Recycling.Training.Foundation;

/// <summary>
/// The splits of a text zoo: SOURCE/data/SPLIT.tsv.gz (header, then one row per sample, in an order where the first
/// N rows are a random subset), cut to the rows a build uses and written uncompressed as TARGET/SPLIT.tsv.
/// </summary>
internal static class TextZooData
{
    public static string ShippedFile(string source, string split) => Path.Combine(source, "data", $"{split}.tsv.gz");

    /// <summary>Writes the first <c>counts[split]</c> rows of each split (a file left as it is when its content is already right); returns split → file.</summary>
    public static Dictionary<string, string> Materialise(IReadOnlyDictionary<string, int> counts, string source, string target)
    {
        Directory.CreateDirectory(target);
        var files = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (split, count) in counts)
        {
            var shipped = ShippedFile(source, split);
            var text = new StringBuilder();
            using (var reader = DatasetLoader.OpenText(shipped))
            {
                var header = reader.ReadLine() ?? throw new RecyclingException($"{MessageText.Path(shipped)}: empty");
                text.Append(header).Append('\n');
                for (var row = 0; row < count; row++)
                {
                    var line = reader.ReadLine();
                    if (string.IsNullOrEmpty(line))
                    {
                        throw new RecyclingException($"{MessageText.Path(shipped)}: {row} rows, the build needs {count}");
                    }

                    text.Append(line).Append('\n');
                }
            }

            var file = Path.Combine(target, $"{split}.tsv");
            var content = text.ToString();
            if (!File.Exists(file) || File.ReadAllText(file) != content)
            {
                OutputFile.WriteAllText(file, content);
            }

            files[split] = file;
        }

        return files;
    }
}
