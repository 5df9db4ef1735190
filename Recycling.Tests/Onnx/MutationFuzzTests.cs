using Recycling.Onnx;

namespace Recycling.Tests.Onnx;

/// <summary>
/// Seeded byte mutations of the real torch exports (flips, insertions, deletions): opening and reading every tensor
/// either succeeds or throws <see cref="OnnxFormatException"/>; no other exception type escapes.
/// </summary>
[TestClass]
public sealed class MutationFuzzTests
{
    [TestMethod]
    [DataRow("cnn_default.onnx", 1)]
    [DataRow("cnn_typed.onnx", 2)]
    [DataRow("cnn_fp16_typed.onnx", 3)]
    [DataRow("transformer_default.onnx", 4)]
    [DataRow("transformer_typed.onnx", 5)]
    [DataRow("transformer_external.onnx", 6)]
    public void MutatedModelsOpenOrFailWithOnnxFormatException(string fixture, int seed)
    {
        var scratch = Directory.CreateTempSubdirectory("recycling-fuzz-");
        try
        {
            var entry = TorchExportTests.ModelEntry(fixture);
            var path = Fixtures.CopyTorchIoModel(fixture, scratch.FullName, TorchExportTests.ExternalFiles(entry));
            var original = File.ReadAllBytes(path);
            var random = new Random(seed);
            int opened = 0, rejected = 0;
            for (var round = 0; round < 300; round++)
            {
                var bytes = Mutate(original, random);
                File.WriteAllBytes(path, bytes);
                try
                {
                    using var model = OnnxModel.Open(path);
                    foreach (var tensor in model.Tensors)
                    {
                        if (tensor.DataType == OnnxDataType.String)
                        {
                            _ = tensor.ReadStrings();
                        }
                        else
                        {
                            _ = tensor.ReadRawBytes();
                            if (OnnxDataTypes.IsFloatingPoint(tensor.DataType) && tensor.ElementCount < 1 << 24)
                            {
                                _ = tensor.ReadFloat32();
                            }
                        }
                    }

                    opened++;
                }
                catch (OnnxFormatException e)
                {
                    Assert.AreEqual(path, e.File);
                    rejected++;
                }
                catch (Exception e)
                {
                    File.WriteAllBytes(Path.Combine(Path.GetTempPath(), $"recycling-fuzz-{fixture}-{round}.onnx"), bytes);
                    Assert.Fail($"{fixture} round {round}: {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
                }
            }

            Assert.IsGreaterThan(30, rejected, $"opened {opened}, rejected {rejected}");
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    private static byte[] Mutate(byte[] original, Random random)
    {
        var bytes = new List<byte>(original);
        for (var n = random.Next(1, 4); n > 0; n--)
        {
            var at = random.Next(bytes.Count);
            switch (random.Next(4))
            {
                case 0:
                    bytes[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1:
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 2:
                    bytes.Insert(at, (byte)random.Next(256));
                    break;
                default:
                    bytes.RemoveAt(at);
                    break;
            }
        }

        return [.. bytes];
    }
}
