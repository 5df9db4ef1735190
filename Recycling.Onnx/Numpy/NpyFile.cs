using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using Recycling.Onnx.IO;

namespace Recycling.Onnx.Numpy;

/// <summary>Element types of the .npy files the toolkit reads and writes (all little-endian): the ONNX element types
/// with a numpy code in <see cref="ElementTypes"/>, under numpy's names.</summary>
internal enum NpyDType
{
    Bool = OnnxDataType.Bool,
    UInt8 = OnnxDataType.UInt8,
    Int8 = OnnxDataType.Int8,
    Int16 = OnnxDataType.Int16,
    Int32 = OnnxDataType.Int32,
    Int64 = OnnxDataType.Int64,
    Float16 = OnnxDataType.Float16,
    Float32 = OnnxDataType.Float,
    Float64 = OnnxDataType.Double,
}

/// <summary>A dense C-order array read from or written to a .npy file; <see cref="Data"/> holds the raw little-endian bytes.</summary>
internal sealed class NpyArray
{
    public NpyArray(NpyDType dtype, long[] shape, byte[] data)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        if (shape.Any(d => d < 0))
        {
            throw new ArgumentException("dimensions must be non-negative", nameof(shape));
        }

        long count = shape.Aggregate(1L, (a, d) => checked(a * d));
        if (checked(count * NpyFile.ItemSize(dtype)) != data.LongLength)
        {
            throw new ArgumentException($"{data.LongLength} bytes do not hold {count} elements of {dtype}", nameof(data));
        }

        DType = dtype;
        Shape = shape;
        Data = data;
        Length = count;
    }

    public NpyDType DType { get; }

    public IReadOnlyList<long> Shape { get; }

    /// <summary>Number of elements (product of the shape; 1 for a scalar).</summary>
    public long Length { get; }

    public byte[] Data { get; }

    public static NpyArray From<T>(ReadOnlySpan<T> values, params long[] shape)
        where T : unmanaged
        => new(NpyFile.DTypeOf<T>(), shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>The elements as <typeparamref name="T"/>, which must be the stored type (bool for b1, Half for f2...).</summary>
    public ReadOnlySpan<T> AsSpan<T>()
        where T : unmanaged
    {
        var wanted = NpyFile.DTypeOf<T>();
        if (wanted != DType)
        {
            throw new InvalidOperationException($"the array holds {DType}, not {wanted}");
        }

        return MemoryMarshal.Cast<byte, T>(Data);
    }

    /// <summary>The elements converted to float (any dtype; integers above 2^24 lose precision).</summary>
    public float[] ToSingleArray()
    {
        var result = new float[Length];
        DType.Row().Decode!(Data, result);
        return result;
    }

    /// <summary>The elements converted to long; only for integer and bool arrays.</summary>
    public long[] ToInt64Array()
    {
        var decode = DType.Row().DecodeInteger ?? throw new InvalidOperationException($"{DType} is not an integer type");
        var result = new long[Length];
        decode(Data, result);
        return result;
    }
}

/// <summary>
/// Reads numpy's .npy format (versions 1.0-3.0, C order, little-endian u1 i1 i2 i4 i8 f2 f4 f8 b1), gzip-compressed
/// .npy (detected by content, e.g. *.npy.gz) and .npz archives; writes .npy (optionally gzipped) atomically.
/// Reading is bounded: a header may declare no more data than its file holds, and compressed data (gzip, deflated
/// .npz members) inflates to at most <see cref="MaxInflatedBytes"/> per array, checked before anything is allocated.
/// </summary>
internal static class NpyFile
{
    /// <summary>The most bytes one compressed array may inflate to (1 GiB): a 1 MB gzip can claim gigabytes.</summary>
    public const long MaxInflatedBytes = 1L << 30;

    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    public static NpyArray Read(string path)
    {
        using var stream = OpenRead(path);
        return Read(stream, path);
    }

    /// <summary>Reads one array from <paramref name="stream"/> (plain or gzip); <paramref name="name"/> names it in errors.</summary>
    public static NpyArray Read(Stream stream, string name)
    {
        ArgumentNullException.ThrowIfNull(stream);
        try
        {
            long? length = stream.CanSeek ? stream.Length - stream.Position : null;
            var buffered = new BufferedStream(stream);
            Span<byte> head = stackalloc byte[2];
            int got = ReadAtMost(buffered, head);
            var rest = new PrefixedStream(head[..got].ToArray(), buffered);
            if (got == 2 && head[0] == 0x1F && head[1] == 0x8B)
            {
                using var gzip = new GZipStream(rest, CompressionMode.Decompress);
                return ReadPlain(gzip, name, declaredLength: null, compressed: true);
            }

            return ReadPlain(rest, name, length, compressed: false, lengthIsFile: length is not null);
        }
        catch (InvalidDataException e)
        {
            throw new OnnxFormatException(name, $"corrupt compressed data ({e.Message})", e);
        }
    }

