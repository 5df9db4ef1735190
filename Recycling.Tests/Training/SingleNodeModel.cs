using System.Globalization;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using Recycling.Onnx;
using Recycling.Onnx.Proto;
using Recycling.Training;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// A one-node ONNX model written to a temporary file from a compact description, fed random inputs, run through
/// ONNX Runtime and through the executor.
/// Inputs, '|'-separated in ONNX order: <c>name:2,3,4</c> a random graph input of that shape, <c>name=f1.5,2</c> a
/// float32 initializer, <c>name=i0,-1</c> an int64 initializer (<c>name@2x3=i...</c> with a shape), <c>name=f</c> an empty float32 one, <c>-</c> an
/// omitted optional input, a bare <c>name</c> a value named before. Attributes, ';'-separated: <c>name=i:3</c>, <c>name=f:0.5</c>, <c>name=s:linear</c>,
/// <c>name=is:1,2</c>, <c>name=fs:1,2.5</c>.
/// </summary>
internal sealed class SingleNodeModel : IDisposable
{
    private SingleNodeModel(string path, Dictionary<string, long[]> randomInputs)
    {
        Path = path;
        RandomInputs = randomInputs;
    }

    public string Path { get; }

    /// <summary>The random graph inputs and their shapes.</summary>
    public Dictionary<string, long[]> RandomInputs { get; }

