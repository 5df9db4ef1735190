using System.Runtime.CompilerServices;
using Recycling.Cli.Commands;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.Onnx;

/// <summary>
/// The element-type table: one row per ONNX type at its wire value, rows consistent with themselves (so a new row
/// cannot contradict its size or codec), and the names, numpy codes and typed-field rules of the ONNX and numpy
/// specifications (the decoders are checked against independent references in FloatConversionTests and ElementCodecTests).
/// </summary>
[TestClass]
public sealed class ElementTypesTests
{
    [TestMethod]
    public void EveryOnnxTypeHasItsRowAtItsWireValue()
    {
        foreach (var type in Enum.GetValues<OnnxDataType>().Where(t => t != OnnxDataType.Undefined))
        {
            Assert.AreEqual(type, ElementTypes.Of(type).Type);
            Assert.IsTrue(ElementTypes.IsDefined(type), type.ToString());
        }

        Assert.HasCount(Enum.GetValues<OnnxDataType>().Length - 1, ElementTypes.All.ToList());
        foreach (var unknown in new[] { OnnxDataType.Undefined, (OnnxDataType)27, (OnnxDataType)(-1), (OnnxDataType)int.MaxValue })
        {
            Assert.IsFalse(ElementTypes.IsDefined(unknown));
            Assert.AreEqual(0, OnnxDataTypes.BitsPerElement(unknown));
            Assert.IsFalse(OnnxDataTypes.IsFloatingPoint(unknown));
            Assert.IsNull(ElementTypes.Of(unknown).Decode);
        }
    }

    [TestMethod]
    public void RowsAgreeWithThemselves()
    {
        foreach (var row in ElementTypes.All)
        {
            var what = row.Type.ToString();
            if (row.Clr is not null)
            {
                Assert.AreEqual(SizeOf(row.Clr) * 8, row.Bits, what);
            }

            if (row.NpyCode is not null)
            {
                Assert.IsNotNull(row.Clr, what);
                Assert.AreEqual(row.Size.ToString(System.Globalization.CultureInfo.InvariantCulture), row.NpyCode[1..], what);
                Assert.AreEqual(row.Type, (OnnxDataType)NpyOnnxTypes.FromOnnx(row.Type)!.Value, what);
            }

            Assert.AreEqual(row.IsFloatingPoint, row.Kind == ElementKind.Float, what);
            if (row.IsFloatingPoint)
            {
                Assert.IsNotNull(row.Decode, what);
                Assert.IsTrue(row.MaxFinite > 0, what);
            }

            if (row.IsMergeable)
            {
                Assert.IsTrue(row.IsFloatingPoint && row.Size > 0 && row.Names is { Length: > 1 }, what);
            }

            Assert.AreEqual(row.Kind is ElementKind.SignedInteger or ElementKind.UnsignedInteger or ElementKind.Bool && row.Size > 0, row.DecodeInteger is not null, what);
            Assert.AreEqual(0, row.Bits % 8 == 0 ? 0 : 8 % row.Bits, what); // sub-byte types pack whole elements into a byte
        }
    }

    [TestMethod]
    public void TypedFieldsFollowTheOnnxSchema()
    {
        // onnx.proto: float_data (4) holds FLOAT and COMPLEX64, int64_data (7) INT64, double_data (10) DOUBLE and
        // COMPLEX128, uint64_data (11) UINT32 and UINT64, string_data (6) STRING, int32_data (5) every other type.
        var expected = new Dictionary<OnnxDataType, int>
        {
            [OnnxDataType.Float] = 4, [OnnxDataType.Complex64] = 4, [OnnxDataType.Int64] = 7, [OnnxDataType.Double] = 10,
            [OnnxDataType.Complex128] = 10, [OnnxDataType.UInt32] = 11, [OnnxDataType.UInt64] = 11, [OnnxDataType.String] = 6,
        };
        foreach (var row in ElementTypes.All)
        {
            Assert.AreEqual(expected.GetValueOrDefault(row.Type, 5), row.TypedField, row.Type.ToString());
        }

        Assert.AreEqual(6, ElementTypes.Of(OnnxDataType.Complex64).TypedValueCount(3)); // real and imaginary parts
        Assert.AreEqual(6, ElementTypes.Of(OnnxDataType.Complex128).TypedValueCount(3));
        Assert.AreEqual(3, ElementTypes.Of(OnnxDataType.Int4).TypedValueCount(5)); // two per int32_data value, rounded up
        Assert.AreEqual(2, ElementTypes.Of(OnnxDataType.UInt2).TypedValueCount(5)); // four per value
        Assert.AreEqual(5, ElementTypes.Of(OnnxDataType.Float16).TypedValueCount(5)); // one per value, in the low 16 bits
        Assert.AreEqual(5, ElementTypes.Of(OnnxDataType.String).TypedValueCount(5));
        Assert.AreEqual(long.MaxValue / 2 * 2, ElementTypes.Of(OnnxDataType.Complex64).TypedValueCount(long.MaxValue / 2));
    }

