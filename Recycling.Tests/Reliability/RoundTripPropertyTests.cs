using System.Buffers.Binary;
using CsCheck;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Reliability;

/// <summary>
/// Property-based tests (CsCheck) of the reader and writer: random models holding tensors of every element type, with
/// random dims and random bit patterns, placed as initializers, Constant-node attributes and initializers of If
/// subgraphs, encoded as raw_data or as the typed fields (float_data, int32_data, ...), are written with the generated
/// proto classes, read back, rewritten by <see cref="OnnxWriter"/> embedded and with external data, and read again:
/// every value must come back bit for bit, with its name, type and dims.
/// </summary>
[TestClass]
public sealed class RoundTripPropertyTests
{
    private static readonly OnnxDataType[] AllTypes = [.. Enum.GetValues<OnnxDataType>().Where(OnnxDataTypes.IsDefined)];

    public TestContext TestContext { get; set; } = null!;

    internal enum Placement
    {
        Initializer,
        ConstantNode,
        SubgraphInitializer,
    }

    internal sealed record TensorSpec(OnnxDataType Type, long[] Dims, byte[] Raw, byte[][] Strings, bool Typed, Placement Placement)
    {
        public override string ToString() => $"{Type}[{string.Join(',', Dims)}] {(Typed ? "typed" : "raw")} {Placement} ({Raw.Length} bytes, {Strings.Length} strings)";
    }

    private static readonly Gen<TensorSpec> TensorGen =
        from type in Gen.OneOf(AllTypes)
        from dims in Gen.Long[0, 6].Array[0, 3]
        let count = dims.Aggregate(1L, (a, b) => a * b)
        from raw in Gen.Byte.Array[type == OnnxDataType.String ? 0 : (int)OnnxDataTypes.RawByteLength(type, count)]
        from strings in Gen.Byte.Array[0, 12].Array[type == OnnxDataType.String ? (int)count : 0]
        from typed in Gen.Bool
        from placement in Gen.Enum<Placement>()
        select new TensorSpec(type, dims, raw, strings, typed, placement);

    private static readonly Gen<TensorSpec[]> ModelGen = TensorGen.Array[1, 8];

    [TestMethod]
    public void RandomTensorsOfEveryTypeRoundTripBitForBit() => CheckRoundTrips(iterations: 300);

    [TestMethod]
    [TestCategory("Exhaustive")]
    public void RandomTensorsOfEveryTypeRoundTripBitForBitLong() => CheckRoundTrips(iterations: 10_000);

    [TestMethod]
    public void BitFlipsOfRandomModelsGiveOnlyFormatErrors()
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-prop-flip-");
        try
        {
            var runs = 0;
            var gen = from specs in ModelGen
                      let bytes = BuildModel(specs).ToByteArray()
                      from offset in Gen.Int[0, bytes.Length - 1]
                      from bit in Gen.Int[0, 7]
                      select (bytes, offset, bit);
            gen.Sample((bytes, offset, bit) =>
            {
                var path = Path.Combine(scratch.FullName, $"{Environment.CurrentManagedThreadId}.onnx");
                bytes[offset] ^= (byte)(1 << bit);
                File.WriteAllBytes(path, bytes);
                try
                {
                    using var model = OnnxModel.Open(path);
                    foreach (var tensor in model.Tensors)
                    {
                        _ = tensor.DataType == OnnxDataType.String ? tensor.ReadStrings().Count : tensor.ReadRawBytes().Length;
                    }
                }
                catch (OnnxFormatException)
                {
                }

                Interlocked.Increment(ref runs);
            }, iter: 500, threads: 1);
            TestContext.WriteLine($"{runs} bit-flipped random models");
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    private void CheckRoundTrips(int iterations)
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-prop-");
        var tensors = 0L;
        var models = 0;
        var perType = new int[AllTypes.Max(t => (int)t) + 1];
        try
        {
            ModelGen.Sample(specs =>
            {
                var folder = Directory.CreateDirectory(Path.Combine(scratch.FullName, Interlocked.Increment(ref models).ToString(System.Globalization.CultureInfo.InvariantCulture))).FullName;
                var original = Path.Combine(folder, "model.onnx");
                File.WriteAllBytes(original, BuildModel(specs).ToByteArray());
                using (var model = OnnxModel.Open(original))
                {
                    AssertTensors(specs, model, "written with the proto classes");
                    var embedded = Path.Combine(folder, "embedded.onnx");
                    OnnxWriter.Write(model, embedded, new OnnxWriteOptions { ExternalData = ExternalDataMode.Embedded });
                    var external = Path.Combine(folder, "external.onnx");
                    OnnxWriter.Write(model, external, new OnnxWriteOptions { ExternalData = ExternalDataMode.External, ExternalThreshold = 1 + (specs.Length * 7 % 24) });
                    using var reopenedEmbedded = OnnxModel.Open(embedded);
                    AssertTensors(specs, reopenedEmbedded, "rewritten embedded");
                    using var reopenedExternal = OnnxModel.Open(external);
                    AssertTensors(specs, reopenedExternal, "rewritten with external data");
                }

                Directory.Delete(folder, recursive: true);
                Interlocked.Add(ref tensors, specs.Length);
                foreach (var spec in specs)
                {
                    Interlocked.Increment(ref perType[(int)spec.Type]);
                }
            }, iter: iterations, threads: 1);
        }
        finally
        {
            scratch.Delete(recursive: true);
        }

        TestContext.WriteLine($"{iterations} random models, {tensors} tensors; per type: {string.Join(", ", AllTypes.Select(t => $"{t} {perType[(int)t]}"))}");
        Assert.IsTrue(AllTypes.All(t => perType[(int)t] > 0), "every element type was generated");
    }

