using Google.Protobuf;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;

namespace Recycling.Onnx;

/// <summary>Where the writer puts tensor values.</summary>
public enum ExternalDataMode
{
    /// <summary>Embedded when the whole model fits under the 2 GiB protobuf limit, external data otherwise.</summary>
    Auto,

    /// <summary>Every value inside the .onnx file; an error if the model would pass 2 GiB.</summary>
    Embedded,

    /// <summary>Initializers of at least <see cref="OnnxWriteOptions.ExternalThreshold"/> bytes go to one data file beside the model.</summary>
    External,
}

public sealed record OnnxWriteOptions
{
    public ExternalDataMode ExternalData { get; init; } = ExternalDataMode.Auto;

    /// <summary>With external data, initializers smaller than this many bytes stay embedded. Constant-node and other
    /// attribute tensors always stay embedded: ONNX Runtime's shape inference cannot read them from external data.</summary>
    public long ExternalThreshold { get; init; } = 1024;

    /// <summary>Entries added to (or replacing those of the same key in) the model's metadata_props.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }
}

/// <summary>New values for a tensor: its element type and little-endian raw bytes (same element count as the source).</summary>
public readonly record struct TensorReplacement(OnnxDataType DataType, ReadOnlyMemory<byte> RawData)
{
    /// <summary>Writes the values while the tensor is written (set by <see cref="Streamed"/>), for tensors too large to hold.</summary>
    internal Action<Stream>? Producer { get; init; }

    /// <summary>Byte length of the values.</summary>
    internal long Length => Producer is null ? RawData.Length : StreamedLength;

    private long StreamedLength { get; init; }

    /// <summary>
    /// Values that <paramref name="produce"/> writes to the stream it is given, <paramref name="length"/> bytes from that
    /// stream's position; the stream is seekable, so a producer may come back to patch what it wrote.
    /// </summary>
    internal static TensorReplacement Streamed(OnnxDataType dataType, long length, Action<Stream> produce) =>
        new(dataType, default) { Producer = produce, StreamedLength = length };

    internal void WriteTo(Stream destination, string output)
    {
        if (Producer is null)
        {
            destination.Write(RawData.Span);
            return;
        }

        var start = destination.Position;
        Producer(destination);
        if (destination.Position - start != StreamedLength)
        {
            throw new RecyclingException($"{output}: a tensor's producer wrote {destination.Position - start} bytes, {StreamedLength} expected");
        }
    }
}

/// <summary>Writes models atomically (temporary files, then rename) and never over one of their inputs.</summary>
public static class OnnxWriter
{
    /// <summary>
    /// Writes <paramref name="source"/> to <paramref name="outputPath"/>, with the values of any tensor replaced by
    /// <paramref name="replace"/> (called once per tensor, in model order, as the tensor is written; null keeps it).
    /// Everything else in the model is kept. Values are streamed from the source's mappings.
    /// </summary>
    public static void Write(OnnxModel source, string outputPath, OnnxWriteOptions? options = null, Func<OnnxTensor, TensorReplacement?>? replace = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        var structure = source.Proto.Clone();
        var sites = TensorCollector.Collect(structure);
        var items = new List<WriteItem>(sites.Count);
        for (var i = 0; i < sites.Count; i++)
        {
            var tensor = source.Tensors[i];
            items.Add(new WriteItem(sites[i].Proto, sites[i].Kind, tensor, replace is null ? null : () => replace(tensor)));
        }

        ModelWriter.Write(structure, items, outputPath, options ?? new OnnxWriteOptions(), source.Files);
    }
}

/// <summary>
/// One tensor of the structure being written: its values come from <see cref="Source"/> unless <see cref="Replace"/>
/// gives new ones (the source then still tells the element count and the size the writer plans for). The writer
/// consumes a replacement's bytes before it calls the next Replace, so producers may reuse one buffer for every tensor.
/// </summary>
internal sealed record WriteItem(TensorProto Target, TensorKind Kind, OnnxTensor? Source, Func<TensorReplacement?>? Replace);

internal static unsafe class ModelWriter
{
    public const int ExternalAlignment = 64 * 1024;

    /// <summary>Leaves room under 2^31-1 bytes for the structure and field overhead of embedded tensors.</summary>
    private const long EmbeddedLimit = int.MaxValue - (16L << 20);

