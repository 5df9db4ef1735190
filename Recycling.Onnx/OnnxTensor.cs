using Google.Protobuf;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;

namespace Recycling.Onnx;

/// <summary>Where a tensor sits in the model.</summary>
public enum TensorKind
{
    Initializer,
    SparseValues,
    SparseIndices,
    Constant,
    Attribute,
}

/// <summary>How a tensor's values are stored in the file.</summary>
public enum TensorStorage
{
    /// <summary>No values (zero elements).</summary>
    Empty,

    /// <summary>raw_data inside the .onnx file.</summary>
    Raw,

    /// <summary>Typed repeated fields (float_data, int32_data, ...) inside the .onnx file, decoded on demand.</summary>
    Typed,

    /// <summary>An external-data file beside the model.</summary>
    External,
}

/// <summary>
/// One tensor of an opened model. Its values are not loaded: raw and external tensors are read as spans over
/// the memory mapping; typed fields are decoded when asked for. Valid while its <see cref="OnnxModel"/> is open.
/// </summary>
public sealed unsafe class OnnxTensor
{
    private readonly MappedFile? _file;
    private readonly TensorPayloadRecord? _payload;
    private readonly long _dataOffset;

    internal OnnxTensor(TensorProto proto, string path, TensorKind kind, long elementCount, TensorStorage storage,
        MappedFile? file, TensorPayloadRecord? payload, long dataOffset, string? externalLocation, string? checksum)
    {
        Proto = proto;
        Path = path;
        Kind = kind;
        ElementCount = elementCount;
        Storage = storage;
        _file = file;
        _payload = payload;
        _dataOffset = dataOffset;
        ExternalLocation = externalLocation;
        Checksum = checksum;
    }

    /// <summary>A stable path that says where the tensor lives, e.g. <c>graph/initializer[fc.weight]</c>.</summary>
    public string Path { get; }

    public string Name => Proto.Name;

    public TensorKind Kind { get; }

    public OnnxDataType DataType => (OnnxDataType)Proto.DataType;

    public IReadOnlyList<long> Shape => Proto.Dims;

    public long ElementCount { get; }

    /// <summary>Little-endian raw size of the values (sub-byte types packed); 0 for strings.</summary>
    public long ByteLength => OnnxDataTypes.RawByteLength(DataType, ElementCount);

    public TensorStorage Storage { get; }

    /// <summary>The external-data location as written in the model (relative path), or null.</summary>
    public string? ExternalLocation { get; }

    /// <summary>Byte offset of the values in the .onnx file (raw) or in the external file; -1 for typed or empty.</summary>
    public long DataOffset => Storage is TensorStorage.Raw or TensorStorage.External ? _dataOffset : -1;

    /// <summary>SHA-1 recorded in external_data (not verified on open), or null.</summary>
    public string? Checksum { get; }

    internal TensorProto Proto { get; }

    /// <summary>Pointer to the raw values in the mapping (raw or external storage only).</summary>
    internal byte* RawPointer => Storage is TensorStorage.Raw or TensorStorage.External ? _file!.Pointer + _dataOffset : null;

    /// <summary>
    /// Drops this tensor's pages from the process's resident set once a streaming pass is done with them (they stay in
    /// the page cache and fault back in if read again), so reading a model tensor by tensor keeps memory flat.
    /// </summary>
    internal void ReleaseResidentPages()
    {
        if (Storage is TensorStorage.Raw or TensorStorage.External)
        {
            _file!.ReleaseResidentPages(_dataOffset, ByteLength);
        }
    }

    /// <summary>The raw little-endian values as a span over the mapping, without copying. Raw and external storage
    /// only (see <see cref="ReadRawBytes"/> for typed fields); tensors over 2 GiB must be read in windows.</summary>
    public ReadOnlySpan<byte> GetRawSpan()
    {
        if (Storage == TensorStorage.Empty)
        {
            return default;
        }

        if (Storage == TensorStorage.Typed)
        {
            throw new InvalidOperationException($"{Path} is stored in typed fields; use ReadRawBytes()");
        }

        if (ByteLength > Array.MaxLength)
        {
            throw new InvalidOperationException($"{Path} has {ByteLength} bytes, more than one span can hold; use GetRawSpan(offset, length)");
        }

        return _file!.Span(_dataOffset, (int)ByteLength);
    }

    /// <summary>A window of the raw values (raw or external storage).</summary>
    public ReadOnlySpan<byte> GetRawSpan(long offset, int length)
    {
        if (Storage is not (TensorStorage.Raw or TensorStorage.External) || offset < 0 || length < 0 || offset > ByteLength - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"window [{offset}, +{length}) of {Path} ({Storage}, {ByteLength} bytes)");
        }

