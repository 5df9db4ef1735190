using Recycling.Onnx;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.Zoo;

/// <summary>NpyFile against files written by numpy (Fixtures/make_npy_fixtures.py): values are f(i) for i = 0..23.</summary>
[TestClass]
public sealed class NpyFileTests
{
    private static readonly long[] FixtureShape = [2, 3, 4];

    private static string Fixture(string name) => Path.Combine(ZooPaths.FixturesDirectory, "npy", name);

    private static double Expected(string code, int i) => code switch
    {
        "u1" => i,
        "b1" => i % 3 == 0 ? 1 : 0,
        "i1" or "i2" or "i4" or "i8" => i - 11,
        _ => (i - 11) * 0.375,
    };

    [TestMethod]
    [DataRow("u1", "UInt8")]
    [DataRow("i1", "Int8")]
    [DataRow("i2", "Int16")]
    [DataRow("i4", "Int32")]
    [DataRow("i8", "Int64")]
    [DataRow("f2", "Float16")]
    [DataRow("f4", "Float32")]
    [DataRow("f8", "Float64")]
    [DataRow("b1", "Bool")]
    public void ReadsEveryDTypeNumpyWrites(string code, string dtype)
    {
        var array = NpyFile.Read(Fixture($"{code}.npy"));

        Assert.AreEqual(Enum.Parse<NpyDType>(dtype), array.DType);
        CollectionAssert.AreEqual(FixtureShape, array.Shape.ToArray());
        var values = array.ToSingleArray();
        Assert.HasCount(24, values);
        for (int i = 0; i < 24; i++)
        {
            Assert.AreEqual(Expected(code, i), values[i], 0.0, $"element {i}");
        }
    }

    [TestMethod]
    public void TypedSpansExposeTheStoredValues()
    {
        Assert.AreEqual(-11L, NpyFile.Read(Fixture("i8.npy")).AsSpan<long>()[0]);
        Assert.AreEqual((Half)4.5, NpyFile.Read(Fixture("f2.npy")).AsSpan<Half>()[23]);
        Assert.IsTrue(NpyFile.Read(Fixture("b1.npy")).AsSpan<bool>()[3]);
        CollectionAssert.AreEqual(Enumerable.Range(0, 24).Select(i => (long)(i - 11)).ToArray(), NpyFile.Read(Fixture("i2.npy")).ToInt64Array());
        Assert.ThrowsExactly<InvalidOperationException>(() => NpyFile.Read(Fixture("f4.npy")).AsSpan<double>().Length.ToString());
        Assert.ThrowsExactly<InvalidOperationException>(() => NpyFile.Read(Fixture("f4.npy")).ToInt64Array());
    }

    [TestMethod]
    [DataRow("f4_v2.npy")]
    [DataRow("f4_v3.npy")]
    [DataRow("f4.npy.gz")]
    public void ReadsHeaderVersionsTwoAndThreeAndGzip(string file)
    {
        var array = NpyFile.Read(Fixture(file));

        CollectionAssert.AreEqual(FixtureShape, array.Shape.ToArray());
        CollectionAssert.AreEqual(NpyFile.Read(Fixture("f4.npy")).Data, array.Data);
    }

    [TestMethod]
    public void ReadsScalarsAndEmptyArrays()
    {
        var scalar = NpyFile.Read(Fixture("scalar_f8.npy"));
        Assert.IsEmpty(scalar.Shape);
        Assert.AreEqual(2.5, scalar.AsSpan<double>()[0]);

        var empty = NpyFile.Read(Fixture("empty_f4.npy"));
        CollectionAssert.AreEqual(new long[] { 0, 5 }, empty.Shape.ToArray());
        Assert.AreEqual(0, empty.Length);
    }

    [TestMethod]
    public void ReadsNpzArchivesByName()
    {
        var all = NpyFile.ReadNpz(Fixture("arrays.npz"));

        CollectionAssert.AreEquivalent(new[] { "weights", "labels" }, all.Keys.ToArray());
        CollectionAssert.AreEqual(NpyFile.Read(Fixture("f4.npy")).Data, all["weights"].Data);
        var labels = NpyFile.ReadNpz(Fixture("arrays.npz"), "labels");
        CollectionAssert.AreEqual(new long[] { 24 }, labels.Shape.ToArray());
        Assert.AreEqual(12L, labels.AsSpan<long>()[23]);
        var missing = Assert.ThrowsExactly<OnnxFormatException>(() => NpyFile.ReadNpz(Fixture("arrays.npz"), "bias"));
        StringAssert.Contains(missing.Message, "bias");
    }

