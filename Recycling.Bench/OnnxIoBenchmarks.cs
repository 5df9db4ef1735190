using System.Numerics;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;

namespace Recycling.Bench;

/// <summary>
/// ONNX I/O throughput on a generated external-data model of random float32 weights (16 MiB tensors), each beside a
/// plain FileStream baseline over the same bytes: reading every tensor byte (memory-mapped spans) vs a sequential
/// read of the data file, and writing with OnnxWriter (external data) vs a FileStream copy of the data file.
/// Both sides compute the same checksum (read) or flush to disk (write). Size: RECYCLING_BENCH_MIB (default 256;
/// e.g. "256,1024").
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class OnnxIoBenchmarks
{
    private const int TensorMiB = 16;
    private const int BufferBytes = 1 << 20;
    private string _folder = "";
    private string _modelPath = "";
    private string _dataPath = "";
    private byte[] _buffer = [];

    [ParamsSource(nameof(Sizes))]
    public int MiB { get; set; }

    public static IEnumerable<int> Sizes() =>
        (Environment.GetEnvironmentVariable("RECYCLING_BENCH_MIB") ?? "256")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.Parse(s, System.Globalization.CultureInfo.InvariantCulture));

    [GlobalSetup]
    public void CreateModel()
    {
        _folder = Directory.CreateTempSubdirectory("recycling-bench-").FullName;
        _modelPath = Path.Combine(_folder, "model.onnx");
        _dataPath = _modelPath + ".data";
        _buffer = new byte[BufferBytes];
        var graph = new GraphProto { Name = "bench" };
        var random = new Random(42);
        const long tensorBytes = TensorMiB << 20;
        using (var data = new FileStream(_dataPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, BufferBytes))
        {
            for (var i = 0; i < MiB / TensorMiB; i++)
            {
                var tensor = new TensorProto { Name = $"layer{i}.weight", DataType = (int)OnnxDataType.Float, Dims = { 2048, 2048 }, DataLocation = TensorProto.Types.DataLocation.External };
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = Path.GetFileName(_dataPath) });
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = (i * tensorBytes).ToString(System.Globalization.CultureInfo.InvariantCulture) });
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = tensorBytes.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                graph.Initializer.Add(tensor);
                for (var written = 0L; written < tensorBytes; written += BufferBytes)
                {
                    random.NextBytes(_buffer);
                    data.Write(_buffer);
                }
            }
        }

        var model = new ModelProto { IrVersion = 8, ProducerName = "recycling-bench", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        File.WriteAllBytes(_modelPath, model.ToByteArray());
    }

    [GlobalCleanup]
    public void DeleteModel() => Directory.Delete(_folder, recursive: true);

    [Benchmark(Baseline = true, Description = "FileStream sequential read")]
    [BenchmarkCategory("Read")]
    public ulong FileStreamRead()
    {
        using var stream = new FileStream(_dataPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        ulong checksum = 0;
        int read;
        while ((read = stream.Read(_buffer)) > 0)
        {
            checksum += Checksum(_buffer.AsSpan(0, read));
        }

        return checksum;
    }

    [Benchmark(Description = "OnnxModel: every tensor's bytes")]
    [BenchmarkCategory("Read")]
    public ulong OnnxModelRead()
    {
        using var model = OnnxModel.Open(_modelPath);
        ulong checksum = 0;
        foreach (var tensor in model.Tensors)
        {
            for (long offset = 0; offset < tensor.ByteLength; offset += BufferBytes)
            {
                checksum += Checksum(tensor.GetRawSpan(offset, (int)Math.Min(BufferBytes, tensor.ByteLength - offset)));
            }
        }

        return checksum;
    }

    [Benchmark(Baseline = true, Description = "FileStream copy + fsync")]
    [BenchmarkCategory("Write")]
    public void FileStreamCopy()
    {
        using var source = new FileStream(_dataPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        using var destination = new FileStream(Path.Combine(_folder, "copy.data"), FileMode.Create, FileAccess.Write, FileShare.None, 1);
        int read;
        while ((read = source.Read(_buffer)) > 0)
        {
            destination.Write(_buffer, 0, read);
        }

        destination.Flush(flushToDisk: true);
    }

    [Benchmark(Description = "OnnxWriter: external data")]
    [BenchmarkCategory("Write")]
    public void OnnxWriterExternal()
    {
        using var model = OnnxModel.Open(_modelPath);
        OnnxWriter.Write(model, Path.Combine(_folder, "written.onnx"), new OnnxWriteOptions { ExternalData = ExternalDataMode.External });
    }

    private static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        var words = MemoryMarshal.Cast<byte, ulong>(bytes);
        var accumulator = Vector<ulong>.Zero;
        foreach (var v in MemoryMarshal.Cast<ulong, Vector<ulong>>(words))
        {
            accumulator += v;
        }

        var sum = Vector.Sum(accumulator);
        for (var i = words.Length / Vector<ulong>.Count * Vector<ulong>.Count; i < words.Length; i++)
        {
            sum += words[i];
        }

        return sum;
    }
}
