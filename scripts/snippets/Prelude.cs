// What the documentation's C# examples take as given, for scripts/check-install.sh: `data`, an IDataView with an
// "input" vector column (the zoo's validation images, shaped as the CNN's input).
using Microsoft.ML;
using Microsoft.ML.Data;
using Recycling.MLNet.Data;

internal static partial class Snippets
{
    private static IDataView data
    {
        get
        {
            var val = ModelZoo.Open("models/zoo.json").Split("val");
            var rows = Enumerable.Range(0, 64).Select(i => new ImageRow { Input = val.Sample(i).ToArray() });
            return new MLContext(seed: 1).Data.LoadFromEnumerable(rows);
        }
    }

    private sealed class ImageRow
    {
        [VectorType(1, 28, 28)]
        [ColumnName("input")]
        public float[] Input { get; set; } = [];
    }
}
