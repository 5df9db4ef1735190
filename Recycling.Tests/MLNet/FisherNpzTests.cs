using System.IO.Compression;
using System.Runtime.InteropServices;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.MLNet;

/// <summary>Fisher files as numpy .npz archives (the zoo's format) merge exactly as the same values in .onnx Fisher files.</summary>
[TestClass]
public sealed class FisherNpzTests
{
    private static readonly string Fixture = Path.GetFullPath(Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-merge", "cnn", "default"));

    [TestMethod]
    public void NpzFisherFilesMergeLikeOnnxFisherFiles()
    {
        var folder = Directory.CreateTempSubdirectory("recycling-fisher-").FullName;
        try
        {
            string[] inputs = [Path.Combine(Fixture, "ft1.onnx"), Path.Combine(Fixture, "ft2.onnx")];
            var onnxFishers = new List<string>();
            var npzFishers = new List<string>();
            for (int m = 0; m < inputs.Length; m++)
            {
                var random = new Random(100 + m);
                using var model = OnnxModel.Open(inputs[m]);
                var values = model.Tensors.Where(t => t.Kind == TensorKind.Initializer && t.DataType == OnnxDataType.Float)
                    .ToDictionary(t => t.Name, t => Enumerable.Range(0, (int)t.ElementCount).Select(_ => (float)random.NextDouble()).ToArray());
                var onnxPath = Path.Combine(folder, $"f{m}.onnx");
                OnnxWriter.Write(model, onnxPath, replace: t => values.TryGetValue(t.Name, out var v)
                    ? new TensorReplacement(OnnxDataType.Float, MemoryMarshal.AsBytes(v.AsSpan()).ToArray()) : null);
                onnxFishers.Add(onnxPath);

                var npzPath = Path.Combine(folder, $"f{m}.fisher.npz");
                using (var zip = ZipFile.Open(npzPath, ZipArchiveMode.Create))
                {
                    foreach (var (name, v) in values)
                    {
                        var shape = model.Tensors.First(t => t.Name == name).Shape.ToArray();
                        var npy = Path.Combine(folder, "entry.npy");
                        NpyFile.Write(npy, NpyArray.From<float>(v, shape));
                        zip.CreateEntryFromFile(npy, name + ".npy");
                    }
                }

                npzFishers.Add(npzPath);
            }

            var opened = inputs.Select(OnnxModel.Open).ToList();
            try
            {
                var plan = Aligner.Align(opened);
                var options = new MergeOptions { Method = MergeMethod.Fisher };
                byte[] fromOnnx, fromNpz;
                using (var fishers = FisherSet.Open(onnxFishers, opened))
                {
                    fromOnnx = ModelMerger.MergeToBytes(plan, options, fishers);
                }

                using (var fishers = FisherSet.Open(npzFishers, opened))
                {
                    fromNpz = ModelMerger.MergeToBytes(plan, options, fishers);
                }

                CollectionAssert.AreEqual(fromOnnx, fromNpz);
                CollectionAssert.AreNotEqual(ModelMerger.MergeToBytes(plan, new MergeOptions()), fromNpz, "random Fisher weights are not a uniform average");
            }
            finally
            {
                opened.ForEach(o => o.Dispose());
            }

            using var first = OnnxModel.Open(inputs[0]);
            using var second = OnnxModel.Open(inputs[1]);
            var e = Assert.ThrowsExactly<RecyclingException>(() => FisherSet.Open([npzFishers[0], Path.Combine(folder, "f1.txt")], [first, second]));
            StringAssert.Contains(e.Message, "f1.txt");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
