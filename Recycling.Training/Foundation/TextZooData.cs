using System.Text;
using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Numpy;

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

    /// <summary>
    /// Writes each of <paramref name="splits"/> tokenised with <paramref name="model"/>'s vocabulary as PREFIX_images.npy
    /// (float32 [N, 3, L]: token ids, attention mask, token type ids) and PREFIX_labels.npy (int64), PREFIX the text
    /// file without ".tsv"; returns <paramref name="files"/> with those splits mapped to their prefixes.
    /// </summary>
    public static Dictionary<string, string> Tokenize(string model, TextDataOptions text, Dictionary<string, string> files, IEnumerable<string> splits)
    {
        using var onnx = OnnxModel.Open(model);
        var loader = TrainingData.For(onnx, text);
        var result = new Dictionary<string, string>(files, StringComparer.Ordinal);
        foreach (var split in splits.Distinct())
        {
            var data = loader.Load(files[split]);
            var prefix = Path.ChangeExtension(files[split], null);
            var images = NpyArray.From<float>(data.Values, [data.Count, .. data.SampleShape.Select(d => (long)d)]);
            var labels = NpyArray.From<long>([.. data.Labels.Select(l => (long)l)], data.Count);
            NpyFile.Write($"{prefix}_images.npy", images);
            NpyFile.Write($"{prefix}_labels.npy", labels);
            result[split] = prefix;
        }

        return result;
    }
}