    /// <summary>
    /// Checks that <paramref name="outputPath"/> can take a model written with <paramref name="externalData"/> and is
    /// none of <paramref name="inputs"/> (nor is its data file NAME.data); returns the output to write through.
    /// Commands call this before their long work with the option that named the path.
    /// </summary>
    public static OutputFile Prepare(string outputPath, InputFiles inputs, ExternalDataMode externalData, string? option = null)
    {
        var output = OutputFile.Prepare(outputPath, inputs, option, createFolder: true);
        if (output.WritesInPlace && externalData == ExternalDataMode.External)
        {
            throw new RecyclingException($"{output.Label}: is a device or FIFO, written in place: it cannot have an external-data file beside it");
        }

        output.RefuseInput(output.Target + ".data");
        return output;
    }

    /// <param name="lateMetadata">Metadata known only once every tensor was produced (e.g. input hashes computed meanwhile).</param>
    /// <returns>The bytes written: the model file and its data file.</returns>
    public static long Write(ModelProto structure, IReadOnlyList<WriteItem> items, string outputPath, OnnxWriteOptions options, IEnumerable<string> inputFiles,
        Func<IReadOnlyDictionary<string, string>>? lateMetadata = null)
    {
        var inputs = new InputFiles(inputFiles);
        var file = Prepare(outputPath, inputs, options.ExternalData);
        var output = file.Target;
        var embedAll = file.WritesInPlace || options.ExternalData switch
        {
            ExternalDataMode.Embedded => true,
            ExternalDataMode.External => false,
            _ => EmbeddedSize(structure, items) <= EmbeddedLimit,
        };

        if (embedAll && EmbeddedSize(structure, items) > EmbeddedLimit)
        {
            throw new RecyclingException(file.WritesInPlace
                ? $"{file.Label}: the model would exceed the 2 GiB protobuf limit embedded, and a device or FIFO cannot have an external-data file"
                : $"{output}: the model would exceed the 2 GiB protobuf limit embedded; write it with external data (--external-data, or leave the choice to the default, which switches to external data above 2 GiB)");
        }

        // The data file's name is settled under the folder lock at the end (see Finish); tensors are written with this one meanwhile.
        var dataName = DataFileName(output, unique: false);
        var tempModel = file.WritesInPlace ? null : file.BeginReplace();
        var tempData = file.Temporary(".data");
        var keepAlive = new List<IDisposable>();
        FileStream? data = null;
        FileStream? spill = null;
        try
        {
            var spilled = new List<(TensorProto Target, long Offset, int Length)>();
            foreach (var item in items)
            {
                var target = item.Target;
                var (replacement, length) = Begin(item, output);
                if (length == 0)
                {
                    continue;
                }

                if (!embedAll && length >= options.ExternalThreshold && item.Kind == TensorKind.Initializer)
                {
                    data ??= new FileStream(tempData, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
                    var offset = (data.Position + ExternalAlignment - 1) / ExternalAlignment * ExternalAlignment;
                    Pad(data, offset - data.Position);
                    WriteValues(data, item.Source, replacement, output);
                    target.DataLocation = TensorProto.Types.DataLocation.External;
                    target.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
                    target.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    target.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    continue;
                }

                if (replacement is null && item.Source!.Storage == TensorStorage.Typed)
                {
                    target.RawData = ByteString.CopyFrom(item.Source.ReadRawBytes());
                }
                else
                {
                    // Values go to a scratch file so that an embedded model is never held in memory whole; kept values
                    // too, copied through the input's handle, so an input shortened meanwhile is an error, not SIGBUS.
                    spill ??= new FileStream(file.Temporary(".spill"), FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20, FileOptions.DeleteOnClose);
                    spilled.Add((target, spill.Position, checked((int)length)));
                    WriteValues(spill, item.Source, replacement, output);
                }
            }

            if (spill is not null && spill.Length > 0)
            {
                spill.Flush();
                var map = System.IO.MemoryMappedFiles.MemoryMappedFile.CreateFromFile(spill, null, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
                var view = map.CreateViewAccessor(0, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read);
                keepAlive.Add(map);
                keepAlive.Add(view);
                byte* pointer = null;
                view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
                pointer += view.PointerOffset;
                foreach (var (target, offset, length) in spilled)
                {
                    target.RawData = UnsafeByteOperations.UnsafeWrap(new UnmanagedMemory(pointer + offset, length).Memory);
                }

                keepAlive.Add(new ReleasePointer(view));
            }

            ApplyMetadata(structure, options.Metadata);
            ApplyMetadata(structure, lateMetadata?.Invoke());
            if (file.WritesInPlace)
            {
                using var stream = file.OpenInPlace();
                structure.WriteTo(stream);
                stream.Flush();
                return structure.CalculateSize();
            }

            long dataLength = 0;
            if (data is not null)
            {
                data.Flush(flushToDisk: true);
                dataLength = data.Length;
                data.Dispose();
                data = null;
            }

            return Finish(file, structure, items, inputs, tempModel!, dataLength > 0 ? tempData : null, dataName) + dataLength;
        }
        catch (IOException e)
        {
            throw file.Failed(e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw file.Failed(e);
        }
        finally
        {
            data?.Dispose();
            spill?.Dispose();
            for (var i = keepAlive.Count - 1; i >= 0; i--)
            {
                keepAlive[i].Dispose();
            }

            if (tempModel is not null)
            {
                OutputFile.TryDelete(tempModel);
            }

            OutputFile.TryDelete(tempData);
        }
    }

    /// <summary>
    /// Puts the model (and its data file) in place under an exclusive lock on the output's folder, so that concurrent
    /// writers of one output finish one after the other and the model at the path always reads the data file written
    /// with it. The data file is renamed into place first, under a name no existing model at the path uses (NAME.data
    /// for a new output, NAME.&lt;8 hex&gt;.data when replacing one), then the model; the replaced model's own data files
    /// are deleted last. A reader that opened the replaced model meanwhile finds its data file unchanged or gone,
    /// never another write's data. Returns the model file's length.
    /// </summary>
    private static long Finish(OutputFile target, ModelProto structure, IReadOnlyList<WriteItem> items, InputFiles inputs, string tempModel, string? tempData, string dataName)
    {
        var output = target.Target;
        var folder = Path.GetDirectoryName(output)!;
        using var folderLock = OutputFile.LockFolder(folder);
        var replacing = File.Exists(output);
        var superseded = replacing ? OwnDataFiles(output).Where(f => inputs.Find(f) is null).ToList() : [];
        string? dataPath = null;
        if (tempData is not null)
        {
            var name = replacing || System.Text.Encoding.UTF8.GetByteCount(dataName) > OutputFile.NameMax ? DataFileName(output, unique: true) : dataName;
            if (name != dataName)
            {
                foreach (var item in items.Where(i => i.Target.DataLocation == TensorProto.Types.DataLocation.External))
                {
                    item.Target.ExternalData.Single(e => e.Key == "location").Value = name;
                }
            }

            dataPath = Path.Combine(folder, name);
            target.RefuseInput(dataPath);
        }

        long length;
        using (var model = new FileStream(tempModel, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
        {
            structure.WriteTo(model);
            model.Flush(flushToDisk: true);
            length = model.Length;
        }

        if (tempData is not null)
        {
            File.Move(tempData, dataPath!, overwrite: true);
        }

        target.Commit(tempModel);
        foreach (var old in superseded.Where(f => f != dataPath))
        {
            OutputFile.TryDelete(old);
        }

        return length;
    }

    /// <summary>NAME.data beside the model, or with <paramref name="unique"/> NAME.&lt;8 hex&gt;.data of a name not in use;
    /// NAME is shortened where the whole would pass 255 bytes.</summary>
    private static string DataFileName(string output, bool unique)
    {
        var name = Path.GetFileName(output);
        if (!unique)
        {
            return name + ".data";
        }

        var stem = OutputFile.Truncate(name, OutputFile.NameMax - ".12345678.data".Length);
        while (true)
        {
            var candidate = $"{stem}.{Guid.NewGuid().ToString("N")[..8]}.data";
            if (!File.Exists(Path.Combine(Path.GetDirectoryName(output)!, candidate)))
            {
                return candidate;
            }
        }
    }

    /// <summary>
    /// Writes a model whose values are all embedded to <paramref name="destination"/>, holding replaced values in memory:
    /// for small models evaluated without touching the disk (e.g. candidate soups).
    /// </summary>
    public static void WriteEmbedded(ModelProto structure, IReadOnlyList<WriteItem> items, Stream destination, IReadOnlyDictionary<string, string>? metadata = null)
    {
        foreach (var item in items)
        {
            var (replacement, length) = Begin(item, "in-memory model");
            if (length == 0)
            {
                continue;
            }

            var target = item.Target;
            if (replacement is { Producer: null })
            {
                target.RawData = ByteString.CopyFrom(replacement.Value.RawData.Span); // the producer reuses its buffer
            }
            else if (replacement is not null)
            {
                using var values = new MemoryStream(checked((int)length));
                replacement.Value.WriteTo(values, "in-memory model");
                target.RawData = UnsafeByteOperations.UnsafeWrap(values.GetBuffer().AsMemory(0, (int)length));
            }
            else
            {
                target.RawData = ByteString.CopyFrom(item.Source!.ReadRawBytes());
            }
        }

        ApplyMetadata(structure, metadata);
        structure.WriteTo(destination);
    }

    /// <summary>
    /// Resets a tensor's value fields, gets its replacement (if any) and sets its type; string tensors are completed
    /// here. Returns the byte length of the numeric values still to be placed (0 when nothing is left to do).
    /// </summary>
    private static (TensorReplacement? Replacement, long Length) Begin(WriteItem item, string output)
    {
        var target = item.Target;
        target.RecyclingDataRef = 0;
        target.ExternalData.Clear();
        target.DataLocation = TensorProto.Types.DataLocation.Default;
        var replacement = item.Replace?.Invoke();
        var type = replacement?.DataType ?? (OnnxDataType)target.DataType;
        target.DataType = (int)type;
        if (type == OnnxDataType.String)
        {
            if (replacement is not null)
            {
                throw new RecyclingException($"{output}: replacing STRING tensor values is not supported ({target.Name})");
            }

            if (item.Source is not null && item.Source.Storage != TensorStorage.Empty)
            {
                target.StringData.AddRange(item.Source.ReadStringsAsByteStrings());
            }

            return (null, 0);
        }

        if (replacement is not null && item.Source is not null && replacement.Value.Length != OnnxDataTypes.RawByteLength(type, item.Source.ElementCount))
        {
            throw new RecyclingException($"{output}: replacement for {item.Source.Path} has {replacement.Value.Length} bytes, {item.Source.ElementCount} {type} elements need {OnnxDataTypes.RawByteLength(type, item.Source.ElementCount)}");
        }

        return (replacement, replacement?.Length ?? item.Source?.ByteLength ?? 0);
    }

    /// <summary>The data files of the existing model at <paramref name="output"/> that this writer named (its own
    /// <c>NAME.data</c> or <c>NAME.*.data</c>); nothing when that model cannot be read.</summary>
    private static List<string> OwnDataFiles(string output)
    {
        try
        {
            using var existing = OnnxModel.Open(output);
            var name = Path.GetFileName(output);
            var stem = OutputFile.Truncate(name, OutputFile.NameMax - ".12345678.data".Length);
            return [.. existing.Files.Skip(1).Where(f => Path.GetDirectoryName(f) == Path.GetDirectoryName(output)
                && Path.GetFileName(f).StartsWith(stem + ".", StringComparison.Ordinal) && f.EndsWith(".data", StringComparison.Ordinal))];
        }
        catch (RecyclingException)
        {
            return [];
        }
    }

    private static long EmbeddedSize(ModelProto structure, IReadOnlyList<WriteItem> items)
    {
        long total = structure.CalculateSize();
        foreach (var item in items)
        {
            total += (item.Source?.ByteLength ?? 0) + 16;
        }

        return total;
    }

    /// <summary>Writes a tensor's values: the replacement's, or the source's copied in windows through its file handle.</summary>
    private static void WriteValues(Stream destination, OnnxTensor? source, TensorReplacement? replacement, string output)
    {
        if (replacement is not null)
        {
            replacement.Value.WriteTo(destination, output);
            return;
        }

        if (source!.Storage == TensorStorage.Typed)
        {
            destination.Write(source.ReadRawBytes());
            return;
        }

        var window = System.Buffers.ArrayPool<byte>.Shared.Rent((int)Math.Min(source.ByteLength, 4 << 20));
        try
        {
            for (long offset = 0; offset < source.ByteLength; offset += window.Length)
            {
                var n = (int)Math.Min(window.Length, source.ByteLength - offset);
                source.ReadRaw(offset, window.AsSpan(0, n));
                destination.Write(window, 0, n);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(window);
        }
    }

    private static void Pad(Stream stream, long count)
    {
        Span<byte> zeros = stackalloc byte[4096];
        zeros.Clear();
        while (count > 0)
        {
            var n = (int)Math.Min(count, zeros.Length);
            stream.Write(zeros[..n]);
            count -= n;
        }
    }

    private static void ApplyMetadata(ModelProto structure, IReadOnlyDictionary<string, string>? metadata)
    {
        if (metadata is null)
        {
            return;
        }

        foreach (var (key, value) in metadata)
        {
            var existing = structure.MetadataProps.Where(p => p.Key == key).ToList();
            foreach (var entry in existing)
            {
                structure.MetadataProps.Remove(entry);
            }

            structure.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        }
    }

    private sealed class ReleasePointer(System.IO.MemoryMappedFiles.MemoryMappedViewAccessor view) : IDisposable
    {
        public void Dispose() => view.SafeMemoryMappedViewHandle.ReleasePointer();
    }
}
