using System.Runtime.InteropServices;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Merging;

/// <summary>
/// Naming the input that holds NaN or infinity scans the chunk already in the read slots: the right input for each
/// stored type (either sign, NaN or infinity, in the last input or the base), and no chunk allocated to find it (it
/// allocated and re-read a whole fp32 chunk). Typed fields (float_data, int32_data) are read a window at a time,
/// every chunk equal to the tensor's values, without decoding the whole tensor into memory.
/// </summary>
[TestClass]
public sealed class ParameterChunksTests
{
    private const int Elements = 300_000;

    [TestMethod]
    [DataRow(OnnxDataType.Float, float.NaN)]
    [DataRow(OnnxDataType.Float16, float.NegativeInfinity)]
    [DataRow(OnnxDataType.BFloat16, float.PositiveInfinity)]
    [DataRow(OnnxDataType.BFloat16, -float.NaN)]
    public void NonFiniteInputNamesThePoisonedTensorWithoutAllocatingAChunk(OnnxDataType type, float poison)
    {
        var folder = Directory.CreateTempSubdirectory("recycling-chunks-").FullName;
        try
        {
            using var clean = OnnxModel.Open(Write(Path.Combine(folder, "clean.onnx"), type, poisonAt: -1, poison));
            using var other = OnnxModel.Open(Write(Path.Combine(folder, "other.onnx"), type, poisonAt: -1, poison));
            using var poisoned = OnnxModel.Open(Write(Path.Combine(folder, "poisoned.onnx"), type, poisonAt: Elements - 7, poison));

            Assert.IsNull(Scan(Aligner.Align([clean, other]), out _));
            Assert.AreSame(poisoned.Tensors.Single(t => t.Name == "w"), Scan(Aligner.Align([clean, poisoned]), out var allocated));
            Assert.IsTrue(allocated < 1024, $"{allocated} bytes allocated naming the poisoned input of a {Elements}-element chunk");
            Assert.AreSame(poisoned.Tensors.Single(t => t.Name == "w"), Scan(Aligner.Align([clean, other], poisoned), out _), "the base");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    [DataRow(OnnxDataType.Float)]
    [DataRow(OnnxDataType.Float16)]
    public unsafe void TypedFieldChunksEqualTheValuesWhileAllocatingLessThanOneTensor(OnnxDataType type)
    {
        const int chunk = 70_001; // chunks across the cursor's 64 KiB windows, the last one short
        var folder = Directory.CreateTempSubdirectory("recycling-chunks-typed-").FullName;
        try
        {
            using var a = OnnxModel.Open(Write(Path.Combine(folder, "a.onnx"), type, poisonAt: -1, 0, seed: 1, typed: true));
            using var b = OnnxModel.Open(Write(Path.Combine(folder, "b.onnx"), type, poisonAt: -1, 0, seed: 2, typed: true));
            using var basis = OnnxModel.Open(Write(Path.Combine(folder, "base.onnx"), type, poisonAt: -1, 0, seed: 3, typed: true));
            var parameter = Aligner.Align([a, b], basis).Parameters.Single(p => p.Tensors[0].Name == "w");
            OnnxTensor[] tensors = [.. parameter.Tensors, parameter.Base!];
            Assert.IsTrue(tensors.All(t => t.Storage == TensorStorage.Typed));
            byte[][] expected = [.. tensors.Select(t => t.ReadRawBytes())];
            int size = type == OnnxDataType.Float ? 4 : 2;
            var buffers = new ChunkBuffers();
            _ = Pass(new ParameterChunks(parameter, null, buffers)); // slots grown, JIT warmed

            var before = GC.GetAllocatedBytesForCurrentThread();
            var chunks = new ParameterChunks(parameter, null, buffers);
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            var (first, firstAllocated) = Pass(chunks);
            var (second, secondAllocated) = Pass(chunks); // a second pass starts again from offset 0
            allocated += firstAllocated + secondAllocated;
            var read = first.Concat(second).ToList();

            foreach (var (offset, count, sources) in read)
            {
                for (int i = 0; i < tensors.Length; i++)
                {
                    CollectionAssert.AreEqual(expected[i].AsSpan(offset * size, count * size).ToArray(), sources[i], $"{tensors[i].Path} at {offset}");
                }
            }

            // The whole-tensor decode allocated the 3 tensors' bytes (1.8 MiB in fp32); the cursors hold a 64 KiB window each.
            Assert.IsTrue(allocated < Elements * size, $"{allocated} bytes allocated reading 3 typed tensors of {Elements * size} bytes");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }

        // Every chunk of a pass, each input's and the base's bytes copied out, and the bytes the loads allocated.
        static (List<(int Offset, int Count, byte[][] Sources)> Chunks, long Allocated) Pass(ParameterChunks chunks)
        {
            var copies = new List<(int, int, byte[][])>();
            long allocated = 0;
            for (int offset = 0; offset < Elements; offset += chunk)
            {
                int count = Math.Min(chunk, Elements - offset);
                long before = GC.GetAllocatedBytesForCurrentThread();
                chunks.Load(offset, count);
                allocated += GC.GetAllocatedBytesForCurrentThread() - before;
                TensorSource[] views = [.. chunks.Inputs.ToArray(), chunks.Base!.Value];
                int size = TensorSource.ElementSize(views[0].DataType);
                copies.Add((offset, count, [.. views.Select(v => new ReadOnlySpan<byte>(v.Data, count * size).ToArray())]));
            }

            return (copies, allocated);
        }
    }

    private static OnnxTensor? Scan(AlignmentPlan plan, out long allocated)
    {
        var chunks = new ParameterChunks(plan.Parameters.Single(p => p.Tensors[0].Name == "w"), null, new ChunkBuffers());
        chunks.Load(0, Elements);
        _ = chunks.NonFiniteInput(); // warmed
        var before = GC.GetAllocatedBytesForCurrentThread();
        var found = chunks.NonFiniteInput();
        allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        return found;
    }

    private static string Write(string path, OnnxDataType type, int poisonAt, float poison, int seed = 7, bool typed = false)
    {
        var random = new Random(seed);
        var values = Enumerable.Range(0, Elements).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        if (poisonAt >= 0)
        {
            values[poisonAt] = poison;
        }

        byte[] raw = type switch
        {
            OnnxDataType.Float => MemoryMarshal.AsBytes(values.AsSpan()).ToArray(),
            OnnxDataType.Float16 => MemoryMarshal.AsBytes(values.Select(v => (Half)v).ToArray().AsSpan()).ToArray(),
            _ => MemoryMarshal.AsBytes(values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray().AsSpan()).ToArray(),
        };
        var graph = new GraphProto { Name = "chunks" };
        graph.Input.Add(new ValueInfoProto { Name = "x" });
        var w = new TensorProto { Name = "w", DataType = (int)type, Dims = { 1, Elements } };
        if (!typed)
        {
            w.RawData = ByteString.CopyFrom(raw);
        }
        else if (type == OnnxDataType.Float)
        {
            w.FloatData.Add(values);
        }
        else
        {
            w.Int32Data.Add(MemoryMarshal.Cast<byte, ushort>(raw).ToArray().Select(bits => (int)bits));
        }

        graph.Initializer.Add(w);
        graph.Node.Add(new NodeProto { OpType = "Mul", Input = { "x", "w" }, Output = { "y" } });
        graph.Output.Add(new ValueInfoProto { Name = "y" });
        var model = new ModelProto { IrVersion = 8, OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }
}
