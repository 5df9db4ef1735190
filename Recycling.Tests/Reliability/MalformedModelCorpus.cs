using System.Runtime.InteropServices;
using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.IO;
using Recycling.Onnx.Proto;
using static Recycling.Tests.Reliability.WireBytes;

namespace Recycling.Tests.Reliability;

/// <summary>
/// One malformed or hostile model. <see cref="Build"/> writes it (and any files beside it) into an empty folder and
/// returns the model's path. <see cref="MustReject"/>: the case is invalid by construction, so opening must fail;
/// otherwise (random truncations and bit flips) a mutation may happen to leave a valid model, which must then read fully.
/// </summary>
internal sealed record MalformedCase(string Category, string Name, bool MustReject, Func<string, string> Build)
{
    public override string ToString() => $"{Category}/{Name}";
}

/// <summary>
/// The generated corpus of malformed models, all derived from the real torch exports in Fixtures/torch-io.
/// <see cref="All"/> is the exhaustive corpus (every truncation offset, many bit flips); <see cref="Sample"/> keeps every
/// targeted case and a fixed sample of the random mutations.
/// </summary>
internal static partial class MalformedModelCorpus
{
    private const string Cnn = "cnn_default.onnx";
    private const string CnnTyped = "cnn_typed.onnx";
    private const string External = "transformer_external.onnx";
    private const string ExternalData = "transformer_external.onnx.data";

    // Wire paths into the fixtures: Model.graph = 7, Graph.node = 1, Graph.initializer = 5, Node.attribute = 5, Attribute.t = 5.
    private static readonly (int, int)[] GraphPath = [(7, 0)];
    private static readonly (int, int)[] NodePath = [(7, 0), (1, 0)];
    private static readonly (int, int)[] AttributePath = [(7, 0), (1, 0), (5, 0)];
    private static readonly (int, int)[] InitializerPath = [(7, 0), (5, 0)];

    public static string FixturePath(string name) => Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-io", name);

    public static IEnumerable<MalformedCase> All() =>
        Truncations(every: true)
            .Concat(BitFlips(perFixture: 400))
            .Concat(Targeted());

    /// <summary>Every targeted case, and 100 random mutations drawn with a fixed seed.</summary>
    public static IEnumerable<MalformedCase> Sample()
    {
        var random = new Random(20261124);
        var mutations = Truncations(every: false).Concat(BitFlips(perFixture: 40)).ToList();
        return Targeted().Concat(mutations.OrderBy(_ => random.Next()).Take(100));
    }

    public static IEnumerable<MalformedCase> Targeted() =>
        NotOnnx()
            .Concat(VarintsAndLengths())
            .Concat(WrongWireTypes())
            .Concat(Dims())
            .Concat(Values())
            .Concat(RecursionBombs())
            .Concat(ExternalDataCases());

    private static IEnumerable<MalformedCase> Truncations(bool every)
    {
        foreach (var fixture in new[] { Cnn, CnnTyped, External })
        {
            var bytes = File.ReadAllBytes(FixturePath(fixture));
            var step = every ? 1 : Math.Max(1, bytes.Length / 60);
            for (var length = 0; length < bytes.Length; length += step)
            {
                var cut = length;
                yield return Bytes("truncation", $"{fixture}@{cut}", mustReject: cut == 0, () => bytes[..cut], withData: fixture == External);
            }
        }
    }

    private static IEnumerable<MalformedCase> BitFlips(int perFixture)
    {
        foreach (var fixture in new[] { Cnn, CnnTyped, External })
        {
            var bytes = File.ReadAllBytes(FixturePath(fixture));
            var random = new Random(fixture.Length * 7919);
            for (var i = 0; i < perFixture; i++)
            {
                var flips = 1 + random.Next(4);
                var positions = Enumerable.Range(0, flips).Select(_ => (Offset: random.Next(bytes.Length), Bit: random.Next(8))).ToArray();
                var name = string.Join('+', positions.Select(p => $"{p.Offset}.{p.Bit}"));
                yield return Bytes("bit-flip", $"{fixture}@{name}", mustReject: false, () =>
                {
                    var copy = (byte[])bytes.Clone();
                    foreach (var (offset, bit) in positions)
                    {
                        copy[offset] ^= (byte)(1 << bit);
                    }

                    return copy;
                }, withData: fixture == External);
            }
        }
    }

