using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Reliability;

/// <summary>
/// A model of many small weights: x [2,2] flows through <c>count</c> Add nodes, each adding its own 2×2 initializer
/// w{i}. Every 100th weight is a copy of the one before (a tie), every 100th from 50 on the transpose of the one before.
/// Fine-tunings add seeded noise to every weight and keep the ties.
/// </summary>
internal static class ManyTensorModel
{
    public static string Write(string path, int count, int fineTuning)
    {
        var random = new Random(17);
        var noise = new Random(1000 + fineTuning);
        var weights = new float[count][];
        for (var i = 0; i < count; i++)
        {
            weights[i] = [.. Enumerable.Range(0, 4).Select(_ => (float)random.NextDouble())];
            if (fineTuning > 0)
            {
                for (var k = 0; k < 4; k++)
                {
                    weights[i][k] += (float)(noise.NextDouble() * 0.01);
                }
            }

            if (i % 100 == 1)
            {
                weights[i] = [.. weights[i - 1]];
            }
            else if (i % 100 == 51)
            {
                weights[i] = [weights[i - 1][0], weights[i - 1][2], weights[i - 1][1], weights[i - 1][3]];
            }
        }

        var graph = new GraphProto { Name = "many" };
        graph.Input.Add(Value("x"));
        var current = "x";
        for (var i = 0; i < count; i++)
        {
            graph.Initializer.Add(new TensorProto
            {
                Name = $"w{i}",
                DataType = (int)OnnxDataType.Float,
                Dims = { 2, 2 },
                RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(weights[i].AsSpan())),
            });
            graph.Node.Add(new NodeProto { OpType = "Add", Input = { current, $"w{i}" }, Output = { $"a{i}" } });
            current = $"a{i}";
        }

        graph.Output.Add(Value(current));
        var model = new ModelProto { IrVersion = 8, OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private static ValueInfoProto Value(string name) => new()
    {
        Name = name,
        Type = new TypeProto
        {
            TensorType = new TypeProto.Types.Tensor
            {
                ElemType = (int)OnnxDataType.Float,
                Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = 2 }, new TensorShapeProto.Types.Dimension { DimValue = 2 } } },
            },
        },
    };
}
