using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Onnx;

/// <summary>
/// OnnxDataTypes.ToFloat32 against independent references: the ONNX backend corpus cast tests (float16, bfloat16),
/// ONNX Runtime's Cast kernel on every bit pattern of the 8-bit and 4-bit float formats, and values checked by hand
/// from the format definitions (max, min subnormal, NaN patterns, infinities, negative zero).
/// </summary>
[TestClass]
public sealed class FloatConversionTests
{
    public static IEnumerable<object[]> CorpusCastTests =>
        new[] { "test_cast_FLOAT16_to_FLOAT", "test_cast_BFLOAT16_to_FLOAT", "test_castlike_FLOAT16_to_FLOAT", "test_castlike_BFLOAT16_to_FLOAT" }
            .Select(t => new object[] { t });

    [TestMethod]
    [DynamicData(nameof(CorpusCastTests))]
    public void CorpusCastToFloatMatches(string test)
    {
        var folder = Path.Combine(BackendCorpusTests.CorpusRoot, "node", test, "test_data_set_0");
        if (!Directory.Exists(folder))
        {
            Assert.Inconclusive($"{folder} is missing: apt-get install libonnx-testdata (.ci/run does)");
        }

        using var model = OnnxModel.Open(Path.Combine(folder, "..", "model.onnx"));
        var declared = (OnnxDataType)model.Proto.Graph.Input[0].Type.TensorType.ElemType;
        Assert.IsTrue(declared is OnnxDataType.Float16 or OnnxDataType.BFloat16, $"{test}: input is {declared}");
        using var input = OnnxTensorFile.Open(Path.Combine(folder, "input_0.pb"));
        using var output = OnnxTensorFile.Open(Path.Combine(folder, "output_0.pb"));
        Assert.AreEqual(OnnxDataType.Float, output.Tensor.DataType);
        Assert.IsGreaterThan(0, input.Tensor.ElementCount);

        // The corpus (onnx 1.12) stores bfloat16 test inputs as UINT16 bit patterns.
        Assert.AreEqual(declared == OnnxDataType.BFloat16 ? OnnxDataType.UInt16 : declared, input.Tensor.DataType);
        var actual = new float[input.Tensor.ElementCount];
        OnnxDataTypes.ToFloat32(declared, input.Tensor.ReadRawBytes(), actual);
        AssertSameFloats(output.Tensor.ReadFloat32(), actual, test);
    }

    [TestMethod]
    [DataRow(OnnxDataType.Float8E4M3FN)]
    [DataRow(OnnxDataType.Float8E4M3FNUZ)]
    [DataRow(OnnxDataType.Float8E5M2)]
    [DataRow(OnnxDataType.Float8E5M2FNUZ)]
    [DataRow(OnnxDataType.Float16)]
    [DataRow(OnnxDataType.BFloat16)]
    public void EveryBitPatternMatchesOnnxRuntimeCast(OnnxDataType type)
    {
        var bits = OnnxDataTypes.BitsPerElement(type);
        var count = bits == 16 ? 65536 : 1 << bits;
        var raw = new byte[OnnxDataTypes.RawByteLength(type, count)];
        for (var i = 0; i < count; i++)
        {
            switch (bits)
            {
                case 16:
                    BitConverter.TryWriteBytes(raw.AsSpan(i * 2), (ushort)i);
                    break;
                case 8:
                    raw[i] = (byte)i;
                    break;
                default:
                    raw[i / 2] |= (byte)(i << (4 * (i % 2))); // first value in the low nibble
                    break;
            }
        }

        var actual = new float[count];
        OnnxDataTypes.ToFloat32(type, raw, actual);
        AssertSameFloats(OrtCastToFloat(type, raw, count), actual, type.ToString());
    }

