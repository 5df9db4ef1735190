using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using Recycling.Onnx.Numpy;

namespace Recycling.Tests.Reliability;

/// <summary>
/// Inputs that made a command hang or eat memory: decompression bombs (.npy.gz, .csv.gz, .npz members), FIFOs and
/// devices given as files, a model declaring a fixed batch of 200,000,000, a probe label of 2,000,000,000. Each is met
/// through the real CLI and ends in one error line naming the file, or (for unused members) the right result. The
/// bombs are generated here, each a few kilobytes to a few hundred compressed.
/// </summary>
[TestClass]
public sealed class BoundedInputTests
{
    private string _folder = null!;
    private string _model = null!;
    private string _data = null!;

    [TestInitialize]
    public void CreateInputs()
    {
        _folder = Directory.CreateTempSubdirectory("recycling-bounded-").FullName;
        _model = new TinyModel().Write(Path.Combine(_folder, "model.onnx"));
        _data = Path.Combine(_folder, "data.csv");
        File.WriteAllText(_data, "Label,a,b,c,d\n3,0,0,0,0\n0,1,0,0,0\n");
    }

    [TestCleanup]
    public void RemoveInputs() => Directory.Delete(_folder, recursive: true);

    [TestMethod]
    public void AGzippedNpyDeclaringMoreThanTheLimitIsRefusedBeforeInflating()
    {
        var bomb = Gzip(Path.Combine(_folder, "bomb.npy.gz"), TinyModel.NpyHeader("<f4", "(1073741824, 4)"), zeros: 1 << 20);
        Assert.IsTrue(new FileInfo(bomb).Length < 10_000);
        CliOutcome.Fails(["run", _model, "--input", bomb, "-o", Path.Combine(_folder, "out")], bomb, "over the limit of 1073741824 bytes");
    }

    [TestMethod]
    public void ANpyDeclaringMoreThanItsFileHoldsIsRefused()
    {
        var lying = Path.Combine(_folder, "lying.npy");
        File.WriteAllBytes(lying, [.. TinyModel.NpyHeader("<f4", "(100000000, 4)"), .. new byte[16]]);
        CliOutcome.Fails(["run", _model, "--input", lying, "-o", Path.Combine(_folder, "out")], lying, "ends inside the data (16 bytes follow the header)");
        var truncated = Gzip(Path.Combine(_folder, "truncated.npy.gz"), TinyModel.NpyHeader("<f4", "(50000000, 4)"), zeros: 4096);
        CliOutcome.Fails(["run", _model, "--input", truncated, "-o", Path.Combine(_folder, "out")], truncated, "file ends inside the data");
    }

    [TestMethod]
    public void AGzippedCsvInflatingPastTheLimitIsRefused()
    {
        // 300 MiB of comment lines, about 300 KB compressed: past the 256 MiB limit for compressed text.
        var bomb = Path.Combine(_folder, "bomb.csv.gz");
        using (var gzip = new GZipStream(File.Create(bomb), CompressionLevel.Optimal))
        {
            gzip.Write("Label,a,b,c,d\n"u8);
            var line = Encoding.ASCII.GetBytes("#" + new string('x', (1 << 20) - 2) + "\n");
            for (var i = 0; i < 300; i++)
            {
                gzip.Write(line);
            }
        }

        Assert.IsTrue(new FileInfo(bomb).Length < 2_000_000);
        CliOutcome.Fails(["eval", _model, "--data", bomb], bomb, "inflates to more than 268435456 bytes");
    }

