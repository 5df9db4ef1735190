using Recycling.Onnx.Proto;

namespace Recycling.Onnx.IO;

/// <summary>
/// Owns the memory mappings of one model file and its external-data files, and turns the stripped
/// TensorProtos found in the structure into validated <see cref="OnnxTensor"/>s.
/// </summary>
internal sealed class TensorCatalog(MappedFile modelFile, IReadOnlyList<TensorPayloadRecord> payloads) : IDisposable
{
    private readonly Dictionary<string, MappedFile> _externalFiles = new(StringComparer.Ordinal);

    public MappedFile ModelFile => modelFile;

    public IEnumerable<string> ExternalFiles => _externalFiles.Keys;

    /// <summary>The opened model file, then its external-data files in the order first referenced.</summary>
    public IReadOnlyList<MappedFile> OpenedFiles => [modelFile, .. _externalFiles.Values];

    public OnnxTensor Create(TensorProto proto, string path, TensorKind kind)
    {
        var file = modelFile.Path;
        var type = (OnnxDataType)proto.DataType;
        if (!OnnxDataTypes.IsDefined(type))
        {
            throw new OnnxFormatException(file, $"tensor {path} has unknown data type {proto.DataType}");
        }

        var count = ElementCount(proto, path);
        var payload = proto.RecyclingDataRef == 0 ? null : payloads[(int)proto.RecyclingDataRef - 1];
        var isExternal = proto.DataLocation == TensorProto.Types.DataLocation.External;
        if (isExternal)
        {
            if (payload is not null)
            {
                throw new OnnxFormatException(file, $"tensor {path} is marked EXTERNAL but also carries values in the file");
            }

            return CreateExternal(proto, path, kind, count);
        }

        if (proto.ExternalData.Count > 0)
        {
            throw new OnnxFormatException(file, $"tensor {path} has external_data entries but data_location is not EXTERNAL");
        }

        if (payload is null)
        {
            if (count != 0)
            {
                throw new OnnxFormatException(file, $"tensor {path} declares {count} elements but has no values");
            }

            return new OnnxTensor(proto, path, kind, count, TensorStorage.Empty, null, null, -1, null, null);
        }

        if (payload.HasRaw && payload.HasTyped)
        {
            throw new OnnxFormatException(file, $"tensor {path} has both raw_data and typed value fields");
        }

        if (payload.HasRaw)
        {
            if (type == OnnxDataType.String)
            {
                throw new OnnxFormatException(file, $"tensor {path} is STRING but uses raw_data");
            }

            var expected = OnnxDataTypes.RawByteLength(type, count);
            if (payload.RawLength != expected)
            {
                throw new OnnxFormatException(file, $"tensor {path}: raw_data has {payload.RawLength} bytes, dims {Dims(proto)} of {type} need {expected}");
            }

            return count == 0
                ? new OnnxTensor(proto, path, kind, 0, TensorStorage.Empty, null, null, -1, null, null)
                : new OnnxTensor(proto, path, kind, count, TensorStorage.Raw, modelFile, payload, payload.RawOffset, null, null);
        }

        CheckTypedValueCount(proto, payload, type, count, path);
        return new OnnxTensor(proto, path, kind, count, TensorStorage.Typed, modelFile, payload, -1, null, null);
    }

    /// <summary>
    /// Counts the values in the typed fields without decoding them, so that dims are checked against the values
    /// on open (as for raw_data) and nothing is ever sized from dims that the file does not back.
    /// </summary>
    private void CheckTypedValueCount(TensorProto proto, TensorPayloadRecord payload, OnnxDataType type, long count, string path)
    {
        var file = modelFile.Path;
        var expectedField = ElementTypes.Of(type).TypedField;
        var message = modelFile.Span(payload.MessageOffset, payload.MessageLength);
        var reader = new WireReader(message, payload.MessageOffset);
        long values = 0;
        try
        {
            while (!reader.AtEnd)
            {
                var (field, wireType) = reader.ReadTag();
                if (field is not (4 or 5 or 6 or 7 or 10 or 11))
                {
                    reader.Skip(wireType);
                    continue;
                }

                if (field != expectedField)
                {
                    throw new OnnxFormatException(file, $"tensor {path}: {type} values found in field {field}; expected field {expectedField}");
                }

                if (wireType != WireType.LengthDelimited || field == 6)
                {
                    reader.Skip(wireType);
                    values++;
                    continue;
                }

                var (start, length) = reader.ReadLengthDelimited();
                values += field switch
                {
                    4 => length % 4 == 0 ? length / 4 : throw new OnnxFormatException(file, $"tensor {path}: packed float_data of {length} bytes is not a whole number of floats"),
                    10 => length % 8 == 0 ? length / 8 : throw new OnnxFormatException(file, $"tensor {path}: packed {(type is OnnxDataType.Double or OnnxDataType.Complex128 ? "double_data" : "fixed64 values")} of {length} bytes is not a whole number of values"),
                    _ => CountVarints(message.Slice(start, length), file, path),
                };
            }
        }
        catch (WireFormatException e)
        {
            throw new OnnxFormatException(file, $"tensor {path}: {e.Message}");
        }

        var expected = ElementTypes.Of(type).TypedValueCount(count);
        if (values != expected)
        {
            throw new OnnxFormatException(file, $"tensor {path}: typed fields hold {values} values, dims {Dims(proto)} and type {type} need {expected}");
        }
    }