    private static IEnumerable<MalformedCase> NotOnnx()
    {
        yield return Bytes("not-onnx", "empty", true, () => []);
        yield return Bytes("not-onnx", "zeros", true, () => new byte[4096]);
        yield return Bytes("not-onnx", "text", true, () => "{\"graph\": \"not protobuf\"}\n"u8.ToArray());
        yield return Bytes("not-onnx", "zip-header", true, () => [0x50, 0x4B, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00]);
        yield return Bytes("not-onnx", "random", true, () =>
        {
            // Random bytes usually fail in the first few fields; this seed's bytes do (checked by the must-reject test).
            var bytes = new byte[65536];
            new Random(3).NextBytes(bytes);
            return bytes;
        });
        yield return Bytes("not-onnx", "no-graph", true, () => Mutate(Cnn, m => m.Graph = null));
        yield return Bytes("not-onnx", "reserved-field", true, () => Concat(Fixture(Cnn), Tag(536_870_000, WireType.Varint), [1]));
        yield return Bytes("not-onnx", "reserved-field-in-tensor", true, () => Splice(Model(Cnn), InitializerPath, Concat(Tag(536_870_000, WireType.Varint), [1])));
        yield return Bytes("not-onnx", "field-zero", true, () => Concat(Fixture(Cnn), [0x00, 0x01]));
        yield return Bytes("not-onnx", "group-wire-type", true, () => Splice(Model(Cnn), NodePath, Concat(Tag(20, WireType.StartGroup), Tag(20, WireType.EndGroup))));
        foreach (var type in new[] { 6, 7 })
        {
            yield return Bytes("not-onnx", $"wire-type-{type}", true, () => Splice(Model(Cnn), GraphPath, Varint(((ulong)30 << 3) | (uint)type)));
        }

        yield return Bytes("not-onnx", "invalid-utf8-name", true, () => Splice(Model(Cnn), NodePath, Field(3, [0xC3, 0x28, 0xFF])));
        yield return Bytes("not-onnx", "directory", true, () => null);
    }