    [TestMethod]
    public void AGzippedCsvOfOneEndlessLineIsRefused()
    {
        var bomb = Path.Combine(_folder, "line.csv.gz");
        using (var gzip = new GZipStream(File.Create(bomb), CompressionLevel.Fastest))
        {
            var chunk = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("1,", 1 << 19)));
            for (var i = 0; i < 70; i++)
            {
                gzip.Write(chunk);
            }
        }

        CliOutcome.Fails(["eval", _model, "--data", bomb], bomb, "a line longer than 67108864 characters");
    }

    [TestMethod]
    public void NpzMembersAreReadOnlyWhenUsedAndCheckedAgainstTheirDeclaredSize()
    {
        // "junk" declares 4 TiB: reading it would fail; the evaluation reads only images and labels.
        var npz = TinyModel.WriteNpz(Path.Combine(_folder, "data.npz"),
            new Dictionary<string, NpyArray>
            {
                ["images"] = NpyArray.From<float>([0, 0, 0, 9, 9, 0, 0, 0], 2, 4),
                ["labels"] = NpyArray.From<long>([3, 0], 2),
            },
            new Dictionary<string, byte[]> { ["junk"] = [.. TinyModel.NpyHeader("<f4", "(1099511627776,)"), .. new byte[1 << 20]] });
        var stdout = CliOutcome.Succeeds("eval", _model, "--data", npz, "--json");
        StringAssert.Contains(stdout, "\"accuracy\": 100");

        var bomb = TinyModel.WriteNpz(Path.Combine(_folder, "bomb.npz"),
            new Dictionary<string, NpyArray> { ["labels"] = NpyArray.From<long>([3, 0], 2) },
            new Dictionary<string, byte[]> { ["images"] = [.. TinyModel.NpyHeader("<f4", "(2, 1073741824)"), .. new byte[1 << 20]] });
        CliOutcome.Fails(["eval", _model, "--data", bomb], bomb, "ends inside the data (1048576 bytes follow the header)");
    }

    [TestMethod]
    public void FifosAndDevicesAreRefusedWhereAFileIsRead()
    {
        var fifo = Path.Combine(_folder, "pipe.onnx");
        var dataFifo = Path.Combine(_folder, "pipe.csv");
        using (var mkfifo = Process.Start("mkfifo", [fifo, dataFifo]))
        {
            mkfifo.WaitForExit();
            Assert.AreEqual(0, mkfifo.ExitCode);
        }

        const string kind = "not a regular file";
        var output = Path.Combine(_folder, "out");
        CliOutcome.Fails(["eval", fifo, "--data", _data], fifo, kind);
        CliOutcome.Fails(["run", fifo, "--input", _data, "-o", output], fifo, kind);
        CliOutcome.Fails(["eval", _model, "--data", dataFifo], dataFifo, kind);
        CliOutcome.Fails(["inspect", "/dev/zero"], "/dev/zero", kind);
        CliOutcome.Fails(["merge", _model, "/dev/zero", "-o", Path.Combine(_folder, "m.onnx")], "/dev/zero", kind);
        CliOutcome.Fails(["eval", "/dev/zero", "--data", _data], "/dev/zero", kind);
        CliOutcome.Fails(["run", "/dev/zero", "--input", _data, "-o", output], "/dev/zero", kind);
        CliOutcome.Fails(["run", _model, "--input", "/dev/zero", "-o", output], "/dev/zero", kind);
        CliOutcome.Fails(["probe", _model, "--train", "/dev/zero", "--features", "logits"], "/dev/zero", kind);
        var zeroNpz = Path.Combine(_folder, "zero.npz");
        File.CreateSymbolicLink(zeroNpz, "/dev/zero");
        CliOutcome.Fails(["merge", _model, _model, "-o", Path.Combine(_folder, "m.onnx"), "--method", "fisher", "--fisher", zeroNpz, zeroNpz], zeroNpz, kind);
        var zeroGz = Path.Combine(_folder, "zero_images.npy.gz");
        File.CreateSymbolicLink(zeroGz, "/dev/zero");
        File.CreateSymbolicLink(Path.Combine(_folder, "zero_labels.npy.gz"), "/dev/zero");
        CliOutcome.Fails(["eval", _model, "--data", Path.Combine(_folder, "zero")], zeroGz, kind);
    }

    [TestMethod]
    public void AFixedBatchOf200MillionSamplesIsRefusedBeforeAllocating()
    {
        var model = new TinyModel { Batch = 200_000_000 }.Write(Path.Combine(_folder, "fixed.onnx"));
        CliOutcome.Fails(["eval", model, "--data", _data], model, "declares a fixed batch of 200000000 samples");
    }

    [TestMethod]
    public void AProbeLabelOfTwoBillionIsRefusedNamingTheData()
    {
        var data = Path.Combine(_folder, "huge-label.csv");
        File.WriteAllText(data, "Label,a,b,c,d\n2000000000,0,0,0,0\n0,1,0,0,0\n1,0,1,0,0\n");
        CliOutcome.Fails(["probe", _model, "--train", data, "--features", "logits"], data, "over the probe's limit of 9999");
        CliOutcome.Fails(["eval", _model, "--data", data], "2000000000", "outside the model's 4 classes");
    }

    private static string Gzip(string path, byte[] header, int zeros)
    {
        using var gzip = new GZipStream(File.Create(path), CompressionLevel.Optimal);
        gzip.Write(header);
        gzip.Write(new byte[zeros]);
        return path;
    }
}
