using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Proto;

namespace Recycling.Tests.Reliability;

/// <summary>
/// Tie detection reads large weights in bounded windows: the transposed sample of every 2-D weight (hashed on every
/// merge) read the whole tensor, and so did the full transposed hash and comparison of a tied copy, which put the
/// largest tensors of a 4 × 1 GiB merge in memory several times over (the 130–170 MiB of issue 17). Pinned by the bytes
/// this thread allocates while aligning, against the size of one weight.
/// </summary>
[TestClass]
public sealed class TieDetectionMemoryTests
{
    private const int Rows = 1000;
    private const int Cols = 2048;
    private const long WeightBytes = (long)Rows * Cols * sizeof(float);

    [TestMethod]
    public void ATransposedTieOfLargeWeightsIsFoundWhileAllocatingLessThanOneWeight() => AssertTieFoundInBoundedMemory(typed: false);

    /// <summary>
    /// The same weights in float_data instead of raw_data: typed fields were decoded whole for every hash and comparison
    /// (and tensors over 2^28 elements never compared); they are now decoded a window at a time.
    /// </summary>
    [TestMethod]
    public void ATransposedTieOfTypedFieldWeightsIsFoundWhileAllocatingLessThanOneWeight() => AssertTieFoundInBoundedMemory(typed: true);

    private static void AssertTieFoundInBoundedMemory(bool typed)
    {
        var folder = Directory.CreateTempSubdirectory("recycling-tiemem-").FullName;
        try
        {
            using var a = OnnxModel.Open(Write(Path.Combine(folder, "a.onnx"), fineTuning: 1, typed));
            using var b = OnnxModel.Open(Write(Path.Combine(folder, "b.onnx"), fineTuning: 2, typed));
            Assert.IsTrue(a.Tensors.All(t => t.Storage == (typed ? TensorStorage.Typed : TensorStorage.Raw)));
            _ = Aligner.Align([a, b]); // JIT and pools warmed, so the measured run counts only what alignment holds
            var before = GC.GetAllocatedBytesForCurrentThread();
            var plan = Aligner.Align([a, b]);
            var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

            var byName = plan.Parameters.ToDictionary(p => p.Tensors[0].Name);
            Assert.AreEqual(byName["w"].Key, byName["w_t"].TiedTo, "w_t is w transposed in both models");
            Assert.IsTrue(byName["w_t"].TiedTransposed);
            Assert.IsNull(byName["w_near"].TiedTo, "w_near differs from w's transpose in one element");
            Assert.IsNull(byName["w"].TiedTo);
            // The whole-tensor reads allocated at least 6 weights here (sample, full hashes of 2 models, comparison).
            Assert.IsTrue(allocated < WeightBytes / 2, $"{allocated} bytes allocated aligning weights of {WeightBytes} bytes");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// x [1, Rows] · w [Rows, Cols] · w_t [Cols, Rows] · w_near... : w_t is w transposed, w_near is too except one
    /// element off the sampled positions, so only a full comparison tells them apart. Fine-tunings move w by seeded noise.
    /// </summary>
    private static string Write(string path, int fineTuning, bool typed)
    {
        var random = new Random(5);
        var noise = new Random(100 + fineTuning);
        var w = new float[Rows * Cols];
        for (var i = 0; i < w.Length; i++)
        {
            w[i] = (float)(random.NextDouble() - 0.5) + (float)(noise.NextDouble() * 0.01);
        }

        var transposed = new float[w.Length];
        for (var r = 0; r < Rows; r++)
        {
            for (var c = 0; c < Cols; c++)
            {
                transposed[(c * Rows) + r] = w[(r * Cols) + c];
            }
        }

        var near = (float[])transposed.Clone();
        near[1] += 1;
        var graph = new GraphProto { Name = "tied" };
        graph.Input.Add(ModelProtos.FloatRow("x", Rows));
        graph.Initializer.Add(Tensor("w", w, Rows, Cols, typed));
        graph.Initializer.Add(Tensor("w_t", transposed, Cols, Rows, typed));
        graph.Initializer.Add(Tensor("w_near", near, Cols, Rows, typed));
        graph.Node.Add(new NodeProto { OpType = "MatMul", Input = { "x", "w" }, Output = { "h" } });
        graph.Node.Add(new NodeProto { OpType = "MatMul", Input = { "h", "w_t" }, Output = { "y" } });
        graph.Node.Add(new NodeProto { OpType = "MatMul", Input = { "h", "w_near" }, Output = { "z" } });
        graph.Output.Add(ModelProtos.FloatRow("y", Rows));
        graph.Output.Add(ModelProtos.FloatRow("z", Rows));
        var model = new ModelProto { IrVersion = 8, OpsetImport = { new OperatorSetIdProto { Version = 17 } }, Graph = graph };
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private static TensorProto Tensor(string name, float[] values, long rows, long cols, bool typed)
    {
        if (!typed)
        {
            return ModelProtos.FloatTensor(name, values, rows, cols);
        }

        var tensor = new TensorProto { Name = name, DataType = (int)OnnxDataType.Float, Dims = { rows, cols } };
        tensor.FloatData.Add(values);
        return tensor;
    }
}
