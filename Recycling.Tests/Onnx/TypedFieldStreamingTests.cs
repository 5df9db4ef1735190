using System.Runtime.InteropServices;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;
using static Recycling.Tests.Reliability.WireBytes;

namespace Recycling.Tests.Onnx;

/// <summary>
/// Typed fields (float_data, int32_data, int64_data, double_data) are decoded a window at a time, through the file's
/// handle: every window of every type equals the values the fields hold, whatever the offsets (unaligned, backwards),
/// the runs (several packed runs, unpacked values, other fields between) and the tensor's size (many cursor windows);
/// bytes changed or cut after open are a format error naming the file.
/// </summary>
[TestClass]
public sealed class TypedFieldStreamingTests
{
    private const int Large = 100_003; // each tensor spans several 64 KiB windows of the message

    [TestMethod]
    public void WindowsOfTypedFieldsEqualTheirValuesAtAnyOffset()
    {
        var random = new Random(11);
        var floats = Enumerable.Range(0, Large).Select(_ => (float)(random.NextDouble() - 0.5) * 1e3f).ToArray();
        var halves = Enumerable.Range(0, Large).Select(_ => (Half)(random.NextDouble() * 200 - 100)).ToArray();
        var longs = Enumerable.Range(0, Large / 4).Select(i => random.NextInt64(long.MinValue, long.MaxValue) >> (i % 60)).ToArray();
        var doubles = Enumerable.Range(0, Large / 4).Select(_ => random.NextDouble() * 1e300).ToArray();
        var bytes = Enumerable.Range(0, Large).Select(_ => (byte)random.Next(256)).ToArray();

        var f32 = new TensorProto { Name = "f32", DataType = (int)OnnxDataType.Float, Dims = { floats.Length } };
        f32.FloatData.Add(floats);
        var f16 = new TensorProto { Name = "f16", DataType = (int)OnnxDataType.Float16, Dims = { halves.Length } };
        f16.Int32Data.Add(halves.Select(h => (int)BitConverter.HalfToUInt16Bits(h)));
        var i64 = new TensorProto { Name = "i64", DataType = (int)OnnxDataType.Int64, Dims = { longs.Length } };
        i64.Int64Data.Add(longs);
        var f64 = new TensorProto { Name = "f64", DataType = (int)OnnxDataType.Double, Dims = { doubles.Length } };
        f64.DoubleData.Add(doubles);
        var u8 = new TensorProto { Name = "u8", DataType = (int)OnnxDataType.UInt8, Dims = { bytes.Length } };
        u8.Int32Data.Add(bytes.Select(b => (int)b));
        var expected = new Dictionary<string, byte[]>
        {
            ["f32"] = MemoryMarshal.AsBytes(floats.AsSpan()).ToArray(),
            ["f16"] = MemoryMarshal.AsBytes(halves.AsSpan()).ToArray(),
            ["i64"] = MemoryMarshal.AsBytes(longs.AsSpan()).ToArray(),
            ["f64"] = MemoryMarshal.AsBytes(doubles.AsSpan()).ToArray(),
            ["u8"] = bytes,
        };

        var folder = Directory.CreateTempSubdirectory("recycling-typed-").FullName;
        try
        {
            var path = Path.Combine(folder, "typed.onnx");
            File.WriteAllBytes(path, Model(f32, f16, i64, f64, u8).ToByteArray());
            using var model = OnnxModel.Open(path);
            foreach (var tensor in model.Tensors)
            {
                Assert.AreEqual(TensorStorage.Typed, tensor.Storage);
                var want = expected[tensor.Name];
                CollectionAssert.AreEqual(want, tensor.ReadRawBytes(), tensor.Name);
                AssertWindowsMatch(tensor, want, random);
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void PackedRunsUnpackedValuesAndOtherFieldsBetweenDecodeInOrder()
    {
        // float_data as: packed run [0..40000), an unpacked value, doc_string, packed run, unpacked value: 80002 values.
        var values = Enumerable.Range(0, 80_002).Select(i => (float)Math.Sin(i) * i).ToArray();
        var body = new TensorProto { Name = "runs", DataType = (int)OnnxDataType.Float, Dims = { values.Length } };
        var extra = Concat(
            Field(4, MemoryMarshal.AsBytes(values.AsSpan(0, 40_000)).ToArray()),
            Tag(4, WireType.Fixed32), MemoryMarshal.AsBytes(values.AsSpan(40_000, 1)).ToArray(),
            Field(12, "between the runs"u8.ToArray()),
            Field(4, MemoryMarshal.AsBytes(values.AsSpan(40_001, 40_000)).ToArray()),
            Tag(4, WireType.Fixed32), MemoryMarshal.AsBytes(values.AsSpan(80_001, 1)).ToArray());
        var halves = Enumerable.Range(0, 50_001).Select(i => (Half)(i % 2000 - 1000)).ToArray();
        var bits = halves.Select(h => (ulong)BitConverter.HalfToUInt16Bits(h)).ToArray();
        var f16 = new TensorProto { Name = "runs16", DataType = (int)OnnxDataType.Float16, Dims = { halves.Length } };
        var extra16 = Concat(
            Field(5, [.. bits.Take(25_000).SelectMany(Varint)]),
            Tag(5, WireType.Varint), Varint(bits[25_000]),
            Field(5, [.. bits.Skip(25_001).SelectMany(Varint)]));

        var folder = Directory.CreateTempSubdirectory("recycling-typed-runs-").FullName;
        try
        {
            var path = Path.Combine(folder, "runs.onnx");
            var model = Model(body, f16);
            File.WriteAllBytes(path, Splice(Parse(Splice(model, [(7, 0), (5, 0)], extra)), [(7, 0), (5, 0)], extra16));
            using var opened = OnnxModel.Open(path);
            var random = new Random(3);
            var runs = opened.Tensors.Single(t => t.Name == "runs");
            AssertWindowsMatch(runs, MemoryMarshal.AsBytes(values.AsSpan()).ToArray(), random);
            var runs16 = opened.Tensors.Single(t => t.Name == "runs16");
            AssertWindowsMatch(runs16, MemoryMarshal.AsBytes(halves.AsSpan()).ToArray(), random);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void TypedFieldsChangedInPlaceAfterOpenAreAFormatErrorNamingTheFile()
    {
        // 1000 zeros in one packed run; after open, its length prefix says 8 bytes: the zeros that follow read as field
        // number 0. A shortened value count (the run ends early, the message ends) is the same kind of error.
        var zeros = new TensorProto { Name = "zeros", DataType = (int)OnnxDataType.Float, Dims = { 1000 } };
        zeros.FloatData.Add(new float[1000]);
        var last = new TensorProto { Name = "last", DataType = (int)OnnxDataType.Float, Dims = { 3000 } };
        last.FloatData.Add(Enumerable.Range(1, 3000).Select(i => (float)i));
        var folder = Directory.CreateTempSubdirectory("recycling-typed-changed-").FullName;
        try
        {
            var path = Path.Combine(folder, "changed.onnx");
            var bytes = Model(zeros, last).ToByteArray();
            File.WriteAllBytes(path, bytes);
            using var model = OnnxModel.Open(path);
            var run = IndexOf(bytes, Concat(Tag(4, WireType.LengthDelimited), Varint(4000)));
            using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
            {
                stream.Position = run + 1;
                stream.Write([0x88, 0x00]); // 8, in the two bytes that 4000 took
            }

            var tensor = model.Tensors.Single(t => t.Name == "zeros");
            var error = Assert.ThrowsExactly<OnnxFormatException>(() => tensor.ReadRaw(400, new byte[400]));
            StringAssert.Contains(error.Message, "changed.onnx");
            StringAssert.Contains(error.Message, "zeros");
            StringAssert.Contains(error.Message, "invalid field number 0");

            // cut inside the last tensor's values: read through the handle, an error rather than SIGBUS on the mapping
            File.WriteAllBytes(path, bytes.AsSpan(0, bytes.Length - 6000).ToArray());
            var cut = model.Tensors.Single(t => t.Name == "last");
            error = Assert.ThrowsExactly<OnnxFormatException>(() => cut.ReadRawBytes());
            StringAssert.Contains(error.Message, "changed while being read");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>Reads at increasing random offsets through one cursor, then backwards, then without a cursor; each must equal the slice.</summary>
    private static void AssertWindowsMatch(OnnxTensor tensor, byte[] want, Random random)
    {
        var cursor = tensor.OpenCursor();
        Assert.IsNotNull(cursor);
        long offset = 0;
        while (offset < want.Length)
        {
            var length = (int)Math.Min(random.Next(1, 200_000), want.Length - offset);
            AssertWindow(tensor, want, offset, length, cursor);
            offset += length + random.Next(0, 3000);
        }

        for (var i = 0; i < 20; i++)
        {
            var at = random.Next(want.Length);
            var length = Math.Min(random.Next(1, 64), want.Length - at);
            AssertWindow(tensor, want, at, length, cursor);
            AssertWindow(tensor, want, at, length, null);
        }

        AssertWindow(tensor, want, want.Length - 1, 1, cursor);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => tensor.ReadRaw(want.Length - 1, new byte[2], cursor));
    }

    private static void AssertWindow(OnnxTensor tensor, byte[] want, long offset, int length, TypedFieldCursor? cursor)
    {
        var got = new byte[length];
        tensor.ReadRaw(offset, got, cursor);
        CollectionAssert.AreEqual(want.AsSpan((int)offset, length).ToArray(), got, $"{tensor.Name} [{offset}, +{length})");
    }

    private static ModelProto Model(params TensorProto[] tensors)
    {
        var graph = new GraphProto { Name = "typed" };
        graph.Initializer.Add(tensors);
        foreach (var t in tensors)
        {
            graph.Output.Add(new ValueInfoProto { Name = t.Name });
        }

        return new ModelProto { IrVersion = 8, OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
    }

    private static ModelProto Parse(byte[] bytes) => ModelProto.Parser.ParseFrom(bytes);

    private static int IndexOf(byte[] haystack, byte[] needle) => haystack.AsSpan().IndexOf(needle);
}
