using System.CommandLine;
using System.Globalization;
using System.Text.Json.Serialization;
using Recycling.Onnx;
using Recycling.Onnx.Proto;
using Spectre.Console;

namespace Recycling.Cli.Commands;

/// <summary>`recycle inspect MODEL [--json]`: producer, opsets, graph inputs/outputs, metadata, and every tensor with where it is stored.</summary>
internal static class InspectCommand
{
    internal static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Path of the .onnx file (external-data files are read from beside it)" };
        var json = CommandSupport.JsonOption();
        var command = new Command("inspect", "Show a model's producer, opsets, inputs and outputs, metadata, and every tensor: path, type, shape, bytes and where it is stored");
        command.Arguments.Add(model);
        command.Options.Add(json);
        command.SetAction(parseResult =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            using var opened = OnnxModel.Open(CommandSupport.Model(parseResult.GetValue(model)!));
            var report = ModelReport.From(opened);
            if (parseResult.GetValue(json))
            {
                CommandSupport.WriteJson(parseResult, report);
            }
            else if (ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected)
            {
                WriteTable(report, output);
            }
            else
            {
                WritePlain(report, output);
            }

            return 0;
        });
        return command;
    }

    internal sealed record ModelReport(
        string File,
        long IrVersion,
        string ProducerName,
        string ProducerVersion,
        string Domain,
        long ModelVersion,
        IReadOnlyList<OpsetReport> Opsets,
        IReadOnlyList<ValueReport> Inputs,
        IReadOnlyList<ValueReport> Outputs,
        IReadOnlyDictionary<string, string> Metadata,
        IReadOnlyList<TensorReport> Tensors,
        TotalsReport Totals)
    {
        public static ModelReport From(OnnxModel model)
        {
            var proto = model.Proto;
            var tensors = model.Tensors.Select(TensorReport.From).ToList();
            var totals = new TotalsReport(
                tensors.Count,
                tensors.Sum(t => t.Elements),
                tensors.Sum(t => t.Bytes),
                tensors.Where(t => t.Storage == "raw").Sum(t => t.Bytes),
                tensors.Where(t => t.Storage == "typed").Sum(t => t.Bytes),
                tensors.Where(t => t.Storage == "external").Sum(t => t.Bytes),
                [.. model.Files.Skip(1)]);
            return new ModelReport(
                model.Path,
                model.IrVersion,
                model.ProducerName,
                model.ProducerVersion,
                proto.Domain,
                proto.ModelVersion,
                [.. model.Opsets.Select(o => new OpsetReport(o.Domain.Length == 0 ? "ai.onnx" : o.Domain, o.Version))],
                [.. proto.Graph.Input.Select(ValueReport.From)],
                [.. proto.Graph.Output.Select(ValueReport.From)],
                model.Metadata,
                tensors,
                totals);
        }
    }

    internal sealed record OpsetReport(string Domain, long Version);

    /// <summary>A graph input or output: <see cref="Shape"/> holds numbers, symbolic names, or "?" for unknown dims; null when the rank is unknown.</summary>
    internal sealed record ValueReport(string Name, string Type, IReadOnlyList<string>? Shape)
    {
        public static ValueReport From(ValueInfoProto value)
        {
            var tensor = value.Type?.TensorType ?? (value.Type?.SparseTensorType is { } sparse ? new TypeProto.Types.Tensor { ElemType = sparse.ElemType, Shape = sparse.Shape } : null);
            var shape = tensor?.Shape?.Dim.Select(d => d.ValueCase switch
            {
                TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => d.DimValue.ToString(CultureInfo.InvariantCulture),
                TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam => d.DimParam,
                _ => "?",
            }).ToList();
            return new ValueReport(value.Name, TypeName(value.Type), shape);
        }

        private static string TypeName(TypeProto? type) => type?.ValueCase switch
        {
            TypeProto.ValueOneofCase.TensorType => DataTypeName((OnnxDataType)type.TensorType.ElemType),
            TypeProto.ValueOneofCase.SparseTensorType => $"sparse_tensor({DataTypeName((OnnxDataType)type.SparseTensorType.ElemType)})",
            TypeProto.ValueOneofCase.SequenceType => $"sequence({TypeName(type.SequenceType.ElemType)})",
            TypeProto.ValueOneofCase.OptionalType => $"optional({TypeName(type.OptionalType.ElemType)})",
            TypeProto.ValueOneofCase.MapType => $"map({DataTypeName((OnnxDataType)type.MapType.KeyType)}, {TypeName(type.MapType.ValueType)})",
            TypeProto.ValueOneofCase.OpaqueType => $"opaque({type.OpaqueType.Domain}.{type.OpaqueType.Name})",
            _ => "?",
        };
    }

    /// <summary>One tensor. <see cref="Storage"/> is raw, typed, external or empty; <see cref="Location"/> and
    /// <see cref="Offset"/> say where its bytes are (the external file, or the .onnx file for raw data).</summary>
    internal sealed record TensorReport(string Path, string Name, string Kind, string Dtype, IReadOnlyList<long> Shape, long Elements, long Bytes, string Storage, string? Location, long? Offset)
    {
        public static TensorReport From(OnnxTensor tensor) => new(
            tensor.Path,
            tensor.Name,
            tensor.Kind switch
            {
                TensorKind.Initializer => "initializer",
                TensorKind.SparseValues => "sparse_values",
                TensorKind.SparseIndices => "sparse_indices",
                TensorKind.Constant => "constant",
                _ => "attribute",
            },
            DataTypeName(tensor.DataType),
            tensor.Shape,
            tensor.ElementCount,
            tensor.ByteLength,
            tensor.Storage.ToString().ToLowerInvariant(),
            tensor.ExternalLocation,
            tensor.DataOffset >= 0 ? tensor.DataOffset : null);

        [JsonIgnore]
        public string Where => Storage == "external" ? $"{Location}@{Offset}" : Storage;
    }

    /// <summary>Totals over every tensor; <see cref="ExternalFiles"/> are the full paths of the external-data files read.</summary>
    internal sealed record TotalsReport(int Tensors, long Elements, long Bytes, long RawBytes, long TypedBytes, long ExternalBytes, IReadOnlyList<string> ExternalFiles);

    /// <summary>The ONNX spelling of an element type (FLOAT, FLOAT16, BFLOAT16, FLOAT8E4M3FN, UINT4...).</summary>
    internal static string DataTypeName(OnnxDataType type) => OnnxDataTypes.IsDefined(type) ? type.ToString().ToUpperInvariant() : $"UNKNOWN({(int)type})";

    private static string Shape(IEnumerable<long> dims) => $"[{string.Join(", ", dims)}]";

    private static string Shape(IReadOnlyList<string>? dims) => dims is null ? "(unknown rank)" : $"[{string.Join(", ", dims)}]";

    private static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.##} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.##} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.##} KiB",
        _ => $"{bytes} B",
    };

    private static IEnumerable<(string Label, string Value)> Header(ModelReport report) =>
    [
        ("model", report.File),
        ("producer", $"{report.ProducerName} {report.ProducerVersion}".Trim()),
        ("ir_version", report.IrVersion.ToString(CultureInfo.InvariantCulture)),
        ("opsets", string.Join(", ", report.Opsets.Select(o => $"{o.Domain} {o.Version}"))),
    ];

    private static string TotalLine(TotalsReport t) =>
        string.Create(CultureInfo.InvariantCulture, $"total: {t.Tensors} tensors, {t.Elements:N0} elements, {t.Bytes:N0} bytes ({Bytes(t.Bytes)}): raw {t.RawBytes:N0}, typed {t.TypedBytes:N0}, external {t.ExternalBytes:N0}");

    private static void WritePlain(ModelReport report, TextWriter output)
    {
        foreach (var (label, value) in Header(report))
        {
            output.WriteLine($"{label}: {value}");
        }

        foreach (var (label, values) in new[] { ("inputs", report.Inputs), ("outputs", report.Outputs) })
        {
            output.WriteLine($"{label}:");
            foreach (var value in values)
            {
                output.WriteLine($"  {value.Name}  {value.Type} {Shape(value.Shape)}");
            }
        }

        output.WriteLine(report.Metadata.Count == 0 ? "metadata: (none)" : "metadata:");
        foreach (var (key, value) in report.Metadata)
        {
            output.WriteLine($"  {key} = {value}");
        }

        output.WriteLine($"tensors ({report.Tensors.Count}):");
        var rows = report.Tensors.Select(t => new[] { t.Path, t.Dtype, Shape(t.Shape), t.Bytes.ToString(CultureInfo.InvariantCulture), t.Where }).ToList();
        string[] headings = ["path", "dtype", "shape", "bytes", "stored"];
        var widths = headings.Select((h, i) => rows.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
        foreach (var row in rows.Prepend(headings))
        {
            output.WriteLine("  " + string.Join("  ", row.Select((cell, i) => i == 3 ? cell.PadLeft(widths[i]) : cell.PadRight(widths[i]))).TrimEnd());
        }

        output.WriteLine(TotalLine(report.Totals));
    }

    private static void WriteTable(ModelReport report, TextWriter output)
    {
        var console = CommandSupport.Terminal(output);
        var header = new Grid().AddColumn().AddColumn();
        foreach (var (label, value) in Header(report))
        {
            header.AddRow(new Text(label, new Style(decoration: Decoration.Bold)), new Text(value));
        }

        foreach (var value in report.Inputs)
        {
            header.AddRow(new Text("input"), new Text($"{value.Name}  {value.Type} {Shape(value.Shape)}"));
        }

        foreach (var value in report.Outputs)
        {
            header.AddRow(new Text("output"), new Text($"{value.Name}  {value.Type} {Shape(value.Shape)}"));
        }

        foreach (var (key, value) in report.Metadata)
        {
            header.AddRow(new Text("metadata"), new Text($"{key} = {value}"));
        }

        console.Write(header);
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("path").AddColumn("dtype").AddColumn("shape").AddColumn(new TableColumn("bytes").RightAligned()).AddColumn("stored");
        foreach (var t in report.Tensors)
        {
            table.AddRow(new Text(t.Path), new Text(t.Dtype), new Text(Shape(t.Shape)), new Text(t.Bytes.ToString("N0", CultureInfo.InvariantCulture)), new Text(t.Where));
        }

        table.Caption(new TableTitle(TotalLine(report.Totals)));
        Tables.Write(console, table);
    }
}