    /// <summary>ONNX Runtime 1.31's CPU Cast has no FLOAT4E2M1 or FLOAT8E8M0 kernel: every pattern is checked against the
    /// formula of the format instead, (-1)^s 2^(e-bias) (1 + m/2^M), subnormal 2^(1-bias) m/2^M, evaluated in double.</summary>
    [TestMethod]
    public void Float4AndE8M0MatchTheirFormulas()
    {
        var float4 = new float[16];
        OnnxDataTypes.ToFloat32(OnnxDataType.Float4E2M1, [.. Enumerable.Range(0, 8).Select(i => (byte)((2 * i) | ((2 * i + 1) << 4)))], float4);
        for (var b = 0; b < 16; b++)
        {
            var (sign, exponent, mantissa) = ((b >> 3) & 1, (b >> 1) & 3, b & 1);
            var magnitude = exponent == 0 ? mantissa / 2.0 * Math.Pow(2, 1 - 1) : (1 + (mantissa / 2.0)) * Math.Pow(2, exponent - 1);
            AssertSameFloats([(float)(sign == 1 ? -magnitude : magnitude)], [float4[b]], $"float4 {b:X}");
        }

        var e8m0 = new float[256];
        OnnxDataTypes.ToFloat32(OnnxDataType.Float8E8M0, [.. Enumerable.Range(0, 256).Select(i => (byte)i)], e8m0);
        for (var b = 0; b < 256; b++)
        {
            AssertSameFloats([b == 0xFF ? float.NaN : (float)Math.Pow(2, b - 127)], [e8m0[b]], $"e8m0 {b:X2}");
        }
    }

    [TestMethod]
    public void HandCheckedValues()
    {
        var cases = new (OnnxDataType Type, byte[] Raw, float Expected)[]
        {
            (OnnxDataType.Float8E4M3FN, [0x7E], 448f),                      // max
            (OnnxDataType.Float8E4M3FN, [0xFE], -448f),
            (OnnxDataType.Float8E4M3FN, [0x01], MathF.ScaleB(1, -9)),       // min subnormal
            (OnnxDataType.Float8E4M3FN, [0x08], MathF.ScaleB(1, -6)),       // min normal
            (OnnxDataType.Float8E4M3FN, [0x38], 1f),
            (OnnxDataType.Float8E4M3FN, [0x7F], float.NaN),                 // S.1111.111, no infinities
            (OnnxDataType.Float8E4M3FN, [0xFF], float.NaN),
            (OnnxDataType.Float8E4M3FN, [0x80], -0f),
            (OnnxDataType.Float8E4M3FNUZ, [0x7F], 240f),
            (OnnxDataType.Float8E4M3FNUZ, [0xFF], -240f),
            (OnnxDataType.Float8E4M3FNUZ, [0x01], MathF.ScaleB(1, -10)),
            (OnnxDataType.Float8E4M3FNUZ, [0x40], 1f),
            (OnnxDataType.Float8E4M3FNUZ, [0x80], float.NaN),               // the only NaN, no negative zero
            (OnnxDataType.Float8E5M2, [0x7B], 57344f),
            (OnnxDataType.Float8E5M2, [0x01], MathF.ScaleB(1, -16)),
            (OnnxDataType.Float8E5M2, [0x3C], 1f),
            (OnnxDataType.Float8E5M2, [0x7C], float.PositiveInfinity),
            (OnnxDataType.Float8E5M2, [0xFC], float.NegativeInfinity),
            (OnnxDataType.Float8E5M2, [0x7D], float.NaN),
            (OnnxDataType.Float8E5M2, [0xFF], float.NaN),
            (OnnxDataType.Float8E5M2, [0x80], -0f),
            (OnnxDataType.Float8E5M2FNUZ, [0x7F], 57344f),
            (OnnxDataType.Float8E5M2FNUZ, [0x01], MathF.ScaleB(1, -17)),
            (OnnxDataType.Float8E5M2FNUZ, [0x40], 1f),
            (OnnxDataType.Float8E5M2FNUZ, [0x80], float.NaN),
            (OnnxDataType.Float8E8M0, [0x7F], 1f),
            (OnnxDataType.Float8E8M0, [0x00], MathF.ScaleB(1, -127)),
            (OnnxDataType.Float8E8M0, [0xFE], MathF.ScaleB(1, 127)),
            (OnnxDataType.Float8E8M0, [0xFF], float.NaN),
            (OnnxDataType.Float4E2M1, [0x07], 6f),
            (OnnxDataType.Float4E2M1, [0x01], 0.5f),
            (OnnxDataType.Float4E2M1, [0x0F], -6f),
            (OnnxDataType.Float4E2M1, [0x08], -0f),
            (OnnxDataType.Float16, [0xFF, 0x7B], 65504f),
            (OnnxDataType.Float16, [0x01, 0x00], MathF.ScaleB(1, -24)),
            (OnnxDataType.Float16, [0x00, 0x7C], float.PositiveInfinity),
            (OnnxDataType.Float16, [0x00, 0x7E], float.NaN),
            (OnnxDataType.Float16, [0x00, 0x80], -0f),
            (OnnxDataType.BFloat16, [0x7F, 0x7F], 3.3895314e38f),
            (OnnxDataType.BFloat16, [0x01, 0x00], MathF.ScaleB(1, -133)),
            (OnnxDataType.BFloat16, [0x80, 0x3F], 1f),
            (OnnxDataType.BFloat16, [0xC0, 0x7F], float.NaN),
            (OnnxDataType.BFloat16, [0x00, 0x80], -0f),
            (OnnxDataType.Double, BitConverter.GetBytes(-0.0), -0f),
            (OnnxDataType.Double, BitConverter.GetBytes(1e300), float.PositiveInfinity),
            (OnnxDataType.Double, BitConverter.GetBytes(0.1), 0.1f),
        };
        foreach (var (type, raw, expected) in cases)
        {
            var actual = new float[1];
            OnnxDataTypes.ToFloat32(type, raw, actual);
            AssertSameFloats([expected], actual, $"{type} {Convert.ToHexString(raw)}");
        }

        // Float4 packing: two values per byte, the first in the low nibble; an odd count leaves the last high nibble unused.
        var packed = new float[3];
        OnnxDataTypes.ToFloat32(OnnxDataType.Float4E2M1, [0x71, 0xFA], packed);
        AssertSameFloats([0.5f, 6f, -1f], packed, "float4 packing");
    }

