using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.Bench;

/// <summary>A generated base model and its fine-tunings, each an .onnx file with its values in one external-data file.</summary>
internal sealed record SyntheticModelSet(string Folder, string Base, IReadOnlyList<string> FineTunings, long BytesPerModel, int Width, int Blocks, int Vocabulary)
{
    /// <summary>Every file of the fine-tunings (structure and data), in the order a reader meets them.</summary>
    public IReadOnlyList<string> FineTuningFiles => [.. FineTunings.SelectMany(f => new[] { f, f + ".data" })];
}

/// <summary>
/// Writes transformer-like fp32 models for end-to-end merge benchmarks: pre-LayerNorm blocks (LayerNorm, a fused QKV
/// MatMul [d,3d] split three ways, an output MatMul [d,d], an MLP [d,4d] → Relu → [4d,d], residual Adds) and a final
/// LayerNorm and output projection [d,V], V sized so each model holds about the requested bytes. Opset 17, so ONNX
/// Runtime loads it (the attention score is a stand-in: q·k + v elementwise; only the weight shapes matter here).
/// The base has values like a trained model's (weights ~U(±0.035), σ 0.02); fine-tuning k is the base plus uniform
/// noise of a tenth of that, as fine-tuning moves weights a little. Values are deterministic in (seed, tensor,
/// element chunk) and streamed to disk chunk by chunk, so generating a 1 GiB model takes a few MiB of memory.
/// </summary>
internal static class SyntheticModels
{
    private const int ChunkElements = 1 << 18;
    private const long DataAlignment = 4096;
    private const string ManifestName = "manifest.json";

    /// <summary>U(±a) with a = 0.02·√3 has σ 0.02, a common initialisation scale for transformer weights.</summary>
    private const float WeightAmplitude = 0.0346f;

    /// <summary>
    /// Returns the set in <paramref name="folder"/>, generating it unless a complete set with the same parameters is
    /// already there (the manifest is written last, so an interrupted generation is redone).
    /// </summary>
    public static SyntheticModelSet Ensure(string folder, int fineTunings, long bytesPerModel, int? width = null, TextWriter? log = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(fineTunings, 1);
        var d = width ?? (bytesPerModel >= (1L << 30) ? 2048 : 1024);
        var (blocks, vocabulary) = Layout(bytesPerModel, d);
        folder = Path.GetFullPath(folder);
        var set = new SyntheticModelSet(folder, Path.Combine(folder, "base.onnx"),
            [.. Enumerable.Range(1, fineTunings).Select(k => Path.Combine(folder, $"finetune{k}.onnx"))], bytesPerModel, d, blocks, vocabulary);
        var manifestPath = Path.Combine(folder, ManifestName);
        var manifest = JsonSerializer.Serialize(new { fineTunings, bytesPerModel, d, blocks, vocabulary, version = 1 });
        if (File.Exists(manifestPath) && File.ReadAllText(manifestPath) == manifest && set.FineTunings.Append(set.Base).All(f => File.Exists(f) && File.Exists(f + ".data")))
        {
            return set;
        }

        Directory.CreateDirectory(folder);
        File.Delete(manifestPath);
        var tensors = Tensors(d, blocks, vocabulary);
        var models = set.FineTunings.Select((path, k) => (path, seed: k + 1)).Prepend((path: set.Base, seed: 0)).ToList();
        log?.WriteLine($"generating {models.Count} models of {Format(TotalBytes(tensors))} (d={d}, {blocks} blocks, V={vocabulary}) in {folder}");
        Parallel.ForEach(models, new ParallelOptions { MaxDegreeOfParallelism = Math.Min(Environment.ProcessorCount, 4) }, m => Write(m.path, tensors, d, blocks, vocabulary, m.seed));
        File.WriteAllText(manifestPath, manifest);
        return set;
    }

    /// <summary>Blocks and output vocabulary that bring one model to about <paramref name="bytes"/> (never less than one block).</summary>
    internal static (int Blocks, int Vocabulary) Layout(long bytes, int d)
    {
        if (d < 64 || d % 64 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(d), "the width must be a positive multiple of 64");
        }