    [TestMethod]
    public void LargestFiniteValuesAreTheFormats()
    {
        // The format definitions: IEEE half, bfloat16 0x7F7F, OCP float8 (E4M3FN 448, E5M2 57344), the FNUZ variants
        // (240, 57344), E8M0 2^127, FP4 E2M1 6.
        Assert.AreEqual(65504, ElementTypes.Of(OnnxDataType.Float16).MaxFinite);
        Assert.AreEqual((double)BitConverter.UInt32BitsToSingle(0x7F7F_0000), ElementTypes.Of(OnnxDataType.BFloat16).MaxFinite);
        Assert.AreEqual(448, ElementTypes.Of(OnnxDataType.Float8E4M3FN).MaxFinite);
        Assert.AreEqual(240, ElementTypes.Of(OnnxDataType.Float8E4M3FNUZ).MaxFinite);
        Assert.AreEqual(57344, ElementTypes.Of(OnnxDataType.Float8E5M2).MaxFinite);
        Assert.AreEqual(57344, ElementTypes.Of(OnnxDataType.Float8E5M2FNUZ).MaxFinite);
        Assert.AreEqual(Math.ScaleB(1, 127), ElementTypes.Of(OnnxDataType.Float8E8M0).MaxFinite);
        Assert.AreEqual(6, ElementTypes.Of(OnnxDataType.Float4E2M1).MaxFinite);
        Assert.AreEqual("fp16 range (±65504)", MergeJob.OverflowRange(OnnxDataType.Float16));
        Assert.AreEqual("bf16 range (±3.39e38)", MergeJob.OverflowRange(OnnxDataType.BFloat16));
    }

    [TestMethod]
    [DataRow("fp32", OnnxDataType.Float)]
    [DataRow("FLOAT32", OnnxDataType.Float)]
    [DataRow("float", OnnxDataType.Float)]
    [DataRow("fp16", OnnxDataType.Float16)]
    [DataRow("Half", OnnxDataType.Float16)]
    [DataRow("float16", OnnxDataType.Float16)]
    [DataRow("bf16", OnnxDataType.BFloat16)]
    [DataRow("bfloat16", OnnxDataType.BFloat16)]
    public void OutputTypeNamesAreParsedInAnyCase(string name, OnnxDataType expected)
    {
        Assert.AreEqual(expected, MergeCommand.ParseDtype(name));
        Assert.AreEqual(expected, ElementTypes.FromName(name)!.Type);
    }

    [TestMethod]
    [DataRow("fp64")]
    [DataRow("double")]
    [DataRow("int8")]
    [DataRow("")]
    [DataRow("fp 16")]
    public void OtherOutputTypeNamesAreRefusedWithTheChoices(string name)
    {
        var e = Assert.ThrowsExactly<RecyclingException>(() => MergeCommand.ParseDtype(name));
        StringAssert.EndsWith(e.Message, ": use fp32, fp16 or bf16");
        Assert.IsNull(MergeCommand.ParseDtype(null));
    }

    [TestMethod]
    public void IntegerArraysDecodeWithTheirSign()
    {
        var int8 = NpyArray.From<sbyte>([-128, -1, 0, 127], 4);
        CollectionAssert.AreEqual(new float[] { -128, -1, 0, 127 }, int8.ToSingleArray());
        CollectionAssert.AreEqual(new long[] { -128, -1, 0, 127 }, int8.ToInt64Array());
        var uint8 = NpyArray.From<byte>([0, 200, 255], 3);
        CollectionAssert.AreEqual(new float[] { 0, 200, 255 }, uint8.ToSingleArray());
        CollectionAssert.AreEqual(new long[] { 0, 200, 255 }, uint8.ToInt64Array());
        var int64 = NpyArray.From<long>([long.MinValue, (1L << 24) + 1], 2);
        CollectionAssert.AreEqual(new float[] { -9.223372E+18f, 16777216f }, int64.ToSingleArray()); // rounds to nearest
        CollectionAssert.AreEqual(new long[] { long.MinValue, (1L << 24) + 1 }, int64.ToInt64Array());
        var flags = new NpyArray(NpyDType.Bool, [3], [0, 1, 2]);
        CollectionAssert.AreEqual(new float[] { 0, 1, 1 }, flags.ToSingleArray());
        Assert.ThrowsExactly<InvalidOperationException>(() => NpyArray.From<float>([1f], 1).ToInt64Array());
    }

    private static int SizeOf(Type type) =>
        (int)typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf))!.MakeGenericMethod(type).Invoke(null, null)!;
}
