using Google.Protobuf;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;

namespace Recycling.Onnx;

/// <summary>
/// An ONNX model opened from a path. The file and its external-data files are memory-mapped; only the graph
/// structure is parsed into objects, and every tensor is found wherever it lives (initializers, sparse
/// initializers, Constant nodes, attributes, If/Loop/Scan subgraphs, functions, training info).
/// Dispose to release the mappings; tensors are valid until then.
/// </summary>
public sealed class OnnxModel : IDisposable
{
    private readonly TensorCatalog _catalog;

    private OnnxModel(string path, ModelProto proto, TensorCatalog catalog, IReadOnlyList<OnnxTensor> tensors)
    {
        Path = path;
        Proto = proto;
        _catalog = catalog;
        Tensors = tensors;
    }

    /// <summary>Full path of the .onnx file.</summary>
    public string Path { get; }

    public IReadOnlyList<OnnxTensor> Tensors { get; }

    public long IrVersion => Proto.IrVersion;

    public string ProducerName => Proto.ProducerName;

    public string ProducerVersion => Proto.ProducerVersion;

    /// <summary>Operator sets imported by the model, domain "" being the default ONNX domain.</summary>
    public IReadOnlyList<(string Domain, long Version)> Opsets => [.. Proto.OpsetImport.Select(o => (o.Domain, o.Version))];

    public IReadOnlyDictionary<string, string> Metadata => Proto.MetadataProps.GroupBy(p => p.Key).ToDictionary(g => g.Key, g => g.Last().Value);

    /// <summary>The files this model reads: the .onnx file and every external-data file.</summary>
    public IReadOnlyList<string> Files => [Path, .. _catalog.ExternalFiles];

    internal ModelProto Proto { get; }

    /// <summary>The opened handles behind <see cref="Files"/>, in the same order.</summary>
    internal IReadOnlyList<MappedFile> OpenedFiles => _catalog.OpenedFiles;

    /// <summary>Throws <see cref="OnnxFormatException"/> naming the first of this model's files whose content changed in
    /// place (size or modification time, by fstat on the handle) since it was opened.</summary>
    internal void CheckUnchanged()
    {
        foreach (var file in OpenedFiles)
        {
            file.CheckUnchanged();
        }
    }

    /// <summary>Opens and validates <paramref name="path"/>; every problem is an <see cref="OnnxFormatException"/> naming the file.</summary>
    public static OnnxModel Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return OpenMapped(path, ProtoScanner.Message.Model, ModelProto.Parser, (full, proto, catalog) =>
        {
            if (proto.Graph is null)
            {
                throw new OnnxFormatException(full, "the model has no graph");
            }

            GraphNames.CheckUnique(full, proto.Graph);

            var tensors = TensorCollector.Collect(proto).Select(site => catalog.Create(site.Proto, site.Path, site.Kind)).ToList();
            return new OnnxModel(full, proto, catalog, tensors);
        });
    }

    /// <summary>Maps <paramref name="path"/>, scans and parses its root message, and builds the result; on any failure the mappings are released.</summary>
    internal static TResult OpenMapped<TMessage, TResult>(string path, ProtoScanner.Message root, MessageParser<TMessage> parser, Func<string, TMessage, TensorCatalog, TResult> build)
        where TMessage : IMessage<TMessage>
    {
        var full = System.IO.Path.GetFullPath(path);
        var file = MappedFile.Open(full);
        TensorCatalog? catalog = null;
        try
        {
            var (proto, payloads) = Parse(file, root, parser);
            catalog = new TensorCatalog(file, payloads);
            return build(full, proto, catalog);
        }
        catch
        {
            if (catalog is null)
            {
                file.Dispose();
            }
            else
            {
                catalog.Dispose();
            }

            throw;
        }
    }

    private static (T Proto, IReadOnlyList<TensorPayloadRecord> Payloads) Parse<T>(MappedFile file, ProtoScanner.Message root, MessageParser<T> parser)
        where T : IMessage<T>
    {
        if (file.Length > int.MaxValue)
        {
            throw new OnnxFormatException(file.Path, $"the file is {file.Length} bytes: a single protobuf message over 2 GiB cannot be read; store large tensors as external data");
        }

        if (file.Length == 0)
        {
            throw new OnnxFormatException(file.Path, "the file is empty");
        }

        try
        {
            var (stripped, payloads) = ProtoScanner.Scan(file.Span(0, (int)file.Length), root);
            return (parser.ParseFrom(stripped), payloads);
        }
        catch (WireFormatException e)
        {
            throw new OnnxFormatException(file.Path, $"not a valid ONNX protobuf: {e.Message}");
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OnnxFormatException(file.Path, $"not a valid ONNX protobuf: {e.Message}");
        }
    }

    public void Dispose() => _catalog.Dispose();
}

/// <summary>A single TensorProto stored in its own file, as in the ONNX test data (input_0.pb, output_0.pb).</summary>
public sealed class OnnxTensorFile : IDisposable
{
    private readonly TensorCatalog _catalog;

    private OnnxTensorFile(TensorCatalog catalog, OnnxTensor tensor)
    {
        _catalog = catalog;
        Tensor = tensor;
    }

    public OnnxTensor Tensor { get; }

    public static OnnxTensorFile Open(string path) =>
        OnnxModel.OpenMapped(path, ProtoScanner.Message.Tensor, TensorProto.Parser,
            (_, proto, catalog) => new OnnxTensorFile(catalog, catalog.Create(proto, $"tensor[{proto.Name}]", TensorKind.Initializer)));

    public void Dispose() => _catalog.Dispose();
}