    public static SingleNodeModel Create(string op, int opset, string attributes, string inputs, int outputs, int inputElementType = 1)
    {
        var node = new NodeProto { OpType = op, Name = "n" };
        var graph = new GraphProto { Name = "g" };
        var random = new Dictionary<string, long[]>();
        foreach (var input in inputs.Split('|'))
        {
            if (input == "-")
            {
                node.Input.Add("");
                continue;
            }

            if (!input.Contains(':', StringComparison.Ordinal) && !input.Contains('=', StringComparison.Ordinal))
            {
                node.Input.Add(input);
                continue;
            }

            var colon = input.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0)
            {
                var name = input[..colon];
                var dims = input[(colon + 1)..].Split(',').Select(long.Parse).ToArray();
                random[name] = dims;
                var shape = new TensorShapeProto();
                shape.Dim.AddRange(dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
                graph.Input.Add(new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = inputElementType, Shape = shape } } });
                node.Input.Add(name);
                continue;
            }

            var equals = input.IndexOf('=', StringComparison.Ordinal);
            var (initializer, value) = (input[..equals], input[(equals + 2)..]);
            var values = value.Length == 0 ? [] : value.Split(',');
            var tensor = new TensorProto { Name = initializer.Split('@')[0] };
            // "name@2x3=..." gives the shape, "name@=..." a scalar (no dims), plain "name=..." one axis.
            var shapeText = initializer.Contains('@', StringComparison.Ordinal) ? initializer.Split('@')[1] : null;
            tensor.Dims.AddRange(shapeText is null ? [values.Length] : shapeText.Length == 0 ? [] : shapeText.Split('x').Select(long.Parse));
            initializer = tensor.Name;
            if (input[equals + 1] == 'f')
            {
                tensor.DataType = 1;
                tensor.FloatData.AddRange(values.Select(v => float.Parse(v, CultureInfo.InvariantCulture)));
            }
            else
            {
                tensor.DataType = 7;
                tensor.Int64Data.AddRange(values.Select(long.Parse));
            }

            graph.Initializer.Add(tensor);
            node.Input.Add(initializer);
        }

        foreach (var attribute in attributes.Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            node.Attribute.Add(Attribute(attribute));
        }

        for (var k = 0; k < outputs; k++)
        {
            node.Output.Add($"y{k}");
            graph.Output.Add(new ValueInfoProto { Name = $"y{k}" });
        }

        graph.Node.Add(node);
        var model = new ModelProto { IrVersion = opset >= 21 ? 10 : opset >= 18 ? 8 : 7, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = opset } } };
        var path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"recycling-node-{op}-{opset}-{Guid.NewGuid():N}.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return new SingleNodeModel(path, random);
    }

    /// <summary>Uniform values in [-2, 2) for every random input, seeded.</summary>
    public Dictionary<string, Tensor> RandomFeeds(int seed, ScalarType type = ScalarType.Float32)
    {
        var random = new Random(seed);
        return RandomInputs.ToDictionary(p => p.Key, p =>
        {
            var values = new double[p.Value.Aggregate(1L, (a, d) => a * d)];
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = (random.NextDouble() * 4) - 2;
            }

            return tensor(values, p.Value).to(type);
        });
    }

    /// <summary>ONNX Runtime's outputs (float, int64 or bool) as doubles, by name.</summary>
    public Dictionary<string, (long[] Shape, double[] Values)> RunOrt(IReadOnlyDictionary<string, Tensor> feeds)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var session = new InferenceSession(Path, options);
        var values = session.InputNames.Select(n => OrtValue.CreateTensorValueFromMemory(feeds[n].to(ScalarType.Float32).data<float>().ToArray(), feeds[n].shape)).ToList();
        try
        {
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, [.. session.InputNames], values, session.OutputNames);
            return session.OutputNames.Select((n, i) => (n, v: results[i])).ToDictionary(p => p.n, p =>
            {
                var info = p.v.GetTensorTypeAndShape();
                double[] data = info.ElementDataType switch
                {
                    TensorElementType.Float => [.. p.v.GetTensorDataAsSpan<float>().ToArray().Select(v => (double)v)],
                    TensorElementType.Int64 => [.. p.v.GetTensorDataAsSpan<long>().ToArray().Select(v => (double)v)],
                    TensorElementType.Bool => [.. p.v.GetTensorDataAsSpan<bool>().ToArray().Select(v => v ? 1.0 : 0.0)],
                    var other => throw new AssertFailedException($"output type {other}"),
                };
                return (info.Shape, data);
            });
        }
        finally
        {
            values.ForEach(v => v.Dispose());
        }
    }

    /// <summary>The executor's outputs as doubles, by name (eval mode, no gradient).</summary>
    public Dictionary<string, (long[] Shape, double[] Values)> RunTorch(IReadOnlyDictionary<string, Tensor> feeds)
    {
        using var model = OnnxModel.Open(Path);
        using var program = OnnxProgram.Load(model);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return program.Forward(feeds, new OpContext()).ToDictionary(p => p.Key, p => (p.Value.shape, p.Value.to(ScalarType.Float64).contiguous().data<double>().ToArray()));
    }

    public void Dispose() => File.Delete(Path);

    private static AttributeProto Attribute(string text)
    {
        var name = text[..text.IndexOf('=', StringComparison.Ordinal)];
        var typed = text[(name.Length + 1)..];
        var kind = typed[..typed.IndexOf(':', StringComparison.Ordinal)];
        var value = typed[(kind.Length + 1)..];
        var attribute = new AttributeProto { Name = name };
        switch (kind)
        {
            case "i":
                (attribute.I, attribute.Type) = (long.Parse(value, CultureInfo.InvariantCulture), AttributeProto.Types.AttributeType.Int);
                break;
            case "f":
                (attribute.F, attribute.Type) = (float.Parse(value, CultureInfo.InvariantCulture), AttributeProto.Types.AttributeType.Float);
                break;
            case "s":
                (attribute.S, attribute.Type) = (ByteString.CopyFromUtf8(value), AttributeProto.Types.AttributeType.String);
                break;
            case "is":
                attribute.Ints.AddRange(value.Split(',').Select(long.Parse));
                attribute.Type = AttributeProto.Types.AttributeType.Ints;
                break;
            case "fs":
                attribute.Floats.AddRange(value.Split(',').Select(v => float.Parse(v, CultureInfo.InvariantCulture)));
                attribute.Type = AttributeProto.Types.AttributeType.Floats;
                break;
            default:
                throw new ArgumentException($"attribute kind {kind}", nameof(text));
        }

        return attribute;
    }
}