    /// <summary>Overlong, overflowing and truncated varints, and lengths past the end, at every level of nesting.</summary>
    private static IEnumerable<MalformedCase> VarintsAndLengths()
    {
        var levels = new (string Name, string Fixture, (int, int)[] Path)[]
        {
            ("model", Cnn, []),
            ("graph", Cnn, GraphPath),
            ("node", Cnn, NodePath),
            ("attribute", Cnn, AttributePath),
            ("initializer", Cnn, InitializerPath),
            ("constant-tensor", External, [(7, 0), (1, 8), (5, 0), (5, 0)]),
        };
        var bad = new (string Name, byte[] Bytes)[]
        {
            ("tag-overflow", [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]),
            ("tag-11-bytes", [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            ("tag-truncated", [0x80]),
            ("tag-field-too-large", Varint(((ulong)1 << 32) | 2)),
            ("length-overflow", Concat(Tag(6, WireType.LengthDelimited), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])),
            ("length-2^62", Concat(Tag(6, WireType.LengthDelimited), Varint(1UL << 62))),
            ("length-int-max", Concat(Tag(6, WireType.LengthDelimited), Varint(int.MaxValue))),
            ("length-2^31", Concat(Tag(6, WireType.LengthDelimited), Varint(1UL << 31))),
            ("length-past-end-by-1", Concat(Tag(6, WireType.LengthDelimited), Varint(3), [1, 2])),
            ("length-truncated", Concat(Tag(6, WireType.LengthDelimited), [0x80, 0x80])),
            ("varint-value-truncated", Concat(Tag(1, WireType.Varint), [0xFF])),
            ("fixed32-truncated", Concat(Tag(30, WireType.Fixed32), [1, 2])),
            ("fixed64-truncated", Concat(Tag(30, WireType.Fixed64), [1, 2, 3, 4, 5])),
        };
        foreach (var (level, fixture, path) in levels)
        {
            foreach (var (name, bytes) in bad)
            {
                // Model field 1 (ir_version) and Tensor field 1 (dims) are varints; the others used are length-delimited or unknown.
                yield return Bytes("varint-length", $"{level}/{name}", true, () => Splice(Model(fixture), path, bytes), withData: fixture == External);
            }
        }
    }

    /// <summary>Every field whose wire type the reader knows, in every scanned message kind, given each other wire type.</summary>
    private static IEnumerable<MalformedCase> WrongWireTypes()
    {
        var kinds = new (string Kind, string Fixture, (int, int)[] Path, (int Field, WireType[] Allowed)[] Fields)[]
        {
            ("Model", Cnn, [], [
                .. Fields([1, 5], WireType.Varint),
                .. Fields([2, 3, 4, 6, 7, 8, 14, 20, 25], WireType.LengthDelimited)]),
            ("Graph", Cnn, GraphPath, [.. Fields([1, 2, 5, 10, 11, 12, 13, 14, 15, 16], WireType.LengthDelimited)]),
            ("Node", Cnn, NodePath, [.. Fields([1, 2, 3, 4, 5, 6, 7], WireType.LengthDelimited)]),
            ("Attribute", Cnn, AttributePath, [
                (2, [WireType.Fixed32]),
                (3, [WireType.Varint]),
                (20, [WireType.Varint]),
                .. Fields([1, 4, 5, 6, 9, 10, 11, 13, 14, 21, 22, 23], WireType.LengthDelimited),
                (7, [WireType.Fixed32, WireType.LengthDelimited]),
                (8, [WireType.Varint, WireType.LengthDelimited])]),
            ("Tensor", Cnn, InitializerPath, [
                (1, [WireType.Varint, WireType.LengthDelimited]),
                (2, [WireType.Varint]),
                (14, [WireType.Varint]),
                (4, [WireType.Fixed32, WireType.LengthDelimited]),
                (5, [WireType.Varint, WireType.LengthDelimited]),
                (7, [WireType.Varint, WireType.LengthDelimited]),
                (10, [WireType.Fixed64, WireType.LengthDelimited]),
                (11, [WireType.Varint, WireType.LengthDelimited]),
                .. Fields([3, 6, 8, 9, 12, 13], WireType.LengthDelimited)]),
        };
        var wireTypes = new[] { WireType.Varint, WireType.Fixed64, WireType.LengthDelimited, WireType.Fixed32 };
        foreach (var (kind, fixture, path, fields) in kinds)
        {
            foreach (var (field, allowed) in fields)
            {
                foreach (var type in wireTypes.Except(allowed))
                {
                    yield return Bytes("wrong-wire-type", $"{kind}.{field}-as-{type}", true, () => Splice(Model(fixture), path, Concat(Tag(field, type), Payload(type))));
                }
            }
        }
    }

    private static IEnumerable<(int, WireType[])> Fields(int[] numbers, WireType type) => numbers.Select(n => (n, new[] { type }));

    private static IEnumerable<MalformedCase> Dims()
    {
        var dims = new (string Name, long[] Dims)[]
        {
            ("negative", [-1, 16]),
            ("negative-min", [long.MinValue, 1]),
            ("negative-times-negative", [-10, -16]),
            ("product-overflows", [1L << 32, 1L << 32]),
            ("product-overflows-max", [long.MaxValue, 2]),
            ("bytes-overflow", [1L << 62]),
            ("huge", [1L << 40]),
            ("huge-2d", [1L << 20, 1L << 20]),
            ("zero-with-data", [0, 16]),
            ("one-too-many", [10, 17]),
            ("scalar-with-data", []),
        };
        foreach (var (name, value) in dims)
        {
            yield return Bytes("dims", $"raw/{name}", true, () => Mutate(Cnn, m => SetDims(m.Graph.Initializer[0], value)));
            yield return Bytes("dims", $"typed/{name}", true, () => Mutate(CnnTyped, m => SetDims(m.Graph.Initializer[0], value)));
            yield return Bytes("dims", $"external/{name}", true, () => Mutate(External, m => SetDims(m.Graph.Initializer[0], value)), withData: true);
            if (value.Length == 0)
            {
                continue; // the Constant tensor used is a scalar already
            }

            yield return Bytes("dims", $"constant/{name}", true, () => Mutate(External, m => SetDims(m.Graph.Node[8].Attribute[0].T, value)), withData: true);
        }

        // Huge dims with a single typed value: the decoder must not size its buffer from the dims.
        foreach (var field in new[] { "float_data", "int32_data", "int64_data", "double_data", "uint64_data" })
        {
            yield return Bytes("dims", $"huge-with-one-{field}", true, () => Mutate(Cnn, m =>
            {
                var tensor = m.Graph.Initializer[0];
                tensor.RawData = ByteString.Empty;
                tensor.Dims.Clear();
                tensor.Dims.Add(1L << 34);
                (tensor.DataType, var add) = field switch
                {
                    "float_data" => ((int)OnnxDataType.Float, (Action)(() => tensor.FloatData.Add(1f))),
                    "int32_data" => ((int)OnnxDataType.Int32, () => tensor.Int32Data.Add(1)),
                    "int64_data" => ((int)OnnxDataType.Int64, () => tensor.Int64Data.Add(1)),
                    "double_data" => ((int)OnnxDataType.Double, () => tensor.DoubleData.Add(1)),
                    _ => ((int)OnnxDataType.UInt64, () => tensor.Uint64Data.Add(1)),
                };
                add();
            }));
        }
    }

    private static IEnumerable<MalformedCase> Values()
    {
        foreach (var type in new[] { OnnxDataType.Float, OnnxDataType.Float16, OnnxDataType.Bool, OnnxDataType.Int4, OnnxDataType.Complex128, OnnxDataType.Float4E2M1 })
        {
            foreach (var delta in new[] { -1, 1, -int.MaxValue })
            {
                yield return Bytes("raw-data-length", $"{type}{delta:+0;-0}", true, () => Mutate(Cnn, m =>
                {
                    var tensor = m.Graph.Initializer[0];
                    tensor.DataType = (int)type;
                    var expected = (int)OnnxDataTypes.RawByteLength(type, 160);
                    tensor.RawData = ByteString.CopyFrom(new byte[Math.Max(0, expected + delta)]);
                }));
            }
        }

        foreach (var type in new[] { 0, 27, 99, -1, int.MaxValue })
        {
            yield return Bytes("values", $"data-type-{type}", true, () => Mutate(Cnn, m => m.Graph.Initializer[0].DataType = type));
        }

        yield return Bytes("values", "typed-one-short", true, () => Mutate(CnnTyped, m => m.Graph.Initializer[0].FloatData.RemoveAt(0)));
        yield return Bytes("values", "typed-one-extra", true, () => Mutate(CnnTyped, m => m.Graph.Initializer[0].FloatData.Add(1f)));
        yield return Bytes("values", "typed-wrong-field", true, () => Mutate(CnnTyped, m =>
        {
            var tensor = m.Graph.Initializer[0];
            tensor.Int64Data.Add(tensor.FloatData.Select(f => (long)f));
            tensor.FloatData.Clear();
        }));
        yield return Bytes("values", "typed-fp16-in-float-data", true, () => Mutate(CnnTyped, m => m.Graph.Initializer[0].DataType = (int)OnnxDataType.Float16));
        yield return Bytes("values", "raw-and-typed", true, () => Mutate(Cnn, m => m.Graph.Initializer[0].FloatData.Add(1f)));
        yield return Bytes("values", "raw-twice", true, () => Splice(Model(Cnn), InitializerPath, Field(9, new byte[640])));
        yield return Bytes("values", "string-with-raw", true, () => Mutate(Cnn, m => m.Graph.Initializer[0].DataType = (int)OnnxDataType.String));
        yield return Bytes("values", "no-values", true, () => Mutate(Cnn, m => m.Graph.Initializer[0].RawData = ByteString.Empty));
        yield return Bytes("values", "packed-float-truncated", true, () => Splice(Model(CnnTyped), InitializerPath, Concat(Tag(4, WireType.LengthDelimited), Varint(6), [1, 2, 3, 4, 5, 6])));
        yield return Bytes("values", "packed-varint-truncated", true, () =>
        {
            var model = Model(Cnn);
            var tensor = model.Graph.Initializer[0];
            tensor.RawData = ByteString.Empty;
            tensor.DataType = (int)OnnxDataType.Int64;
            SetDims(tensor, [1]);
            return Splice(model, InitializerPath, Concat(Tag(7, WireType.LengthDelimited), Varint(2), [0xFF, 0xFF]));
        });
        yield return Bytes("values", "embedded-and-external", true, () => Mutate(Cnn, m =>
        {
            var tensor = m.Graph.Initializer[0];
            tensor.DataLocation = TensorProto.Types.DataLocation.External;
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "x.data" });
        }));
        yield return Bytes("values", "external-entries-not-external", true, () => Mutate(Cnn, m =>
            m.Graph.Initializer[0].ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "x.data" })));
        yield return Bytes("values", "sparse-values-bad-length", true, () => Mutate(Cnn, m =>
        {
            var values = m.Graph.Initializer[1].Clone();
            values.RawData = ByteString.CopyFrom(new byte[39]);
            m.Graph.SparseInitializer.Add(new SparseTensorProto { Values = values, Indices = new TensorProto { DataType = (int)OnnxDataType.Int64, Dims = { 10 }, Int64Data = { Enumerable.Range(0, 10).Select(i => (long)i) } } });
        }));
    }

    /// <summary>Subgraphs nested through If/Loop attributes far deeper than any real model, built bottom-up as bytes.</summary>
    private static IEnumerable<MalformedCase> RecursionBombs()
    {
        foreach (var depth in new[] { 100, 1_000, 50_000 })
        {
            yield return Bytes("recursion-bomb", $"if-depth-{depth}", true, () => NestedGraphs(depth, attributeField: 6));
            yield return Bytes("recursion-bomb", $"graphs-depth-{depth}", true, () => NestedGraphs(depth, attributeField: 11));
        }

        // Nesting in messages the scanner copies without walking (TypeProto sequences): left to the protobuf parser's limit.
        yield return Bytes("recursion-bomb", "type-sequence-depth-5000", true, () =>
        {
            var type = Field(1, Field(1, Varint(1)));
            for (var i = 0; i < 5000; i++)
            {
                type = Field(4, Field(1, type)); // TypeProto.sequence_type.elem_type
            }

            return Splice(Model(Cnn), GraphPath, Field(13, Concat(Field(1, "deep"u8.ToArray()), Field(2, type))));
        });
        yield return Bytes("recursion-bomb", "wide-20k-empty-subgraphs", false, () =>
        {
            var attribute = Concat(Field(1, "else_branch"u8.ToArray()), Tag(20, WireType.Varint), Varint(5), Field(6, []));
            var node = Concat([Field(4, "If"u8.ToArray()), .. Enumerable.Repeat(Field(5, attribute), 20_000)]);
            return Splice(Model(Cnn), GraphPath, Field(1, node));
        });
    }

    /// <summary>Graph → If node → attribute → graph ..., <paramref name="depth"/> times, framed from the inside out in linear time.</summary>
    private static byte[] NestedGraphs(int depth, int attributeField)
    {
        var reversed = new List<byte>();
        long graphLength = 0;
        for (var i = 0; i < depth; i++)
        {
            var attributeHead = Concat(Field(1, "then_branch"u8.ToArray()), Tag(20, WireType.Varint), Varint(attributeField == 6 ? 5UL : 10UL), Tag(attributeField, WireType.LengthDelimited), Varint((ulong)graphLength));
            var attributeLength = attributeHead.Length + graphLength;
            var nodeHead = Concat(Field(4, "If"u8.ToArray()), Tag(5, WireType.LengthDelimited), Varint((ulong)attributeLength));
            var nodeLength = nodeHead.Length + attributeLength;
            var graphHead = Concat(Tag(1, WireType.LengthDelimited), Varint((ulong)nodeLength));
            var prefix = Concat(graphHead, nodeHead, attributeHead);
            for (var j = prefix.Length - 1; j >= 0; j--)
            {
                reversed.Add(prefix[j]);
            }

            graphLength += prefix.Length;
        }

        reversed.Reverse();
        return Splice(Model(Cnn), GraphPath, reversed.ToArray());
    }

    private static IEnumerable<MalformedCase> ExternalDataCases()
    {
        MalformedCase Case(string name, Func<string, string?> location, long? offset = null, string? offsetText = null, long? length = null, string? lengthText = null, Action<string>? setup = null) =>
            new("external-data", name, true, folder =>
            {
                var model = Path.Combine(folder, "model", "m.onnx");
                Directory.CreateDirectory(Path.GetDirectoryName(model)!);
                File.Copy(FixturePath(ExternalData), Path.Combine(folder, "model", ExternalData));
                setup?.Invoke(folder);
                var entry = location(folder);
                var proto = Model(External);
                var entries = proto.Graph.Initializer[0].ExternalData;
                entries.Clear();
                if (entry is not null)
                {
                    entries.Add(new StringStringEntryProto { Key = "location", Value = entry });
                }

                if (offset is not null || offsetText is not null)
                {
                    entries.Add(new StringStringEntryProto { Key = "offset", Value = offsetText ?? offset!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                }

                if (length is not null || lengthText is not null)
                {
                    entries.Add(new StringStringEntryProto { Key = "length", Value = lengthText ?? length!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                }

                File.WriteAllBytes(model, proto.ToByteArray());
                return model;
            });

        static void Secret(string folder) => File.WriteAllBytes(Path.Combine(folder, "secret.bin"), new byte[1 << 16]);
        static void Symlink(string link, string target) => File.CreateSymbolicLink(link, target);

        yield return Case("dotdot", _ => "../secret.bin", setup: Secret);
        yield return Case("dotdot-nested", _ => "sub/../../secret.bin", setup: Secret);
        yield return Case("dotdot-backslash", _ => "..\\secret.bin", setup: Secret);
        yield return Case("dotdot-only", _ => "..");
        yield return Case("absolute", f => Path.Combine(f, "secret.bin"), setup: Secret);
        yield return Case("absolute-etc", _ => "/etc/passwd");
        yield return Case("absolute-proc", _ => "/proc/self/mem");
        yield return Case("absolute-windows-drive", _ => "C:\\Windows\\win.ini");
        yield return Case("absolute-unc", _ => "\\\\server\\share\\x.data");
        yield return Case("nul-byte", _ => "transformer_external.onnx.data\0../../secret.bin");
        yield return Case("ort-mem-addr", _ => "*/_ORT_MEM_ADDR_/*");
        yield return Case("ort-mem-addr-prefix", _ => "_ORT_MEM_ADDR_0x7f0000000000");
        yield return Case("symlink-file-outside", _ => "link.bin", setup: f =>
        {
            Secret(f);
            Symlink(Path.Combine(f, "model", "link.bin"), Path.Combine(f, "secret.bin"));
        });
        yield return Case("symlink-file-inside", _ => "link.bin", setup: f => Symlink(Path.Combine(f, "model", "link.bin"), Path.Combine(f, "model", ExternalData)));
        yield return Case("symlink-folder", _ => "dir/secret.bin", setup: f =>
        {
            Secret(f);
            Directory.CreateSymbolicLink(Path.Combine(f, "model", "dir"), f);
        });
        yield return Case("symlink-dangling", _ => "dangling.bin", setup: f => Symlink(Path.Combine(f, "model", "dangling.bin"), Path.Combine(f, "nowhere")));
        yield return Case("symlink-loop", _ => "loop.bin", setup: f => Symlink(Path.Combine(f, "model", "loop.bin"), Path.Combine(f, "model", "loop.bin")));
        yield return Case("hard-link-outside", _ => "hard.bin", setup: f =>
        {
            Secret(f);
            Assert.AreEqual(0, Link(Path.Combine(f, "secret.bin"), Path.Combine(f, "model", "hard.bin")), "link(2) failed");
        });
        yield return Case("missing", _ => "missing.data");
        yield return Case("missing-folder", _ => "no/such/folder.data");
        yield return Case("through-a-file", _ => ExternalData + "/x");
        yield return Case("folder", _ => "sub", setup: f => Directory.CreateDirectory(Path.Combine(f, "model", "sub")));
        yield return Case("dot", _ => ".");
        yield return Case("empty-location", _ => "");
        yield return Case("blank-location", _ => "   ");
        yield return Case("no-location", _ => null);
        yield return Case("name-too-long", _ => new string('a', 300));
        yield return Case("path-too-long", _ => string.Join('/', Enumerable.Repeat(new string('b', 200), 40)));
        yield return Case("offset-past-end", _ => ExternalData, offset: 47232);
        yield return Case("offset-max", _ => ExternalData, offset: long.MaxValue);
        yield return Case("offset-overflows-long", _ => ExternalData, offsetText: "99999999999999999999");
        yield return Case("offset-negative", _ => ExternalData, offsetText: "-1");
        yield return Case("offset-plus", _ => ExternalData, offsetText: "+0");
        yield return Case("offset-hex", _ => ExternalData, offsetText: "0x10");
        yield return Case("offset-exponent", _ => ExternalData, offsetText: "1e3");
        yield return Case("offset-empty", _ => ExternalData, offsetText: "");
        yield return Case("offset-range-past-end", _ => ExternalData, offset: 47232 - 6143);
        yield return Case("length-wrong", _ => ExternalData, length: 6143);
        yield return Case("length-past-end", _ => ExternalData, length: 1L << 40);
        yield return Case("length-negative", _ => ExternalData, lengthText: "-6144");
        yield return Case("length-max", _ => ExternalData, length: long.MaxValue);
        yield return Case("fifo", _ => "fifo.bin", setup: f => Assert.AreEqual(0, MakeFifo(Path.Combine(f, "model", "fifo.bin"), 0x1B6), "mkfifo(3) failed"));
        yield return Case("device-symlink", _ => "zero.bin", setup: f => Symlink(Path.Combine(f, "model", "zero.bin"), "/dev/zero"));
        yield return Bytes("external-data", "string-tensor-external", true, () => Mutate(External, m => m.Graph.Initializer[0].DataType = (int)OnnxDataType.String), withData: true);
    }

    private static MalformedCase Bytes(string category, string name, bool mustReject, Func<byte[]?> bytes, bool withData = false) =>
        new(category, name, mustReject, folder =>
        {
            var path = Path.Combine(folder, "model.onnx");
            var content = bytes();
            if (content is null)
            {
                Directory.CreateDirectory(path);
                return path;
            }

            File.WriteAllBytes(path, content);
            if (withData)
            {
                File.Copy(FixturePath(ExternalData), Path.Combine(folder, ExternalData));
            }

            return path;
        });

    private static readonly Dictionary<string, byte[]> FixtureCache = [];

    private static byte[] Fixture(string name)
    {
        lock (FixtureCache)
        {
            if (!FixtureCache.TryGetValue(name, out var bytes))
            {
                bytes = File.ReadAllBytes(FixturePath(name));
                FixtureCache[name] = bytes;
            }

            return bytes;
        }
    }

    private static ModelProto Model(string fixture) => ModelProto.Parser.ParseFrom(Fixture(fixture));

    private static byte[] Mutate(string fixture, Action<ModelProto> change)
    {
        var model = Model(fixture);
        change(model);
        return model.ToByteArray();
    }

    private static void SetDims(TensorProto tensor, long[] dims)
    {
        tensor.Dims.Clear();
        tensor.Dims.Add(dims);
    }

    [LibraryImport("libc", EntryPoint = "mkfifo", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MakeFifo(string path, uint mode);

    [LibraryImport("libc", EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Link(string existing, string created);
}
