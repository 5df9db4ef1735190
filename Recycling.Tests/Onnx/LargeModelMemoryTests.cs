using System.Numerics;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Onnx;

/// <summary>
/// A generated model with 1 GiB of external data (16 float initializers of 64 MiB, sparse apart from marker blocks):
/// opening it and reading every byte of every tensor, and rewriting it with external data, stay under 64 MiB of
/// managed allocation.
/// </summary>
[TestClass]
public sealed class LargeModelMemoryTests
{
    private const int TensorCount = 16;
    private const int Side = 4096; // 4096 x 4096 float = 64 MiB
    private const long TensorBytes = (long)Side * Side * sizeof(float);
    private const int MarkerBytes = 4096;
    private const long AllocationLimit = 64L << 20;

    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    public void OneGibibyteOfExternalDataIsReadAndRewrittenWithLittleManagedAllocation()
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-large-");
        try
        {
            var (path, expectedChecksum) = CreateModel(scratch.FullName);

            var before = GC.GetAllocatedBytesForCurrentThread();
            ulong checksum = 0;
            long bytesRead = 0;
            using (var model = OnnxModel.Open(path))
            {
                var opened = GC.GetAllocatedBytesForCurrentThread() - before;
                TestContext.WriteLine($"open: {opened:N0} bytes allocated");
                Assert.IsLessThan(4L << 20, opened, "opening allocates only the structure");
                Assert.HasCount(TensorCount, model.Tensors);
                foreach (var tensor in model.Tensors)
                {
                    Assert.AreEqual(TensorStorage.External, tensor.Storage);
                    const int Window = 8 << 20;
                    for (long offset = 0; offset < tensor.ByteLength; offset += Window)
                    {
                        var window = tensor.GetRawSpan(offset, (int)Math.Min(Window, tensor.ByteLength - offset));
                        checksum += Checksum(window);
                        bytesRead += window.Length;
                    }
                }
            }

            var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            TestContext.WriteLine($"read {bytesRead:N0} bytes, {allocated:N0} bytes allocated");
            Assert.AreEqual(TensorCount * TensorBytes, bytesRead);
            Assert.AreEqual(expectedChecksum, checksum, "sum of every byte of every tensor (64-bit words, wrapping)");
            Assert.IsLessThan(AllocationLimit, allocated);

            // Rewriting streams the values from the mapping to the new data file.
            var output = Path.Combine(scratch.FullName, "rewritten.onnx");
            before = GC.GetAllocatedBytesForCurrentThread();
            using (var model = OnnxModel.Open(path))
            {
                OnnxWriter.Write(model, output, new OnnxWriteOptions { ExternalData = ExternalDataMode.External });
            }

            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            TestContext.WriteLine($"rewrite: {allocated:N0} bytes allocated");
            Assert.IsLessThan(AllocationLimit, allocated);
            using (var rewritten = OnnxModel.Open(output))
            {
                Assert.IsTrue(rewritten.Tensors.All(t => t.Storage == TensorStorage.External && t.DataOffset % 65536 == 0));
                Assert.AreEqual(expectedChecksum, rewritten.Tensors.Aggregate(0UL, (sum, t) => sum + Checksum(t.GetRawSpan())));
            }
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    /// <summary>External data past 2 GiB (a 2.5 GiB tensor, sparse): the model opens, the tensor reports its size, whole-span
    /// access is refused with a clear error, and windows reach its last bytes.</summary>
    [TestMethod]
    public void TensorOverTwoGibibytesOpensAndIsReadInWindows()
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-large-");
        try
        {
            const long elements = 640L << 20; // 2.5 GiB of float32
            const long bytes = elements * sizeof(float);
            var dataPath = Path.Combine(scratch.FullName, "huge.onnx.data");
            var marker = new byte[MarkerBytes];
            Random.Shared.NextBytes(marker);
            using (var data = new FileStream(dataPath, FileMode.CreateNew, FileAccess.Write))
            {
                data.SetLength(65536 + bytes);
                data.Position = 65536 + bytes - MarkerBytes;
                data.Write(marker);
            }

            var small = new TensorProto { Name = "bias", DataType = (int)OnnxDataType.Float, Dims = { 4 }, RawData = ByteString.CopyFrom(new byte[16]) };
            var huge = new TensorProto { Name = "huge.weight", DataType = (int)OnnxDataType.Float, Dims = { 640, 1 << 20 }, DataLocation = TensorProto.Types.DataLocation.External };
            huge.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "huge.onnx.data" });
            huge.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "65536" });
            var model = new ModelProto { IrVersion = 8, Graph = new GraphProto { Name = "huge", Initializer = { small, huge } } };
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
            var path = Path.Combine(scratch.FullName, "huge.onnx");
            File.WriteAllBytes(path, model.ToByteArray());

            using var opened = OnnxModel.Open(path);
            var tensor = opened.Tensors.Single(t => t.Name == "huge.weight");
            Assert.AreEqual(elements, tensor.ElementCount);
            Assert.AreEqual(bytes, tensor.ByteLength);
            Assert.AreEqual(65536, tensor.DataOffset);
            Assert.ThrowsExactly<InvalidOperationException>(() => tensor.GetRawSpan());
            CollectionAssert.AreEqual(marker, tensor.GetRawSpan(bytes - MarkerBytes, MarkerBytes).ToArray());
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => tensor.GetRawSpan(bytes - MarkerBytes + 1, MarkerBytes));
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    /// <summary>Writes big.onnx and big.onnx.data: a sparse 1 GiB file with a distinct 4 KiB marker block at the start
    /// and end of each tensor, so that the checksum proves every tensor's offset and every byte were read.</summary>
    private static (string Path, ulong Checksum) CreateModel(string folder)
    {
        var dataPath = Path.Combine(folder, "big.onnx.data");
        ulong checksum = 0;
        var graph = new GraphProto { Name = "large" };
        using (var data = new FileStream(dataPath, FileMode.CreateNew, FileAccess.Write))
        {
            data.SetLength(TensorCount * TensorBytes);
            var marker = new byte[MarkerBytes];
            for (var i = 0; i < TensorCount; i++)
            {
                var offset = i * TensorBytes;
                foreach (var at in new[] { offset, offset + TensorBytes - MarkerBytes })
                {
                    Random.Shared.NextBytes(marker);
                    data.Position = at;
                    data.Write(marker);
                    checksum += Checksum(marker);
                }

                var tensor = new TensorProto { Name = $"layer{i}.weight", DataType = (int)OnnxDataType.Float, Dims = { Side, Side }, DataLocation = TensorProto.Types.DataLocation.External };
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "big.onnx.data" });
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = TensorBytes.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                graph.Initializer.Add(tensor);
            }
        }

        var model = new ModelProto { IrVersion = 8, ProducerName = "recycling-tests", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        var path = Path.Combine(folder, "big.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        return (path, checksum);
    }

    /// <summary>Sum of the little-endian 64-bit words (wrapping); lengths are multiples of 8 here.</summary>
    private static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        var words = MemoryMarshal.Cast<byte, ulong>(bytes);
        var vectors = MemoryMarshal.Cast<ulong, Vector<ulong>>(words);
        var accumulator = Vector<ulong>.Zero;
        foreach (var v in vectors)
        {
            accumulator += v;
        }

        var sum = Vector.Sum(accumulator);
        for (var i = vectors.Length * Vector<ulong>.Count; i < words.Length; i++)
        {
            sum += words[i];
        }

        return sum;
    }
}
