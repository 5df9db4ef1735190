using System.IO.Compression;
using System.Text;
using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.MLNet;

[TestClass]
public sealed class DatasetLoaderTests
{
    public TestContext TestContext { get; set; } = null!;

    private string Folder()
    {
        var folder = Path.Combine(Path.GetTempPath(), "recycling-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        return folder;
    }

    [TestMethod]
    public void CsvWithHeaderReadsLabelDomainAndFeatures()
    {
        var path = Path.Combine(Folder(), "d.csv");
        File.WriteAllText(path, "f1,Label,f2,Domain\n0.5,2,1e-1,15\n-1,0,3,0\n");
        var data = DatasetLoader.Load(path);
        Assert.AreEqual(2, data.Count);
        CollectionAssert.AreEqual(new[] { 0.5f, 0.1f, -1f, 3f }, data.Values);
        CollectionAssert.AreEqual(new[] { 2, 0 }, data.Labels);
        CollectionAssert.AreEqual(new[] { 15, 0 }, data.Domains);
        CollectionAssert.AreEqual(new[] { 2 }, data.SampleShape.ToArray());
    }

    [TestMethod]
    public void GzipTsvWithoutHeaderTakesTheLabelColumnByIndex()
    {
        var path = Path.Combine(Folder(), "d.tsv.gz");
        using (var gz = new GZipStream(File.Create(path), CompressionLevel.Fastest))
        {
            gz.Write(Encoding.UTF8.GetBytes("1\t2\t3\n4\t5\t1\n"));
        }

        var data = DatasetLoader.Load(path, new TextColumns { Label = "2" });
        CollectionAssert.AreEqual(new[] { 3, 1 }, data.Labels);
        CollectionAssert.AreEqual(new[] { 1f, 2f, 4f, 5f }, data.Values);
        Assert.IsNull(data.Domains);
    }

    [TestMethod]
    public void SplitPrefixScalesUint8ImagesAndReadsDomains()
    {
        var folder = Folder();
        NpyFile.Write(Path.Combine(folder, "val_images.npy.gz"), NpyArray.From<byte>([0, 255, 51, 102], 2, 1, 2));
        NpyFile.Write(Path.Combine(folder, "val_labels.npy.gz"), NpyArray.From<long>([1, 0], 2));
        NpyFile.Write(Path.Combine(folder, "val_domains.npy"), NpyArray.From<long>([75, 75], 2));
        var data = DatasetLoader.Load(Path.Combine(folder, "val"));
        float[] expected = [0f, 1f, 51f / 255f, 102f / 255f];
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.AreEqual(expected[i], data.Values[i], 1e-7f, "uint8 / 255");
        }

        CollectionAssert.AreEqual(new[] { 1, 2 }, data.SampleShape.ToArray());
        CollectionAssert.AreEqual(new[] { 75, 75 }, data.Domains);
    }

    [TestMethod]
    public void BadInputsNameTheFileAndTheProblem()
    {
        var folder = Folder();
        var csv = Path.Combine(folder, "bad.csv");
        File.WriteAllText(csv, "Label,x\n1,abc\n");
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => DatasetLoader.Load(csv)).Message, "'abc' is not a number");
        File.WriteAllText(csv, "Label,x\n1.5,2\n");
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => DatasetLoader.Load(csv)).Message, "not a class index");
        var missing = Path.Combine(folder, "nothing");
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => DatasetLoader.Load(missing)).Message, "no data found");
        NpyFile.Write(Path.Combine(folder, "x_images.npy"), NpyArray.From<float>([1, 2, 3], 3, 1));
        NpyFile.Write(Path.Combine(folder, "x_labels.npy"), NpyArray.From<long>([1, 2], 2));
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => DatasetLoader.Load(Path.Combine(folder, "x"))).Message, "expected 3 labels");
    }
}
