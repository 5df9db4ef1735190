using Google.Protobuf;
using Recycling.Onnx.Proto;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// Single-node models at the opset versions where an op's signature changed (attributes that became inputs,
/// BatchNormalization's versions, Softmax's 2-D coercion before 13): the executor's output equals ONNX Runtime's
/// within 1e-5 relative on random inputs.
/// </summary>
[TestClass]
public sealed class OpConverterTests
{
    public static IEnumerable<object[]> Cases =>
    [
        // op, opset, attributes, constant inputs after x (name=int64 values), input shape
        ["Squeeze", 11, "axes=1", "", "2,1,3"],
        ["Squeeze", 13, "", "axes=1", "2,1,3"],
        ["Unsqueeze", 11, "axes=0,3", "", "2,3"],
        ["Unsqueeze", 13, "", "axes=0,3", "2,3"],
        ["ReduceSum", 11, "axes=1;keepdims=0", "", "2,3,4"],
        ["ReduceSum", 13, "keepdims=1", "axes=-1", "2,3,4"],
        ["ReduceMean", 13, "axes=1,2", "", "2,3,4"],
        ["ReduceMean", 18, "keepdims=0", "axes=2", "2,3,4"],
        ["ReduceMax", 18, "", "axes=0", "2,3,4"],
        ["Split", 11, "axis=1;split=1,2", "", "2,3"],
        ["Split", 13, "axis=1", "split=2,1", "2,3"],
        ["Split", 18, "axis=0;num_outputs=2", "", "4,3"],
        ["Softmax", 11, "axis=1", "", "2,3,4"],
        ["Softmax", 13, "axis=1", "", "2,3,4"],
        ["LogSoftmax", 11, "", "", "2,5"],
        ["Flatten", 11, "axis=2", "", "2,3,4"],
        ["Transpose", 13, "perm=2,0,1", "", "2,3,4"],
        ["Slice", 13, "", "starts=1,0;ends=3,-1;axes=2,1;steps=1,2", "2,3,5"],
        ["Slice", 13, "", "starts=-1;ends=-100;axes=1;steps=-2", "2,5"],
        ["Pad", 13, "mode=constant", "pads=0,1,0,2", "2,3"],
        ["Pad", 13, "mode=reflect", "pads=0,0,1,1,0,0,1,1", "1,2,4,4"],
        ["Pad", 2, "pads=0,0,1,0,0,0,0,2;value=0.5", "", "1,2,3,3"],
        ["Reshape", 13, "", "shape=0,-1", "2,3,4"],
        ["Expand", 13, "", "shape=3,1,4", "1,2,1"],
        ["MaxPool", 11, "kernel_shape=3,3;strides=2,2;pads=1,1,1,1", "", "1,2,7,7"],
        ["MaxPool", 11, "kernel_shape=2,2;strides=2,2;ceil_mode=1", "", "1,2,5,5"],
        ["AveragePool", 11, "kernel_shape=3,3;strides=2,2;pads=0,0,1,1", "", "1,2,6,6"],
        ["AveragePool", 11, "kernel_shape=3,3;pads=1,1,1,1;count_include_pad=1", "", "1,2,5,5"],
        ["AveragePool", 11, "kernel_shape=3,3;auto_pad=SAME_UPPER;strides=2,2", "", "1,2,6,6"],
        ["GlobalAveragePool", 11, "", "", "2,3,4,4"],
        ["HardSigmoid", 11, "alpha=0.3", "", "2,5"],
        ["HardSwish", 14, "", "", "2,5"],
        ["LeakyRelu", 11, "alpha=0.2", "", "2,5"],
        ["Erf", 13, "", "", "2,5"],
        ["CumSum", 14, "exclusive=1;reverse=1", "axis=1", "2,5"],
        ["Trilu", 14, "upper=0", "", "3,4"],
        ["Clip", 6, "min=-0.5;max=0.5", "", "2,5"],
        ["Dropout", 7, "ratio=0.3", "", "2,5"],
        ["Shape", 15, "start=1;end=-1", "", "2,3,4,5"],
    ];

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void MatchesOnnxRuntime(string op, int opset, string attributes, string constants, string shape)
    {
        var dims = shape.Split(',').Select(long.Parse).ToArray();
        var node = new NodeProto { OpType = op, Name = "n", Input = { "x" } };
        var graph = new GraphProto { Name = "g" };
        foreach (var attribute in attributes.Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            var (name, value) = (attribute.Split('=')[0], attribute.Split('=')[1]);
            node.Attribute.Add(Attribute(name, value));
        }

        foreach (var constant in constants.Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            var (name, value) = (constant.Split('=')[0], constant.Split('=')[1]);
            var tensor = new TensorProto { Name = name, DataType = 7, Dims = { value.Split(',').Length } };
            tensor.Int64Data.AddRange(value.Split(',').Select(long.Parse));
            graph.Initializer.Add(tensor);
            node.Input.Add(name);
        }

        var outputs = op == "Split" ? 2 : 1;
        for (var k = 0; k < outputs; k++)
        {
            node.Output.Add($"y{k}");
            graph.Output.Add(new ValueInfoProto { Name = $"y{k}", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = op == "Shape" ? 7 : 1 } } });
        }

        graph.Node.Add(node);
        var inputShape = new TensorShapeProto();
        inputShape.Dim.AddRange(dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        graph.Input.Add(new ValueInfoProto { Name = "x", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = inputShape } } });
        var model = new ModelProto { IrVersion = opset >= 18 ? 8 : 7, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = opset } } };
        var path = Path.Combine(Path.GetTempPath(), $"recycling-op-{op}-{opset}-{Guid.NewGuid():N}.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        try
        {
            var random = new Random(op.Length * 31 + opset);
            var values = new float[dims.Aggregate(1L, (p, d) => p * d)];
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = (random.NextSingle() * 4) - 2;
            }

            var feeds = new Dictionary<string, Tensor> { ["x"] = tensor(values, dims) };
            if (op == "Shape")
            {
                CollectionAssert.AreEqual(new long[] { 3, 4 }, ShapeOutput(path, feeds));
                return;
            }

            var ours = RunTorch(path, feeds);
            var ort = RunOrt(path, feeds);
            foreach (var (name, expected) in ort)
            {
                Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(ours[name], expected), $"{op}-{opset} {name}");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    [DataRow(7, 1)]
    [DataRow(7, 0)]
    [DataRow(9, 1)]
    [DataRow(15, 1)]
    public void BatchNormalizationVersionsMatchOnnxRuntime(int opset, int spatial)
    {
        var channels = spatial == 1 ? new long[] { 3 } : [3, 2, 2];
        var graph = new GraphProto { Name = "g" };
        var random = new Random(opset + spatial);
        foreach (var (name, low) in new[] { ("scale", 0.5f), ("bias", -0.5f), ("mean", -0.3f), ("var", 0.5f) })
        {
            var t = new TensorProto { Name = name, DataType = 1, Dims = { channels } };
            t.FloatData.AddRange(Enumerable.Range(0, (int)channels.Aggregate(1L, (p, d) => p * d)).Select(_ => low + random.NextSingle()));
            graph.Initializer.Add(t);
        }

        var node = new NodeProto { OpType = "BatchNormalization", Input = { "x", "scale", "bias", "mean", "var" }, Output = { "y" } };
        node.Attribute.Add(new AttributeProto { Name = "epsilon", F = 1e-3f, Type = AttributeProto.Types.AttributeType.Float });
        if (opset < 9)
        {
            node.Attribute.Add(new AttributeProto { Name = "spatial", I = spatial, Type = AttributeProto.Types.AttributeType.Int });
        }

        graph.Node.Add(node);
        var shape = new TensorShapeProto();
        shape.Dim.AddRange(new long[] { 2, 3, 2, 2 }.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        graph.Input.Add(new ValueInfoProto { Name = "x", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } } });
        graph.Output.Add(new ValueInfoProto { Name = "y", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        var path = Path.Combine(Path.GetTempPath(), $"recycling-bn-{opset}-{spatial}-{Guid.NewGuid():N}.onnx");
        File.WriteAllBytes(path, new ModelProto { IrVersion = 7, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = opset } } }.ToByteArray());
        try
        {
            var feeds = new Dictionary<string, Tensor> { ["x"] = randn(2, 3, 2, 2, generator: new Generator(5)) };
            Assert.IsLessThanOrEqualTo(1e-5, RelativeGap(RunTorch(path, feeds)["y"], RunOrt(path, feeds)["y"]), $"BatchNormalization-{opset} spatial={spatial}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static long[] ShapeOutput(string path, Dictionary<string, Tensor> feeds)
    {
        using var model = Recycling.Onnx.OnnxModel.Open(path);
        using var program = Recycling.Training.OnnxProgram.Load(model);
        return program.Forward(feeds, new Recycling.Training.Ops.OpContext())["y0"].data<long>().ToArray();
    }

    private static AttributeProto Attribute(string name, string value)
    {
        if (value.All(c => char.IsAsciiLetterUpper(c) || c == '_') || value.All(char.IsAsciiLetterLower))
        {
            return new AttributeProto { Name = name, S = ByteString.CopyFromUtf8(value), Type = AttributeProto.Types.AttributeType.String };
        }

        if (value.Contains('.', StringComparison.Ordinal))
        {
            return new AttributeProto { Name = name, F = float.Parse(value, System.Globalization.CultureInfo.InvariantCulture), Type = AttributeProto.Types.AttributeType.Float };
        }

        var ints = value.Split(',').Select(long.Parse).ToArray();
        return name is "axes" or "split" or "perm" or "kernel_shape" or "strides" or "pads" or "dilations"
            ? new AttributeProto { Name = name, Ints = { ints }, Type = AttributeProto.Types.AttributeType.Ints }
            : new AttributeProto { Name = name, I = ints[0], Type = AttributeProto.Types.AttributeType.Int };
    }
}