    private static void AssertTensors(TensorSpec[] specs, OnnxModel model, string how)
    {
        Assert.HasCount(specs.Length, model.Tensors, how);
        var byName = model.Tensors.ToDictionary(t => t.Name);
        for (var i = 0; i < specs.Length; i++)
        {
            var spec = specs[i];
            var tensor = byName[$"t{i}"];
            var where = $"{how}: t{i} = {spec} at {tensor.Path} ({tensor.Storage})";
            Assert.AreEqual(spec.Type, tensor.DataType, where);
            CollectionAssert.AreEqual(spec.Dims, tensor.Shape.ToArray(), where);
            Assert.AreEqual(spec.Placement == Placement.ConstantNode ? TensorKind.Constant : TensorKind.Initializer, tensor.Kind, where);
            if (spec.Type == OnnxDataType.String)
            {
                var strings = tensor.ReadStrings();
                Assert.HasCount(spec.Strings.Length, strings, where);
                for (var j = 0; j < strings.Count; j++)
                {
                    CollectionAssert.AreEqual(spec.Strings[j], strings[j], where);
                }
            }
            else
            {
                CollectionAssert.AreEqual(spec.Raw, tensor.ReadRawBytes(), where);
            }
        }
    }

    private static ModelProto BuildModel(TensorSpec[] specs)
    {
        var graph = new GraphProto { Name = "random" };
        var subgraph = new GraphProto { Name = "then" };
        for (var i = 0; i < specs.Length; i++)
        {
            var tensor = BuildTensor(specs[i], $"t{i}");
            switch (specs[i].Placement)
            {
                case Placement.Initializer:
                    graph.Initializer.Add(tensor);
                    break;
                case Placement.SubgraphInitializer:
                    subgraph.Initializer.Add(tensor);
                    break;
                default:
                    graph.Node.Add(new NodeProto
                    {
                        OpType = "Constant",
                        Name = $"constant{i}",
                        Output = { $"t{i}" },
                        Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = tensor } },
                    });
                    break;
            }
        }

        if (subgraph.Initializer.Count > 0)
        {
            graph.Node.Add(new NodeProto
            {
                OpType = "If",
                Name = "branch",
                Input = { "condition" },
                Attribute =
                {
                    new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = subgraph },
                    new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = new GraphProto { Name = "else" } },
                },
            });
        }

        return new ModelProto { IrVersion = 10, ProducerName = "property-test", OpsetImport = { new OperatorSetIdProto { Version = 21 } }, Graph = graph };
    }

    /// <summary>A TensorProto holding the spec's values as raw_data, or in the typed field the ONNX spec assigns to its type.</summary>
    private static TensorProto BuildTensor(TensorSpec spec, string name)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)spec.Type, Dims = { spec.Dims } };
        var raw = spec.Raw;
        if (spec.Type == OnnxDataType.String)
        {
            tensor.StringData.Add(spec.Strings.Select(ByteString.CopyFrom));
            return tensor;
        }

        if (!spec.Typed)
        {
            tensor.RawData = ByteString.CopyFrom(raw);
            return tensor;
        }

        switch (spec.Type)
        {
            case OnnxDataType.Float or OnnxDataType.Complex64:
                for (var o = 0; o < raw.Length; o += 4)
                {
                    tensor.FloatData.Add(BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadInt32LittleEndian(raw.AsSpan(o))));
                }

                break;
            case OnnxDataType.Double or OnnxDataType.Complex128:
                for (var o = 0; o < raw.Length; o += 8)
                {
                    tensor.DoubleData.Add(BitConverter.Int64BitsToDouble(BinaryPrimitives.ReadInt64LittleEndian(raw.AsSpan(o))));
                }

                break;
            case OnnxDataType.Int64:
                for (var o = 0; o < raw.Length; o += 8)
                {
                    tensor.Int64Data.Add(BinaryPrimitives.ReadInt64LittleEndian(raw.AsSpan(o)));
                }

                break;
            case OnnxDataType.UInt32:
                for (var o = 0; o < raw.Length; o += 4)
                {
                    tensor.Uint64Data.Add(BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(o)));
                }

                break;
            case OnnxDataType.UInt64:
                for (var o = 0; o < raw.Length; o += 8)
                {
                    tensor.Uint64Data.Add(BinaryPrimitives.ReadUInt64LittleEndian(raw.AsSpan(o)));
                }

                break;
            case OnnxDataType.Int32:
                for (var o = 0; o < raw.Length; o += 4)
                {
                    tensor.Int32Data.Add(BinaryPrimitives.ReadInt32LittleEndian(raw.AsSpan(o)));
                }

                break;
            case OnnxDataType.Int16:
                for (var o = 0; o < raw.Length; o += 2)
                {
                    tensor.Int32Data.Add(BinaryPrimitives.ReadInt16LittleEndian(raw.AsSpan(o))); // sign-extended, as numpy_helper writes it
                }

                break;
            case OnnxDataType.UInt16 or OnnxDataType.Float16 or OnnxDataType.BFloat16:
                for (var o = 0; o < raw.Length; o += 2)
                {
                    tensor.Int32Data.Add(BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan(o)));
                }

                break;
            case OnnxDataType.Int8:
                tensor.Int32Data.Add(raw.Select(b => (int)(sbyte)b));
                break;
            default: // 8-bit types and the sub-byte types (one int32 per packed byte)
                tensor.Int32Data.Add(raw.Select(b => (int)b));
                break;
        }

        return tensor;
    }
}
