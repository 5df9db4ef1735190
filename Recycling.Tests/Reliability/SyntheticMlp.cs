using Google.Protobuf;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Reliability;

/// <summary>
/// A base MLP (Gemm + Relu layers of width × width) and fine-tunings of it (the base plus small seeded noise), written
/// with the generated proto classes: inputs large enough for a merge to take a moment and for tensors to span several
/// parallel chunks of the CPU kernels.
/// </summary>
internal static class SyntheticMlp
{
    /// <summary>Writes base.onnx and ft1.onnx .. ft{fineTunings}.onnx into <paramref name="folder"/>; returns their paths, base first.</summary>
    public static string[] Write(string folder, int layers, int width, int fineTunings)
    {
        Directory.CreateDirectory(folder);
        var baseWeights = Enumerable.Range(0, layers).Select(l => Values(width * width + width, seed: 1000 + l, scale: 0.05f)).ToArray();
        var paths = new List<string> { Save(folder, "base", baseWeights, width) };
        for (var f = 1; f <= fineTunings; f++)
        {
            var tuned = baseWeights.Select((w, l) =>
            {
                var noise = Values(w.Length, seed: (f * 100) + l, scale: 0.01f);
                return w.Select((v, i) => v + noise[i]).ToArray();
            }).ToArray();
            paths.Add(Save(folder, $"ft{f}", tuned, width));
        }

        return [.. paths];
    }

    private static float[] Values(int count, int seed, float scale)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (var i = 0; i < count; i++)
        {
            values[i] = (float)(random.NextDouble() * 2 - 1) * scale;
        }

        return values;
    }

    private static string Save(string folder, string name, float[][] layers, int width)
    {
        var graph = new GraphProto { Name = "mlp" };
        graph.Input.Add(ModelProtos.FloatRow("x", width));
        var current = "x";
        for (var l = 0; l < layers.Length; l++)
        {
            var weight = layers[l].AsSpan(0, width * width);
            var bias = layers[l].AsSpan(width * width, width);
            graph.Initializer.Add(ModelProtos.FloatTensor($"layer{l}.weight", weight, width, width));
            graph.Initializer.Add(ModelProtos.FloatTensor($"layer{l}.bias", bias, width));
            var gemm = $"gemm{l}";
            graph.Node.Add(new NodeProto
            {
                OpType = "Gemm",
                Name = $"Gemm_{l}",
                Input = { current, $"layer{l}.weight", $"layer{l}.bias" },
                Output = { gemm },
                Attribute = { new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 } },
            });
            current = gemm;
            if (l < layers.Length - 1)
            {
                graph.Node.Add(new NodeProto { OpType = "Relu", Name = $"Relu_{l}", Input = { gemm }, Output = { $"relu{l}" } });
                current = $"relu{l}";
            }
        }

        graph.Output.Add(ModelProtos.FloatRow(current, width));
        var model = new ModelProto { IrVersion = 8, ProducerName = "synthetic-mlp", OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
        var path = Path.Combine(folder, name + ".onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }
}
