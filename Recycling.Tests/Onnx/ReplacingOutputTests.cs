using Recycling.Onnx;

namespace Recycling.Tests.Onnx;

/// <summary>Writing external data over an existing model never pairs the old model with new data, or the reverse.</summary>
[TestClass]
public sealed class ReplacingOutputTests
{
    private static readonly string Mlp = Path.GetFullPath(Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-merge", "mlp", "default"));

    [TestMethod]
    public void ReplacingAnExternalDataModelWritesNewDataUnderANewNameAndRemovesTheOld()
    {
        var folder = Directory.CreateTempSubdirectory("recycling-replace-").FullName;
        try
        {
            var output = Path.Combine(folder, "out.onnx");
            var options = new OnnxWriteOptions { ExternalData = ExternalDataMode.External, ExternalThreshold = 0 };
            using var first = OnnxModel.Open(Path.Combine(Mlp, "ft1.onnx"));
            using var second = OnnxModel.Open(Path.Combine(Mlp, "ft2.onnx"));

            OnnxWriter.Write(first, output, options);
            Assert.IsTrue(File.Exists(output + ".data"), "a new output's data file is NAME.data");

            OnnxWriter.Write(second, output, options);
            string[] DataFiles() => [.. Directory.GetFiles(folder, "out.onnx*.data").Select(Path.GetFileName)!];
            var afterSecond = DataFiles();
            Assert.HasCount(1, afterSecond, string.Join(", ", afterSecond));
            Assert.AreNotEqual("out.onnx.data", afterSecond[0], "the replacement's data has a new name");
            using (var written = OnnxModel.Open(output))
            {
                Assert.IsNull(ModelComparer.Difference(second, written));
            }

            OnnxWriter.Write(first, output, options);
            var afterThird = DataFiles();
            Assert.HasCount(1, afterThird);
            Assert.AreNotEqual(afterSecond[0], afterThird[0]);
            using (var written = OnnxModel.Open(output))
            {
                Assert.IsNull(ModelComparer.Difference(first, written));
            }

            Assert.IsEmpty(Directory.GetFiles(folder, ".*"), "no temporary file is left");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