        return _file!.Span(_dataOffset + offset, length);
    }

    /// <summary>The raw little-endian values in a new array, whatever the storage (typed fields are re-encoded).</summary>
    public byte[] ReadRawBytes()
    {
        if (DataType == OnnxDataType.String)
        {
            throw new InvalidOperationException($"{Path} is a string tensor; use ReadStrings()");
        }

        if (ByteLength > Array.MaxLength)
        {
            throw new InvalidOperationException($"{Path} has {ByteLength} bytes, more than one array can hold; read it in windows");
        }

        var bytes = GC.AllocateUninitializedArray<byte>((int)ByteLength);
        ReadRaw(0, bytes);
        return bytes;
    }

    /// <summary>
    /// Copies raw bytes [offset, offset + destination.Length) of the values, reading through the file's handle (never
    /// the mapping, so a file truncated meanwhile is an <see cref="OnnxFormatException"/>, not a crash). Typed fields
    /// are decoded in bounded memory up to the window's end; pass the cursor of <see cref="OpenCursor"/> to many reads
    /// at increasing offsets so that they decode the fields once in all, not once each.
    /// </summary>
    internal void ReadRaw(long offset, Span<byte> destination, TypedFieldCursor? cursor = null)
    {
        if (offset < 0 || offset > ByteLength - destination.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"window [{offset}, +{destination.Length}) of {Path} ({ByteLength} bytes)");
        }

        switch (Storage)
        {
            case TensorStorage.Raw or TensorStorage.External:
                _file!.Read(_dataOffset + offset, destination);
                break;
            case TensorStorage.Typed:
                (cursor ?? OpenCursor()!).Read(offset, destination);
                break;
            default:
                break;
        }
    }

    /// <summary>Elements [elementOffset, elementOffset + destination.Length) of a floating tensor, as float32
    /// (elementOffset even for the 4-bit types).</summary>
    internal void ReadFloat32(long elementOffset, Span<float> destination)
    {
        if (!OnnxDataTypes.IsFloatingPoint(DataType))
        {
            throw new InvalidOperationException($"{Path} has type {DataType}, not a floating-point type");
        }

        var length = (int)OnnxDataTypes.RawByteLength(DataType, destination.Length);
        var bytes = System.Buffers.ArrayPool<byte>.Shared.Rent(length);
        try
        {
            ReadRaw(OnnxDataTypes.RawByteLength(DataType, elementOffset), bytes.AsSpan(0, length));
            OnnxDataTypes.ToFloat32(DataType, bytes.AsSpan(0, length), destination);
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    /// <summary>The values of a floating tensor converted to float32.</summary>
    public float[] ReadFloat32()
    {
        var result = new float[ElementCount];
        ReadFloat32(result);
        return result;
    }

    public void ReadFloat32(Span<float> destination)
    {
        if (!OnnxDataTypes.IsFloatingPoint(DataType))
        {
            throw new InvalidOperationException($"{Path} has type {DataType}, not a floating-point type");
        }

        if (destination.Length != ElementCount)
        {
            throw new ArgumentException($"destination holds {destination.Length} elements, {Path} has {ElementCount}", nameof(destination));
        }

        if (Storage == TensorStorage.Typed)
        {
            OnnxDataTypes.ToFloat32(DataType, ReadRawBytes(), destination);
        }
        else
        {
            const int Window = 1 << 20;
            for (var offset = 0; offset < destination.Length; offset += Window)
            {
                ReadFloat32(offset, destination.Slice(offset, Math.Min(Window, destination.Length - offset)));
            }
        }
    }

    /// <summary>The elements of a STRING tensor as byte strings (usually UTF-8).</summary>
    public IReadOnlyList<byte[]> ReadStrings()
    {
        if (DataType != OnnxDataType.String)
        {
            throw new InvalidOperationException($"{Path} is not a string tensor");
        }

        var strings = new List<byte[]>();
        if (_payload is null)
        {
            return strings;
        }

        var reader = new WireReader(MessageSpan(), _payload.MessageOffset);
        var message = MessageSpan();
        while (!reader.AtEnd)
        {
            var (field, type) = reader.ReadTag();
            if (field == 6 && type == WireType.LengthDelimited)
            {
                var (start, length) = reader.ReadLengthDelimited();
                strings.Add(message.Slice(start, length).ToArray());
            }
            else
            {
                reader.Skip(type);
            }
        }

        return strings;
    }

    internal IReadOnlyList<ByteString> ReadStringsAsByteStrings() => [.. ReadStrings().Select(ByteString.CopyFrom)];

    private ReadOnlySpan<byte> MessageSpan() => _file!.Span(_payload!.MessageOffset, _payload.MessageLength);

    /// <summary>A forward decoder of the typed fields for <see cref="ReadRaw"/>, or null when the storage is not typed.</summary>
    internal TypedFieldCursor? OpenCursor() =>
        Storage == TensorStorage.Typed ? new TypedFieldCursor(_file!, _payload!.MessageOffset, _payload.MessageLength, DataType, Path) : null;
}