    /// <summary>Equal bit for bit, except that any NaN matches any NaN (payloads are not specified by ONNX).</summary>
    private static void AssertSameFloats(float[] expected, float[] actual, string label)
    {
        Assert.HasCount(expected.Length, actual, label);
        for (var i = 0; i < expected.Length; i++)
        {
            if (float.IsNaN(expected[i]) && float.IsNaN(actual[i]))
            {
                continue;
            }

            Assert.AreEqual(BitConverter.SingleToInt32Bits(expected[i]), BitConverter.SingleToInt32Bits(actual[i]), $"{label} element {i}: expected {expected[i]}, got {actual[i]}");
        }
    }

    /// <summary>Runs a one-node model, Cast(to=FLOAT) of an initializer holding <paramref name="raw"/>, in ONNX Runtime.</summary>
    private static float[] OrtCastToFloat(OnnxDataType type, byte[] raw, int count)
    {
        var graph = new GraphProto { Name = "cast" };
        graph.Initializer.Add(new TensorProto { Name = "x", DataType = (int)type, Dims = { count }, RawData = ByteString.CopyFrom(raw) });
        var cast = new NodeProto { OpType = "Cast", Input = { "x" }, Output = { "y" } };
        cast.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)OnnxDataType.Float });
        graph.Node.Add(cast);
        graph.Output.Add(new ValueInfoProto
        {
            Name = "y",
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = count } } } } },
        });
        var model = new ModelProto { IrVersion = 11, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 23 });

        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR, GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var session = new InferenceSession(model.ToByteArray(), options);
        using var runOptions = new RunOptions();
        using var results = session.Run(runOptions, [], [], ["y"]);
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }
}