    private static long CountVarints(ReadOnlySpan<byte> packed, string file, string path)
    {
        if (packed.Length > 0 && (packed[^1] & 0x80) != 0)
        {
            throw new OnnxFormatException(file, $"tensor {path}: packed varints end inside a value");
        }

        long count = 0;
        foreach (var b in packed)
        {
            if ((b & 0x80) == 0)
            {
                count++;
            }
        }

        return count;
    }

    private OnnxTensor CreateExternal(TensorProto proto, string path, TensorKind kind, long count)
    {
        var file = modelFile.Path;
        var type = (OnnxDataType)proto.DataType;
        if (type == OnnxDataType.String)
        {
            throw new OnnxFormatException(file, $"tensor {path} is STRING, which cannot be stored as external data");
        }

        string? location = null, checksum = null;
        long offset = 0, length = -1;
        foreach (var entry in proto.ExternalData)
        {
            switch (entry.Key)
            {
                case "location":
                    location = entry.Value;
                    break;
                case "offset":
                    offset = ParseNonNegative(entry.Value, "offset", path);
                    break;
                case "length":
                    length = ParseNonNegative(entry.Value, "length", path);
                    break;
                case "checksum":
                    checksum = entry.Value;
                    break;
                default:
                    break;
            }
        }

        if (location is null)
        {
            throw new OnnxFormatException(file, $"tensor {path} is EXTERNAL but has no 'location'");
        }

        var full = ExternalDataResolver.Resolve(file, location);
        if (!_externalFiles.TryGetValue(full, out var mapped))
        {
            mapped = MappedFile.OpenExternal(file, full, location);
            _externalFiles.Add(full, mapped);
        }

        var expected = OnnxDataTypes.RawByteLength(type, count);
        if (length < 0)
        {
            length = expected;
        }

        if (length != expected)
        {
            throw new OnnxFormatException(file, $"tensor {path}: external length {length} disagrees with dims {Dims(proto)} of {type} ({expected} bytes)");
        }

        if (offset > mapped.Length - length)
        {
            throw new OnnxFormatException(file, $"tensor {path}: external range [{offset}, {offset + length}) is past the end of '{location}' ({mapped.Length} bytes)");
        }

        return new OnnxTensor(proto, path, kind, count, count == 0 ? TensorStorage.Empty : TensorStorage.External, mapped, null, offset, location, checksum);
    }

    private long ParseNonNegative(string value, string key, string path) =>
        long.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var parsed)
            ? parsed
            : throw new OnnxFormatException(modelFile.Path, $"tensor {path}: external data {key} '{value}' is not a non-negative integer");

    private long ElementCount(TensorProto proto, string path)
    {
        long count = 1;
        foreach (var dim in proto.Dims)
        {
            if (dim < 0)
            {
                throw new OnnxFormatException(modelFile.Path, $"tensor {path} has a negative dimension in {Dims(proto)}");
            }

            try
            {
                count = checked(count * dim);
                _ = OnnxDataTypes.RawByteLength((OnnxDataType)proto.DataType, count);
            }
            catch (OverflowException)
            {
                throw new OnnxFormatException(modelFile.Path, $"tensor {path}: the product of dims {Dims(proto)} overflows");
            }
        }

        return count;
    }

    private static string Dims(TensorProto proto) => $"[{string.Join(", ", proto.Dims)}]";

    public void Dispose()
    {
        foreach (var file in _externalFiles.Values)
        {
            file.Dispose();
        }

        modelFile.Dispose();
    }
}