    /// <summary>All arrays of an .npz archive (numpy.savez / savez_compressed), by name without the ".npy" suffix.</summary>
    public static IReadOnlyDictionary<string, NpyArray> ReadNpz(string path)
    {
        using var archive = NpzArchive.Open(path);
        return archive.Names.ToDictionary(n => n, archive.Read, StringComparer.Ordinal);
    }

    /// <summary>One array of an .npz archive by name (the others are not inflated).</summary>
    public static NpyArray ReadNpz(string path, string arrayName)
    {
        using var archive = NpzArchive.Open(path);
        return archive.Read(arrayName);
    }

    /// <summary>Writes <paramref name="array"/> as .npy (gzip-compressed when the path ends with ".gz") through
    /// <see cref="OutputFile"/>: whole or not at all.</summary>
    public static void Write(string path, NpyArray array) => Write(OutputFile.Prepare(path), array);

    internal static void Write(OutputFile file, NpyArray array)
    {
        ArgumentNullException.ThrowIfNull(array);
        file.Write(stream =>
        {
            if (file.Path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
            {
                using var gzip = new GZipStream(stream, CompressionLevel.Optimal, leaveOpen: true);
                WritePlain(gzip, array);
            }
            else
            {
                WritePlain(stream, array);
            }
        });
    }

    internal static int ItemSize(NpyDType dtype) => dtype.Row().Size;

    internal static NpyDType DTypeOf<T>()
        where T : unmanaged
        => ElementTypes.FromClr<T>() is { } row ? (NpyDType)row.Type : throw new NotSupportedException($"{typeof(T)} has no .npy dtype here");

    /// <summary>Opens <paramref name="path"/> for reading: a regular file only (a FIFO would block, a device never end).</summary>
    internal static FileStream OpenRead(string path)
    {
        InputFile.RequireRegular(path);
        try
        {
            return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: cannot open ({e.Message})", e);
        }
    }

    /// <summary>The dtype and shape in the header of an .npy stream, leaving the stream at the first data byte.</summary>
    internal static (NpyDType DType, long[] Shape, long HeaderBytes) ReadHeader(Stream stream, string name)
    {
        Span<byte> prefix = stackalloc byte[8];
        if (ReadAtMost(stream, prefix) < 8 || !prefix[..6].SequenceEqual(Magic))
        {
            throw new OnnxFormatException(name, "not a .npy file (missing \\x93NUMPY magic)");
        }

        int major = prefix[6];
        int headerLength;
        int lengthBytes;
        Encoding encoding;
        switch (major)
        {
            case 1:
                Span<byte> len2 = stackalloc byte[2];
                ReadExactly(stream, len2, name, "header length");
                headerLength = BinaryPrimitives.ReadUInt16LittleEndian(len2);
                lengthBytes = 2;
                encoding = Encoding.Latin1;
                break;
            case 2:
            case 3:
                Span<byte> len4 = stackalloc byte[4];
                ReadExactly(stream, len4, name, "header length");
                uint l = BinaryPrimitives.ReadUInt32LittleEndian(len4);
                if (l > 1 << 24)
                {
                    throw new OnnxFormatException(name, $"implausible header length {l}");
                }

                headerLength = (int)l;
                lengthBytes = 4;
                encoding = major == 3 ? Encoding.UTF8 : Encoding.Latin1;
                break;
            default:
                throw new OnnxFormatException(name, $"unsupported .npy format version {major}.{prefix[7]}");
        }

        var headerBytes = new byte[headerLength];
        ReadExactly(stream, headerBytes, name, "header");
        var (dtype, fortran, shape) = ParseHeader(encoding.GetString(headerBytes), name);
        if (fortran)
        {
            throw new OnnxFormatException(name, "array is stored in Fortran (column-major) order; save it C-ordered (numpy.ascontiguousarray)");
        }

        return (dtype, shape, 8 + lengthBytes + headerLength);
    }

    /// <summary>
    /// Reads one .npy from <paramref name="stream"/>. <paramref name="declaredLength"/> is what the container says the
    /// whole .npy holds (the file's length when <paramref name="lengthIsFile"/>, else a claim such as a zip entry's
    /// size); <paramref name="compressed"/> data is also held to <see cref="MaxInflatedBytes"/>. Both are checked
    /// against the header before the data buffer is allocated.
    /// </summary>
    internal static NpyArray ReadPlain(Stream stream, string name, long? declaredLength, bool compressed, bool lengthIsFile = false)
    {
        var (dtype, shape, headerBytes) = ReadHeader(stream, name);
        long bytes = DataBytes(dtype, shape, name);
        string what = $"the header declares {bytes} bytes of data (shape ({string.Join(", ", shape)}), {dtype})";
        if (declaredLength is { } length && bytes > length - headerBytes)
        {
            throw new OnnxFormatException(name, $"{what}, but the file ends inside the data ({Math.Max(0, length - headerBytes)} bytes follow the header)");
        }

        if (compressed && bytes > MaxInflatedBytes)
        {
            throw new OnnxFormatException(name, $"{what}, over the limit of {MaxInflatedBytes} bytes (1 GiB) for a compressed array; store it uncompressed");
        }

        if (bytes > Array.MaxLength)
        {
            throw new OnnxFormatException(name, $"{what}: too large to load");
        }

        // Unless the file is known to hold the bytes, they are read into a buffer that grows as they arrive, so a
        // header or container that lies costs nothing.
        byte[] data;
        if (lengthIsFile && !compressed)
        {
            data = new byte[bytes];
            ReadExactly(stream, data, name, $"data ({bytes} bytes expected)");
        }
        else
        {
            data = ReadGrowing(stream, (int)bytes, name);
        }

        return new NpyArray(dtype, shape, data);
    }

    private static long DataBytes(NpyDType dtype, long[] shape, string name)
    {
        try
        {
            return checked(shape.Aggregate(1L, (a, d) => checked(a * d)) * ItemSize(dtype));
        }
        catch (OverflowException)
        {
            throw new OnnxFormatException(name, $"shape ({string.Join(", ", shape)}) is too large");
        }
    }

    private static byte[] ReadGrowing(Stream stream, int bytes, string name)
    {
        var data = new byte[Math.Min(bytes, 1 << 20)];
        int filled = 0;
        while (filled < bytes)
        {
            if (filled == data.Length)
            {
                Array.Resize(ref data, (int)Math.Min(bytes, data.Length * 2L));
            }

            int n = stream.Read(data.AsSpan(filled));
            if (n == 0)
            {
                throw new OnnxFormatException(name, $"file ends inside the data ({bytes} bytes expected, {filled} found)");
            }

            filled += n;
        }

        return data;
    }

    private static void WritePlain(Stream stream, NpyArray array)
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("writing .npy needs a little-endian machine");
        }