    [TestMethod]
    [DataRow("fortran_f4.npy", "Fortran")]
    [DataRow("big_endian_f4.npy", "big-endian")]
    [DataRow("structured.npy", "structured")]
    [DataRow("unicode.npy", "unsupported dtype")]
    [DataRow("truncated_f4.npy", "ends inside the data")]
    public void RefusesWhatItCannotReadNamingTheFile(string file, string problem)
    {
        var e = Assert.ThrowsExactly<OnnxFormatException>(() => NpyFile.Read(Fixture(file)));

        Assert.AreEqual(Fixture(file), e.File);
        StringAssert.Contains(e.Problem, problem);
    }

    [TestMethod]
    public void RefusesNonNpyFilesAndMissingFiles()
    {
        string dir = CreateTempDirectory();
        string text = Path.Combine(dir, "notes.npy");
        File.WriteAllText(text, "hello, not an array");
        StringAssert.Contains(Assert.ThrowsExactly<OnnxFormatException>(() => NpyFile.Read(text)).Problem, "magic");
        StringAssert.Contains(Assert.ThrowsExactly<OnnxFormatException>(() => NpyFile.ReadNpz(text)).Problem, "zip");
        Assert.ThrowsExactly<RecyclingException>(() => NpyFile.Read(Path.Combine(dir, "absent.npy")));
    }

    [TestMethod]
    public void RefusesAShapeTooLargeToHold()
    {
        string dir = CreateTempDirectory();
        string path = Path.Combine(dir, "huge.npy");
        string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }";
        header = header.PadRight(128 - 10 - 1) + "\n";
        File.WriteAllBytes(path, [0x93, .. "NUMPY"u8, 1, 0, (byte)header.Length, 0, .. System.Text.Encoding.Latin1.GetBytes(header)]);

        var e = Assert.ThrowsExactly<OnnxFormatException>(() => NpyFile.Read(path));

        StringAssert.Contains(e.Problem, "too large");
    }

    [TestMethod]
    public void WritesTheBytesNumpyWrites()
    {
        string dir = CreateTempDirectory();
        var f4 = NpyFile.Read(Fixture("f4.npy"));
        string path = Path.Combine(dir, "out.npy");

        NpyFile.Write(path, f4);

        CollectionAssert.AreEqual(File.ReadAllBytes(Fixture("f4.npy")), File.ReadAllBytes(path));
        Assert.HasCount(1, Directory.GetFiles(dir), "no temporary file is left behind");
    }

    [TestMethod]
    public void WriteThenReadRoundTripsEveryDTypeAndGzip()
    {
        string dir = CreateTempDirectory();
        foreach (string code in new[] { "u1", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "b1", "scalar_f8", "empty_f4" })
        {
            var original = NpyFile.Read(Fixture($"{code}.npy"));
            string path = Path.Combine(dir, $"{code}.npy.gz");

            NpyFile.Write(path, original);

            using (var head = File.OpenRead(path))
            {
                Assert.AreEqual(0x1F, head.ReadByte(), "gzip magic");
            }

            var back = NpyFile.Read(path);
            Assert.AreEqual(original.DType, back.DType, code);
            CollectionAssert.AreEqual(original.Shape.ToArray(), back.Shape.ToArray(), code);
            CollectionAssert.AreEqual(original.Data, back.Data, code);
        }
    }

    [TestMethod]
    public void WriteReplacesAnExistingFileWhole()
    {
        string dir = CreateTempDirectory();
        string path = Path.Combine(dir, "x.npy");
        NpyFile.Write(path, NpyArray.From<float>(new float[1000], 1000));

        NpyFile.Write(path, NpyArray.From<long>([7, 8], 2));

        var back = NpyFile.Read(path);
        CollectionAssert.AreEqual(new long[] { 7, 8 }, back.ToInt64Array());
        Assert.ThrowsExactly<ArgumentException>(() => NpyArray.From<float>([1f, 2f], 3));
    }

    [TestMethod]
    public void CorruptGzipIsAFormatError()
    {
        string dir = CreateTempDirectory();
        string path = Path.Combine(dir, "bad.npy.gz");
        var bytes = File.ReadAllBytes(Fixture("f4.npy.gz"));
        bytes[20] ^= 0xFF;
        bytes[21] ^= 0xFF;
        File.WriteAllBytes(path, bytes);

        var e = Assert.ThrowsExactly<OnnxFormatException>(() => NpyFile.Read(path));

        Assert.AreEqual(path, e.File);
    }

    private static string CreateTempDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "recycling-npy-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
