using System.Runtime.InteropServices;
using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

[TestClass]
public sealed class ElementCodecTests
{
    public static IEnumerable<object[]> CpuPaths => SimdPaths.Available.Select(p => new object[] { p.ToString() });

    [TestMethod]
    [DynamicData(nameof(CpuPaths))]
    public void EveryHalfBitPatternWidensLikeDotNetsHalf(string pathName)
    {
        SimdPath path = Enum.Parse<SimdPath>(pathName);
        // All 65536 float16 patterns through the kernel's widening (averaging one model returns it unchanged).
        ushort[] patterns = Enumerable.Range(0, 1 << 16).Select(i => (ushort)i).ToArray();
        TestTensor tensor = TestTensor.Create(new float[patterns.Length], OnnxDataType.Float16);
        MemoryMarshal.AsBytes(patterns.AsSpan()).CopyTo(tensor.Bytes);
        var output = new float[patterns.Length];
        using var kernels = new CpuMergeKernels(path, threads: 1);
        kernels.WeightedSum([tensor.Source], [1f], null, null, output);
        for (int i = 0; i < patterns.Length; i++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf(patterns[i]);
            if (float.IsNaN(expected))
            {
                Assert.IsTrue(float.IsNaN(output[i]), $"0x{i:X4}");
            }
            else
            {
                Assert.AreEqual(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(output[i]), $"0x{i:X4}");
            }
        }
    }

    [TestMethod]
    public void EncodeRoundsToNearestEvenForHalfAndBFloat16()
    {
        var random = new Random(1);
        float[] values = Enumerable.Range(0, 10000).Select(_ => (float)((random.NextDouble() - 0.5) * Math.Pow(2, random.Next(-30, 30))))
            .Concat([0f, -0f, 1f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, float.MaxValue, 1.00390625f, 1.01171875f])
            .ToArray();
        var half = new byte[values.Length * 2];
        var bf16 = new byte[values.Length * 2];
        ElementCodec.Encode(values, OnnxDataType.Float16, half);
        ElementCodec.Encode(values, OnnxDataType.BFloat16, bf16);
        for (int i = 0; i < values.Length; i++)
        {
            Assert.AreEqual((Half)values[i], BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(half, i * 2)), $"half of {values[i]:R}");
            float decoded = BitConverter.UInt32BitsToSingle((uint)BitConverter.ToUInt16(bf16, i * 2) << 16);
            Assert.AreEqual(ReferenceBFloat16(values[i]), decoded, $"bfloat16 of {values[i]:R}");
        }

        var roundTrip = new float[values.Length];
        ElementCodec.Decode(bf16, OnnxDataType.BFloat16, roundTrip);
        Assert.AreEqual(1.0f, roundTrip[^2], "1.00390625 is a tie: rounds to the even 1.0");
        Assert.AreEqual(1.015625f, roundTrip[^1], "1.01171875 is a tie: rounds to the even 1.015625");
    }

    /// <summary>Round to nearest even to 8 significant bits, by exact double arithmetic.</summary>
    private static float ReferenceBFloat16(float value)
    {
        if (!float.IsFinite(value) || value == 0)
        {
            return value;
        }

        int exponent = Math.ILogB(value);
        double quantum = Math.ScaleB(1.0, exponent - 7);
        double rounded = Math.Round(value / quantum, MidpointRounding.ToEven) * quantum;
        return Math.Abs(rounded) > float.MaxValue ? (value > 0 ? float.PositiveInfinity : float.NegativeInfinity) : (float)rounded;
    }

    [TestMethod]
    public void TensorIdsAreFnv1aOfTheUtf8Key()
    {
        // Published FNV-1a 64 test vectors.
        Assert.AreEqual(0xcbf29ce484222325UL, TensorId.FromKey(""));
        Assert.AreEqual(0xaf63dc4c8601ec8cUL, TensorId.FromKey("a"));
        Assert.AreEqual(0x85944171f73967e8UL, TensorId.FromKey("foobar"));
    }

    [TestMethod]
    public void ForcedSimdPathIsParsedOrRefused()
    {
        Assert.AreEqual(SimdPath.Scalar, SimdPaths.Resolve("scalar"));
        Assert.AreEqual(SimdPaths.Available[^1], SimdPaths.Resolve(null));
        Assert.ThrowsExactly<RecyclingException>(() => SimdPaths.Resolve("avx9000"));
    }
}