        string shape = array.Shape.Count switch
        {
            0 => "()",
            1 => $"({array.Shape[0]},)",
            _ => "(" + string.Join(", ", array.Shape) + ")",
        };
        string dict = $"{{'descr': '{Descr(array.DType)}', 'fortran_order': False, 'shape': {shape}, }}";
        // numpy pads the header with spaces so that magic + length + header (ending in '\n') is a multiple of 64
        bool v2 = dict.Length + 11 > ushort.MaxValue;
        int prefixLength = v2 ? 12 : 10;
        int total = (prefixLength + dict.Length + 1 + 63) / 64 * 64;
        string header = dict.PadRight(total - prefixLength - 1) + "\n";
        stream.Write(Magic);
        stream.WriteByte(v2 ? (byte)2 : (byte)1);
        stream.WriteByte(0);
        Span<byte> len = stackalloc byte[4];
        if (v2)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)header.Length);
            stream.Write(len);
        }
        else
        {
            BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)header.Length);
            stream.Write(len[..2]);
        }

        stream.Write(Encoding.Latin1.GetBytes(header));
        stream.Write(array.Data);
    }

    private static string Descr(NpyDType dtype)
    {
        var row = dtype.Row();
        return (row.Size == 1 ? "|" : "<") + row.NpyCode;
    }

    private static NpyDType ParseDescr(string descr, string name)
    {
        if (descr.Length < 3)
        {
            throw new OnnxFormatException(name, $"unsupported dtype '{descr}'");
        }

        char order = descr[0];
        string code = descr[1..];
        var row = ElementTypes.FromNpyCode(code);
        if (order == '>' && row?.Size != 1)
        {
            throw new OnnxFormatException(name, $"big-endian dtype '{descr}' is not supported; save it little-endian (arr.astype('<{code}'))");
        }

        if (order is not ('<' or '|' or '=' or '>'))
        {
            throw new OnnxFormatException(name, $"unsupported dtype '{descr}'");
        }

        return row is not null
            ? (NpyDType)row.Type
            : throw new OnnxFormatException(name, $"unsupported dtype '{descr}' (supported: {SupportedCodes})");
    }

    /// <summary>"u1 i1 i2 i4 i8 f2 f4 f8 b1": unsigned, signed, floating, bool, each by size.</summary>
    private static string SupportedCodes => string.Join(" ", ElementTypes.All.Where(row => row.NpyCode is not null)
        .OrderBy(row => row.Kind switch { ElementKind.UnsignedInteger => 0, ElementKind.SignedInteger => 1, ElementKind.Float => 2, _ => 3 })
        .ThenBy(row => row.Bits)
        .Select(row => row.NpyCode));

    /// <summary>Parses the header, a Python dict literal such as {'descr': '&lt;f4', 'fortran_order': False, 'shape': (3, 4), }.</summary>
    private static (NpyDType DType, bool Fortran, long[] Shape) ParseHeader(string header, string name)
    {
        var p = new HeaderParser(header, name);
        string? descr = null;
        bool? fortran = null;
        long[]? shape = null;
        p.Expect('{');
        while (!p.TryConsume('}'))
        {
            string key = p.ReadString();
            p.Expect(':');
            switch (key)
            {
                case "descr":
                    if (p.Peek() != '\'' && p.Peek() != '"')
                    {
                        throw new OnnxFormatException(name, "structured dtypes (record arrays) are not supported");
                    }

                    descr = p.ReadString();
                    break;
                case "fortran_order":
                    fortran = p.ReadBool();
                    break;
                case "shape":
                    shape = p.ReadShape();
                    break;
                default:
                    throw new OnnxFormatException(name, $"unexpected header key '{key}'");
            }

            if (!p.TryConsume(','))
            {
                p.Expect('}');
                break;
            }
        }

        if (descr is null || fortran is null || shape is null)
        {
            throw new OnnxFormatException(name, "header lacks one of 'descr', 'fortran_order', 'shape'");
        }

        return (ParseDescr(descr, name), fortran.Value, shape);
    }

    private static int ReadAtMost(Stream stream, Span<byte> buffer)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = stream.Read(buffer[total..]);
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        return total;
    }

    private static void ReadExactly(Stream stream, Span<byte> buffer, string name, string what)
    {
        if (ReadAtMost(stream, buffer) != buffer.Length)
        {
            throw new OnnxFormatException(name, $"file ends inside the {what}");
        }
    }

    private sealed class HeaderParser(string text, string name)
    {
        private int _pos;

        public char Peek()
        {
            SkipSpace();
            return _pos < text.Length ? text[_pos] : '\0';
        }

        public void Expect(char c)
        {
            if (!TryConsume(c))
            {
                throw Error($"expected '{c}'");
            }
        }

        public bool TryConsume(char c)
        {
            if (Peek() != c)
            {
                return false;
            }

            _pos++;
            return true;
        }

        public string ReadString()
        {
            char quote = Peek();
            if (quote is not ('\'' or '"'))
            {
                throw Error("expected a quoted string");
            }

            int end = text.IndexOf(quote, _pos + 1);
            if (end < 0)
            {
                throw Error("unterminated string");
            }

            string s = text[(_pos + 1)..end];
            _pos = end + 1;
            return s;
        }

        public bool ReadBool()
        {
            SkipSpace();
            if (text.AsSpan(_pos).StartsWith("True", StringComparison.Ordinal))
            {
                _pos += 4;
                return true;
            }

            if (text.AsSpan(_pos).StartsWith("False", StringComparison.Ordinal))
            {
                _pos += 5;
                return false;
            }

            throw Error("expected True or False");
        }

        public long[] ReadShape()
        {
            Expect('(');
            var dims = new List<long>();
            while (!TryConsume(')'))
            {
                SkipSpace();
                int start = _pos;
                while (_pos < text.Length && char.IsAsciiDigit(text[_pos]))
                {
                    _pos++;
                }

                // numpy on some platforms wrote Python 2 longs such as 3L
                string digits = text[start.._pos];
                if (_pos < text.Length && text[_pos] == 'L')
                {
                    _pos++;
                }

                if (!long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long d))
                {
                    throw Error("expected a non-negative dimension");
                }

                dims.Add(d);
                if (!TryConsume(','))
                {
                    Expect(')');
                    break;
                }
            }

            return [.. dims];
        }

        private void SkipSpace()
        {
            while (_pos < text.Length && char.IsWhiteSpace(text[_pos]))
            {
                _pos++;
            }
        }

        private OnnxFormatException Error(string what) => new(name, $"malformed .npy header at character {_pos}: {what} in \"{text.TrimEnd()}\"");
    }

    /// <summary>A stream that first returns already-read bytes, then the rest of an inner stream.</summary>
    private sealed class PrefixedStream(byte[] prefix, Stream inner) : ReadOnlyStream
    {
        private int _prefixPos;

        public override int Read(Span<byte> buffer)
        {
            if (_prefixPos < prefix.Length)
            {
                int n = Math.Min(buffer.Length, prefix.Length - _prefixPos);
                prefix.AsSpan(_prefixPos, n).CopyTo(buffer);
                _prefixPos += n;
                return n;
            }

            return inner.Read(buffer);
        }
    }
}
