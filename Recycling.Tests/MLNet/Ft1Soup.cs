using System.Runtime.InteropServices;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;
using Recycling.Onnx;

namespace Recycling.Tests.MLNet;

/// <summary>
/// Soups whose outcome is known, on real exports (the torch-merge CNN fixture, 3×16×16 inputs): random inputs labelled
/// by ft1's own predictions (so ft1 scores 100%), and a "broken" ft1 whose head bias sends every sample to a class ft1
/// never predicts on them (0%).
/// </summary>
internal static class Ft1Soup
{
    /// <summary>The torch-merge CNN fixture's folder (ft1.onnx, ft2.onnx, ft3.onnx).</summary>
    public static readonly string Folder = Path.GetFullPath(Path.Combine(Fixtures.Root, "torch-merge", "cnn", "default"));

    public static string Ft1 => Path.Combine(Folder, "ft1.onnx");

    /// <summary><paramref name="count"/> uniform random inputs in [-1, 1) (from <paramref name="seed"/>), labelled by ft1's predictions.</summary>
    public static Dataset LabelledByFt1(string name, int count, int seed)
    {
        var random = new Random(seed);
        var inputs = new float[count * 3 * 16 * 16];
        for (var i = 0; i < inputs.Length; i++)
        {
            inputs[i] = (float)((random.NextDouble() * 2) - 1);
        }

        using var scorer = OnnxScorer.Open(Ft1, new ScoringOptions { Threads = 1 });
        var labels = scorer.Run(new Dataset("random", inputs, [3, 16, 16], new int[count]), "logits").ArgMax();
        return new Dataset(name, inputs, [3, 16, 16], labels);
    }

    /// <summary>Writes ft1 with its head bias <paramref name="bias"/> on the first class ft1 never predicts on <paramref name="data"/>, 0 elsewhere.</summary>
    public static void WriteBroken(string path, Dataset data, float bias)
    {
        var unused = Enumerable.Range(0, 10).First(c => !data.Labels.Contains(c));
        using var model = OnnxModel.Open(Ft1);
        OnnxWriter.Write(model, path, replace: t =>
        {
            if (t.Name != "fc.bias")
            {
                return null;
            }

            var values = new float[10];
            values[unused] = bias;
            return new TensorReplacement(OnnxDataType.Float, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
        });
    }
}
