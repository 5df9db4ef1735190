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
/// allocated and re-read a whole fp32 chunk).
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

    private static string Write(string path, OnnxDataType type, int poisonAt, float poison)
    {
        var random = new Random(7);
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
        graph.Initializer.Add(new TensorProto { Name = "w", DataType = (int)type, Dims = { 1, Elements }, RawData = ByteString.CopyFrom(raw) });
        graph.Node.Add(new NodeProto { OpType = "Mul", Input = { "x", "w" }, Output = { "y" } });
        graph.Output.Add(new ValueInfoProto { Name = "y" });
        var model = new ModelProto { IrVersion = 8, OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }
}
