using Google.Protobuf;
using Recycling.Onnx.Proto;
using Recycling.Training;

namespace Recycling.Tests.Training;

/// <summary>
/// Text models for the tests: all-MiniLM-L6-v2 fetched once into a temporary cache, MiniLM with a classification
/// head (Gemm) on its pooled output '924', and a tiny bag-of-embeddings model without token_type_ids.
/// </summary>
internal static class TextModels
{
    private static readonly Lazy<(string Cache, FetchedModel MiniLm)> Fetched = new(() =>
    {
        var cache = Directory.CreateTempSubdirectory("recycling-text-cache-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Directory.Delete(cache, recursive: true);
        return (cache, FoundationModels.Fetch("minilm", cache));
    });

    public static FetchedModel MiniLm => Fetched.Value.MiniLm;

    public static string Vocabulary => MiniLm.Vocabulary!;

    public static readonly (string Text, int Label)[] Sentences =
    [
        ("I loved this film, it was wonderful.", 1),
        ("A terrible, boring movie.", 0),
        ("What a great performance by the whole cast!", 1),
        ("The plot made no sense and the acting was awful.", 0),
        ("An absolute delight from start to finish.", 1),
        ("I want my two hours back.", 0),
        ("Beautiful, moving and funny.", 1),
        ("Dull, predictable, and far too long.", 0),
    ];

    /// <summary>MiniLM whose graph output is "logits" = Gemm(pooled '924', head.weight, head.bias), vocab.txt beside it.</summary>
    public static string MiniLmWithHead(string folder, int classes)
    {
        var proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(MiniLm.Model));
        AddHead(proto.Graph, "924", 384, classes);
        var path = Path.Combine(folder, "minilm-head.onnx");
        File.WriteAllBytes(path, proto.ToByteArray());
        File.Copy(Vocabulary, Path.Combine(folder, "vocab.txt"), overwrite: true);
        return path;
    }

    /// <summary>logits = Gemm(sum over tokens of mask · Embedding[input_ids]): inputs input_ids and attention_mask only.</summary>
    public static string BagOfEmbeddings(string folder, int classes, params ValueInfoProto[] extraInputs)
    {
        var random = new Random(5);
        var vocabularySize = File.ReadAllLines(Vocabulary).Length;
        const int width = 4;
        var graph = new GraphProto { Name = "bag" };
        graph.Input.Add(Int64Input("input_ids"));
        graph.Input.Add(Int64Input("attention_mask"));
        graph.Input.Add(extraInputs);
        var embedding = new TensorProto { Name = "embedding", DataType = 1, Dims = { vocabularySize, width } };
        embedding.FloatData.Add(Enumerable.Range(0, vocabularySize * width).Select(_ => (random.NextSingle() - 0.5f) * 0.2f));
        graph.Initializer.Add(embedding);
        graph.Initializer.Add(new TensorProto { Name = "axes", DataType = 7, Dims = { 1 }, Int64Data = { 1 } });
        graph.Initializer.Add(new TensorProto { Name = "last", DataType = 7, Dims = { 1 }, Int64Data = { -1 } });
        graph.Node.Add(new NodeProto { OpType = "Gather", Input = { "embedding", "input_ids" }, Output = { "tokens" } });
        graph.Node.Add(new NodeProto { OpType = "Cast", Input = { "attention_mask" }, Output = { "maskf" }, Attribute = { new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = 1 } } });
        graph.Node.Add(new NodeProto { OpType = "Unsqueeze", Input = { "maskf", "last" }, Output = { "mask3" } });
        graph.Node.Add(new NodeProto { OpType = "Mul", Input = { "tokens", "mask3" }, Output = { "masked" } });
        graph.Node.Add(new NodeProto { OpType = "ReduceSum", Input = { "masked", "axes" }, Output = { "pooled" }, Attribute = { new AttributeProto { Name = "keepdims", Type = AttributeProto.Types.AttributeType.Int, I = 0 } } });
        AddHead(graph, "pooled", width, classes);
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 13 } } };
        var path = Path.Combine(folder, "bag.onnx");
        File.WriteAllBytes(path, proto.ToByteArray());
        return path;
    }

    public static ValueInfoProto Int64Input(string name) => Input(name, 7);

    public static ValueInfoProto Input(string name, int type) => new()
    {
        Name = name,
        Type = new TypeProto
        {
            TensorType = new TypeProto.Types.Tensor
            {
                ElemType = type,
                Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "batch" }, new TensorShapeProto.Types.Dimension { DimParam = "sequence" } } },
            },
        },
    };

    public static string WriteCsv(string folder, string name, IEnumerable<(string Text, int Label)> rows)
    {
        var path = Path.Combine(folder, name);
        File.WriteAllLines(path, ["text,label", .. rows.Select(r => $"\"{r.Text.Replace("\"", "\"\"", StringComparison.Ordinal)}\",{r.Label}")]);
        return path;
    }

    private static void AddHead(GraphProto graph, string input, int width, int classes)
    {
        var random = new Random(7);
        var weight = new TensorProto { Name = "head.weight", DataType = 1, Dims = { width, classes } };
        weight.FloatData.Add(Enumerable.Range(0, width * classes).Select(_ => (random.NextSingle() - 0.5f) * 0.1f));
        var bias = new TensorProto { Name = "head.bias", DataType = 1, Dims = { classes } };
        bias.FloatData.Add(new float[classes]);
        graph.Initializer.Add(weight);
        graph.Initializer.Add(bias);
        graph.Node.Add(new NodeProto { OpType = "Gemm", Name = "head", Input = { input, "head.weight", "head.bias" }, Output = { "logits" } });
        graph.Output.Clear();
        graph.Output.Add(new ValueInfoProto
        {
            Name = "logits",
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "batch" }, new TensorShapeProto.Types.Dimension { DimValue = classes } } } } },
        });
    }
}