        long floats = bytes / 4;
        long perBlock = (12L * d * d) + (13L * d);
        long minimumHead = 2L * d + (64L * d);
        var blocks = (int)Math.Max(1, (floats - minimumHead) / perBlock);
        long rest = floats - (blocks * perBlock) - (2L * d);
        var vocabulary = (int)Math.Max(64, rest / d / 64 * 64);
        return (blocks, vocabulary);
    }

    internal static string Format(long bytes) => bytes >= 1L << 30 && bytes % (1L << 30) == 0 ? $"{bytes >> 30} GiB" : $"{bytes / (double)(1L << 20):0.#} MiB";

    /// <summary>Parses sizes such as 256MiB, 1GiB, 1.5GB (binary units either way) or plain bytes.</summary>
    internal static long ParseSize(string text)
    {
        var t = text.Trim();
        var units = new (string Suffix, long Factor)[] { ("GiB", 1L << 30), ("GB", 1L << 30), ("G", 1L << 30), ("MiB", 1L << 20), ("MB", 1L << 20), ("M", 1L << 20), ("KiB", 1L << 10), ("K", 1L << 10) };
        foreach (var (suffix, factor) in units)
        {
            if (t.EndsWith(suffix, StringComparison.OrdinalIgnoreCase) && double.TryParse(t[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value > 0)
            {
                return (long)(value * factor);
            }
        }

        return long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var plain) && plain > 0
            ? plain
            : throw new ArgumentException($"'{text}' is not a size (examples: 256MiB, 1GiB)");
    }

    private enum Kind
    {
        Weight,
        Bias,
        Gamma,
    }

    private sealed record Spec(string Name, long[] Shape, Kind Kind)
    {
        public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
    }

    private static List<Spec> Tensors(int d, int blocks, int vocabulary)
    {
        var specs = new List<Spec>();
        for (var b = 0; b < blocks; b++)
        {
            var p = $"blocks.{b}.";
            specs.Add(new(p + "ln1.weight", [d], Kind.Gamma));
            specs.Add(new(p + "ln1.bias", [d], Kind.Bias));
            specs.Add(new(p + "attn.qkv.weight", [d, 3 * d], Kind.Weight));
            specs.Add(new(p + "attn.qkv.bias", [3 * d], Kind.Bias));
            specs.Add(new(p + "attn.out.weight", [d, d], Kind.Weight));
            specs.Add(new(p + "attn.out.bias", [d], Kind.Bias));
            specs.Add(new(p + "ln2.weight", [d], Kind.Gamma));
            specs.Add(new(p + "ln2.bias", [d], Kind.Bias));
            specs.Add(new(p + "mlp.up.weight", [d, 4 * d], Kind.Weight));
            specs.Add(new(p + "mlp.up.bias", [4 * d], Kind.Bias));
            specs.Add(new(p + "mlp.down.weight", [4 * d, d], Kind.Weight));
            specs.Add(new(p + "mlp.down.bias", [d], Kind.Bias));
        }

        specs.Add(new("ln_f.weight", [d], Kind.Gamma));
        specs.Add(new("ln_f.bias", [d], Kind.Bias));
        specs.Add(new("head.weight", [d, vocabulary], Kind.Weight));
        return specs;
    }

    private static long TotalBytes(List<Spec> tensors) => tensors.Sum(t => t.Elements * 4);

    private static void Write(string path, List<Spec> tensors, int d, int blocks, int vocabulary, int seed)
    {
        var dataName = Path.GetFileName(path) + ".data";
        var temp = path + ".tmp";
        var tempData = path + ".data.tmp";
        var model = Structure(d, blocks, vocabulary);
        var values = new float[ChunkElements];
        var noise = new float[ChunkElements];
        using (var data = new FileStream(tempData, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            for (var t = 0; t < tensors.Count; t++)
            {
                var spec = tensors[t];
                var offset = (data.Position + DataAlignment - 1) / DataAlignment * DataAlignment;
                data.Write(new byte[offset - data.Position]);
                for (long start = 0; start < spec.Elements; start += ChunkElements)
                {
                    var n = (int)Math.Min(ChunkElements, spec.Elements - start);
                    var chunk = start / ChunkElements;
                    var (amplitude, centre) = spec.Kind switch
                    {
                        Kind.Weight => (WeightAmplitude, 0f),
                        Kind.Gamma => (0.05f, 1f),
                        _ => (0.01f, 0f),
                    };
                    Fill(values.AsSpan(0, n), amplitude, centre, Key(0, t, chunk));
                    if (seed != 0)
                    {
                        Fill(noise.AsSpan(0, n), WeightAmplitude / 10, 0f, Key(seed, t, chunk));
                        System.Numerics.Tensors.TensorPrimitives.Add(values.AsSpan(0, n), noise.AsSpan(0, n), values.AsSpan(0, n));
                    }

                    data.Write(MemoryMarshal.AsBytes(values.AsSpan(0, n)));
                }

                var initializer = new TensorProto { Name = spec.Name, DataType = (int)OnnxDataType.Float, DataLocation = TensorProto.Types.DataLocation.External };
                initializer.Dims.AddRange(spec.Shape);
                initializer.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
                initializer.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
                initializer.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = (spec.Elements * 4).ToString(CultureInfo.InvariantCulture) });
                model.Graph.Initializer.Add(initializer);
            }
        }

        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            model.WriteTo(stream);
        }

        File.Move(tempData, path + ".data", overwrite: true);
        File.Move(temp, path, overwrite: true);
    }

    private static ulong Key(int seed, int tensor, long chunk) => ((ulong)(uint)seed << 48) ^ ((ulong)(uint)tensor << 32) ^ (ulong)chunk;

    /// <summary>centre + U(±amplitude) for one chunk, from xorshift64* seeded by splitmix64 of the key.</summary>
    private static void Fill(Span<float> destination, float amplitude, float centre, ulong key)
    {
        var state = key + 0x9E3779B97F4A7C15UL;
        state = (state ^ (state >> 30)) * 0xBF58476D1CE4E5B9UL;
        state = (state ^ (state >> 27)) * 0x94D049BB133111EBUL;
        state ^= state >> 31;
        state |= 1;
        for (var i = 0; i < destination.Length; i++)
        {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            var bits = (state * 0x2545F4914F6CDD1DUL) >> 40; // 24 random bits
            destination[i] = centre + (amplitude * ((bits * (2f / (1 << 24))) - 1f));
        }
    }

    private static ModelProto Structure(int d, int blocks, int vocabulary)
    {
        var graph = new GraphProto { Name = "synthetic_transformer" };
        graph.Input.Add(Value("x", "batch", "seq", d.ToString(CultureInfo.InvariantCulture)));
        graph.Output.Add(Value("logits", "batch", "seq", vocabulary.ToString(CultureInfo.InvariantCulture)));
        var x = "x";
        for (var b = 0; b < blocks; b++)
        {
            var p = $"blocks.{b}.";
            var ln1 = Node(graph, "LayerNormalization", p + "ln1", x, p + "ln1.weight", p + "ln1.bias");
            var qkv = Node(graph, "Add", p + "attn.qkv.add", Node(graph, "MatMul", p + "attn.qkv", ln1, p + "attn.qkv.weight"), p + "attn.qkv.bias");
            var split = new NodeProto { OpType = "Split", Name = p + "attn.split" };
            split.Input.Add(qkv);
            split.Output.AddRange([p + "q", p + "k", p + "v"]);
            split.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = -1 });
            graph.Node.Add(split);
            var mixed = Node(graph, "Add", p + "attn.mix", Node(graph, "Mul", p + "attn.score", p + "q", p + "k"), p + "v");
            var attention = Node(graph, "Add", p + "attn.out.add", Node(graph, "MatMul", p + "attn.out", mixed, p + "attn.out.weight"), p + "attn.out.bias");
            var x1 = Node(graph, "Add", p + "residual1", x, attention);
            var ln2 = Node(graph, "LayerNormalization", p + "ln2", x1, p + "ln2.weight", p + "ln2.bias");
            var up = Node(graph, "Relu", p + "mlp.act", Node(graph, "Add", p + "mlp.up.add", Node(graph, "MatMul", p + "mlp.up", ln2, p + "mlp.up.weight"), p + "mlp.up.bias"));
            var down = Node(graph, "Add", p + "mlp.down.add", Node(graph, "MatMul", p + "mlp.down", up, p + "mlp.down.weight"), p + "mlp.down.bias");
            x = Node(graph, "Add", p + "residual2", x1, down);
        }

        var final = Node(graph, "LayerNormalization", "ln_f", x, "ln_f.weight", "ln_f.bias");
        var head = Node(graph, "MatMul", "head", final, "head.weight");
        graph.Node.Add(new NodeProto { OpType = "Identity", Name = "logits", Input = { head }, Output = { "logits" } });
        var model = new ModelProto { IrVersion = 8, ProducerName = "Recycling.Bench", ProducerVersion = "1", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return model;
    }

    private static string Node(GraphProto graph, string op, string name, params string[] inputs)
    {
        var node = new NodeProto { OpType = op, Name = name };
        node.Input.AddRange(inputs);
        node.Output.Add(name + ".out");
        graph.Node.Add(node);
        return name + ".out";
    }

    private static ValueInfoProto Value(string name, params string[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var dim in dims)
        {
            shape.Dim.Add(long.TryParse(dim, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? new TensorShapeProto.Types.Dimension { DimValue = v } : new TensorShapeProto.Types.Dimension { DimParam = dim });
        }

        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float, Shape = shape } } };
    }
}
