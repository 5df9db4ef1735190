using System.Globalization;
using Recycling.Onnx.Merging.Methods;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Recycling.Onnx.Merging;

/// <summary>
/// A mergekit merge config (<c>mergekit-yaml config.yml</c>) read for an ONNX merge: <c>merge_method</c>,
/// <c>base_model</c>, <c>models:</c> (each <c>model:</c> with optional <c>parameters:</c>), global <c>parameters:</c>,
/// <c>dtype</c>/<c>out_dtype</c>. Parameter values are scalars or mergekit's conditional lists
/// (<c>- filter: self_attn</c> / <c>value: 0.5</c>, the first whose filter is a substring of the tensor name wins;
/// none matching falls through to the next level: model, then global, then the method's default).
/// Model paths are ONNX files relative to the config file. <c>tokenizer</c>, <c>tokenizer_source</c> and
/// <c>chat_template</c> are ignored with a note; <c>slices</c>, <c>modules</c> and gradient lists (values over layer
/// positions) are refused. Every error names the file, the line and the key.
/// As in mergekit, a <c>base_model</c> listed among <c>models</c> is the base, not an input, for methods that use a
/// base; for methods that do not (linear, karcher's points aside), a given base model is merged as one more input.
/// </summary>
internal sealed class MergeConfig
{
    /// <summary>Configs are small; a larger file is refused rather than parsed.</summary>
    public const int MaxBytes = 1 << 20;

    /// <summary>Deepest nesting of flow collections ([ ], { }) read; a config needs 3.</summary>
    public const int MaxFlowDepth = 64;

    /// <summary>The per-model parameter naming a model's Fisher file (a path, not a number).</summary>
    private const string FisherKey = "fisher";

    private static readonly HashSet<string> Ignored = ["tokenizer", "tokenizer_source", "chat_template"];

    private readonly Dictionary<string, Setting> _global;
    private readonly Dictionary<string, Setting>[] _perModel;

    private MergeConfig(string path, MergeMethodDefinition method, string? baseModel, IReadOnlyList<string> models,
        Dictionary<string, Setting> global, Dictionary<string, Setting>[] perModel, string? outputType, IReadOnlyList<string> notes, IReadOnlyList<string>? fisherFiles)
    {
        FisherFiles = fisherFiles;
        Path = path;
        Method = method;
        BaseModel = baseModel;
        Models = models;
        _global = global;
        _perModel = perModel;
        OutputType = outputType;
        Notes = notes;
    }

    /// <summary>The config file (as given).</summary>
    public string Path { get; }

    public MergeMethodDefinition Method { get; }

    /// <summary>Full path of the base model, or null.</summary>
    public string? BaseModel { get; }

    /// <summary>Full paths of the models merged (the base excluded when the method uses it as the base).</summary>
    public IReadOnlyList<string> Models { get; }

    /// <summary>The merged tensors' element type as the CLI's --dtype names it (fp32, fp16, bf16), or null to keep the inputs'.</summary>
    public string? OutputType { get; }

    /// <summary>Full paths of the models' Fisher files in <see cref="Models"/>' order (per model <c>parameters: {fisher: FILE}</c>), for methods that need them; else null.</summary>
    public IReadOnlyList<string>? FisherFiles { get; }

    /// <summary>What was accepted but has no effect here (tokenizer settings, compute dtype), one line each.</summary>
    public IReadOnlyList<string> Notes { get; }

    /// <summary>Whether some parameter depends on the tensor name (a conditional with a filter).</summary>
    public bool HasFilters => _global.Values.Concat(_perModel.SelectMany(m => m.Values)).Any(s => s.HasFilter);

    /// <summary>Reads and parses <paramref name="path"/>.</summary>
    public static MergeConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string text;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: merge config not found");
            }

            if (info.Length > MaxBytes)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: {info.Length} bytes is too large for a merge config (at most {MaxBytes})");
            }

            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: cannot read the merge config: {e.Message}");
        }

        return Parse(text, path);
    }

    /// <summary>Parses config <paramref name="text"/>; <paramref name="path"/> names it in errors and anchors relative model paths.</summary>
    public static MergeConfig Parse(string text, string path)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(path);
        var reader = new Reader(path);
        var root = reader.Root(text);
        return reader.Read(root);
    }

    /// <summary>
    /// The merge config that is the mapping <paramref name="node"/> inside another YAML file (a recipe's <c>merge:</c>):
    /// the same schema and checks; errors name <paramref name="path"/> and the node's lines there, and model paths
    /// are relative to that file.
    /// </summary>
    public static MergeConfig FromNode(YamlMappingNode node, string path)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(path);
        return new Reader(path).Read(node);
    }

    /// <summary>Refuses flow collections nested deeper than <see cref="MaxFlowDepth"/> in YAML <paramref name="text"/> (before YamlDotNet parses it recursively).</summary>
    public static void CheckNesting(string text, string path) => new Reader(path).CheckFlowDepth(text);

    /// <summary>
    /// The merge this config describes, written to <paramref name="output"/>: the method by name, the unconditional
    /// parameter values as <see cref="MergeOptions.Parameters"/>/<see cref="MergeOptions.ModelParameters"/>, and with
    /// filters <see cref="MergeOptions.TensorArguments"/> resolving them for each tensor.
    /// </summary>
    public MergeRequest Request(string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        return new MergeRequest
        {
            Inputs = Models,
            Base = BaseModel,
            Output = output,
            FisherFiles = FisherFiles,
            OutputType = OutputType is null ? null : ElementTypes.FromName(OutputType)?.Type,
            Options = new MergeOptions
            {
                MethodName = Method.Name,
                Parameters = Evaluate(_global, ""),
                ModelParameters = [.. _perModel.Select(m => (IReadOnlyDictionary<string, double>?)Evaluate(m, ""))],
                TensorArguments = HasFilters ? Arguments : null,
            },
        };
    }

    /// <summary>The method's arguments for tensor <paramref name="tensorName"/> (conditionals evaluated for it).</summary>
    public MethodArguments Arguments(string tensorName = "")
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        return new MethodArguments(Method, Models.Count, Evaluate(_global, tensorName),
            [.. _perModel.Select(m => (IReadOnlyDictionary<string, double>?)Evaluate(m, tensorName))]);
    }

    private static Dictionary<string, double> Evaluate(Dictionary<string, Setting> settings, string tensorName)
    {
        var values = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var (name, setting) in settings)
        {
            if (setting.For(tensorName) is { } value)
            {
                values[name] = value;
            }
        }

        return values;
    }

    /// <summary>One parameter's setting: a value, or conditionals (filter null: any tensor).</summary>
    private sealed record Setting(IReadOnlyList<(string? Filter, double Value)> Conditions)
    {
        public bool HasFilter => Conditions.Any(c => c.Filter is not null);

        public double? For(string tensorName)
        {
            foreach (var (filter, value) in Conditions)
            {
                if (filter is null || filter == "*" || (tensorName.Length > 0 && tensorName.Contains(filter, StringComparison.Ordinal)))
                {
                    return value;
                }
            }

            return null;
        }
    }

    private sealed class Reader(string path)
    {
        private readonly string _directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path)) ?? ".";
        private readonly List<string> _notes = [];

        public YamlMappingNode Root(string text)
        {
            if (text.Length > MaxBytes)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: {text.Length} characters is too large for a merge config (at most {MaxBytes})");
            }

            CheckFlowDepth(text);
            var stream = new YamlStream();
            try
            {
                stream.Load(new StringReader(text));
            }
            catch (YamlException e)
            {
                throw new RecyclingException($"{Where(e.Start)}: not valid YAML: {OneLine(e.InnerException?.Message ?? e.Message)}");
            }

            if (stream.Documents.Count == 0)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: the merge config is empty (merge_method:, models:, ...)");
            }

            if (stream.Documents.Count != 1)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: a merge config is one YAML document, not {stream.Documents.Count}");
            }

            return stream.Documents[0].RootNode as YamlMappingNode
                ?? throw new RecyclingException($"{Where(stream.Documents[0].RootNode)}: a merge config is a mapping (merge_method:, models:, ...)");
        }

        public MergeConfig Read(YamlMappingNode root)
        {
            YamlNode? methodNode = null, baseNode = null, modelsNode = null, parametersNode = null;
            string? dtype = null, outDtype = null;
            foreach (var (keyNode, value) in root.Children)
            {
                string key = Scalar(keyNode, "key");
                switch (key)
                {
                    case "merge_method": methodNode = value; break;
                    case "base_model": baseNode = value; break;
                    case "models": modelsNode = value; break;
                    case "parameters": parametersNode = value; break;
                    case "dtype": dtype = OutputType(value, key); break;
                    case "out_dtype": outDtype = OutputType(value, key); break;
                    case "slices" or "modules":
                        throw new RecyclingException($"{Where(keyNode)}: {key}: layer slices and modules assemble a new stack of layers (a different graph), which an ONNX merge of same-shaped models cannot do; list whole models under models:");
                    case var k when Ignored.Contains(k):
                        _notes.Add($"{Where(keyNode)}: {key} ignored: ONNX models carry no tokenizer or chat template");
                        break;
                    default:
                        throw new RecyclingException($"{Where(keyNode)}: unknown key {MessageText.Path(key)}; a merge config has merge_method, base_model, models, parameters, dtype, out_dtype (tokenizer, tokenizer_source, chat_template are ignored)");
                }
            }

            if (methodNode is null)
            {
                throw new RecyclingException($"{Where(root)}: merge_method is missing");
            }

            string methodName = Scalar(methodNode, "merge_method");
            MergeMethodDefinition method;
            try
            {
                method = MergeMethods.Find(methodName);
            }
            catch (RecyclingException e)
            {
                throw new RecyclingException($"{Where(methodNode)}: merge_method: {e.Message}");
            }

            if (modelsNode is not YamlSequenceNode list || list.Children.Count == 0)
            {
                throw new RecyclingException($"{Where(modelsNode ?? root)}: models: a list of models (- model: FILE.onnx) is required");
            }

            string? baseModel = baseNode is null ? null : ModelPath(baseNode, "base_model");
            var models = new List<string>();
            var perModel = new List<Dictionary<string, Setting>>();
            var fishers = new List<string?>();
            var entries = new List<(YamlNode Node, string Where)>();
            for (int i = 0; i < list.Children.Count; i++)
            {
                var entry = list.Children[i];
                string where = $"models[{i}]";
                YamlNode? modelNode = entry is YamlScalarNode ? entry : null;
                YamlNode? entryParameters = null;
                if (entry is YamlMappingNode mapping)
                {
                    foreach (var (keyNode, value) in mapping.Children)
                    {
                        string key = Scalar(keyNode, $"{where} key");
                        switch (key)
                        {
                            case "model": modelNode = value; break;
                            case "parameters": entryParameters = value; break;
                            default:
                                throw new RecyclingException($"{Where(keyNode)}: {where}: unknown key {MessageText.Path(key)}; a model entry has model and parameters");
                        }
                    }
                }

                if (modelNode is null)
                {
                    throw new RecyclingException($"{Where(entry)}: {where}: model is missing (- model: FILE.onnx)");
                }

                string model = ModelPath(modelNode, $"{where}.model");
                if (baseModel is not null && method.Base != BaseUse.None && SamePath(model, baseModel))
                {
                    continue; // mergekit: the base listed among the models is the base
                }

                models.Add(model);
                perModel.Add(Settings(entryParameters, method, $"{where}.parameters", perModel: true));
                fishers.Add(FisherFile(entryParameters, method, $"{where}.parameters"));
                entries.Add((entry, where));
            }

            if (baseModel is not null && method.Base == BaseUse.None && !models.Any(m => SamePath(m, baseModel)))
            {
                // mergekit adds the base model to the inputs of every method; one that ignores bases merges it.
                models.Insert(0, baseModel);
                perModel.Insert(0, new Dictionary<string, Setting>(StringComparer.Ordinal));
                fishers.Insert(0, null);
                entries.Insert(0, (baseNode!, "base_model"));
                _notes.Add($"{Where(baseNode!)}: base_model: {method.Name} uses no base; merged as one more model, as mergekit does");
            }

            if (method.Base == BaseUse.None)
            {
                baseModel = null;
            }
            else if (method.Base == BaseUse.Required && baseModel is null)
            {
                throw new RecyclingException($"{Where(methodNode)}: merge_method: {method.Name} needs base_model");
            }

            var global = Settings(parametersNode, method, "parameters", perModel: false);
            if (dtype is not null && outDtype is null)
            {
                _notes.Add($"{MessageText.Path(path)}: dtype {dtype} sets the merged tensors' type; the merge itself computes in fp32/fp64");
            }

            if (method.NeedsFisher && fishers.IndexOf(null) is var missing and >= 0)
            {
                var (node, where) = entries[missing];
                throw new RecyclingException(where == "base_model"
                    ? $"{Where(node)}: base_model: {method.Name} merges it as one more model, which needs a Fisher file: list it under models: with parameters: {{fisher: FILE.npz}}"
                    : $"{Where(node)}: {where}.parameters.fisher: {method.Name} needs a Fisher file for every model (parameters: {{fisher: FILE.npz}}, .npz or .onnx)");
            }

            var config = new MergeConfig(path, method, baseModel, models, global, [.. perModel], outDtype ?? dtype, _notes, method.NeedsFisher ? [.. fishers.OfType<string>()] : null);
            try
            {
                method.Validate(config.Arguments(), baseModel is not null);
            }
            catch (RecyclingException e)
            {
                throw new RecyclingException($"{Where(methodNode)}: {e.Message}");
            }

            return config;
        }

        private Dictionary<string, Setting> Settings(YamlNode? node, MergeMethodDefinition method, string where, bool perModel)
        {
            var settings = new Dictionary<string, Setting>(StringComparer.Ordinal);
            if (node is null || (node is YamlScalarNode empty && IsNull(empty)))
            {
                return settings;
            }

            if (node is not YamlMappingNode mapping)
            {
                throw new RecyclingException($"{Where(node)}: {where}: a mapping of parameter names to values");
            }

            foreach (var (keyNode, value) in mapping.Children)
            {
                string name = Scalar(keyNode, $"{where} key");
                if (name == FisherKey)
                {
                    if (!perModel)
                    {
                        throw new RecyclingException($"{Where(keyNode)}: {where}.{name}: Fisher files are per model: set fisher: FILE under each model's parameters:");
                    }

                    continue; // read by FisherFile
                }

                var parameter = method.Parameters.FirstOrDefault(p => p.Name == name)
                    ?? throw new RecyclingException($"{Where(keyNode)}: {where}.{name}: {method.Name} has no parameter {MessageText.Path(name)}" +
                        (method.Parameters.Count == 0 ? "; it takes none" : $"; its parameters: {string.Join(", ", method.Parameters.Select(p => p.Name))}"));
                if (perModel && !parameter.PerModel)
                {
                    throw new RecyclingException($"{Where(keyNode)}: {where}.{name}: {name} is one value for the whole merge; set it under the top-level parameters:");
                }

                settings[name] = new Setting(Conditions(value, parameter, $"{where}.{name}"));
            }

            return settings;
        }

        /// <summary>The model entry's <c>fisher: FILE</c> (.npz arrays or .onnx initializers, relative to the config), or null.</summary>
        private string? FisherFile(YamlNode? parameters, MergeMethodDefinition method, string where)
        {
            if (parameters is not YamlMappingNode mapping)
            {
                return null;
            }

            foreach (var (keyNode, value) in mapping.Children)
            {
                if (keyNode is YamlScalarNode { Value: FisherKey })
                {
                    if (!method.NeedsFisher)
                    {
                        throw new RecyclingException($"{Where(keyNode)}: {where}.{FisherKey}: {method.Name} uses no Fisher information; only merge_method: fisher reads Fisher files");
                    }

                    if (value is not YamlScalarNode)
                    {
                        throw new RecyclingException($"{Where(value)}: {where}.{FisherKey}: one file per model (filters do not apply to Fisher files)");
                    }

                    return InputPath(value, $"{where}.{FisherKey}", "Fisher file");
                }
            }

            return null;
        }

        private List<(string?, double)> Conditions(YamlNode node, MethodParameter parameter, string where)
        {
            if (node is YamlScalarNode scalar)
            {
                return [(null, Value(scalar, parameter, where))];
            }

            if (node is not YamlSequenceNode sequence || sequence.Children.Count == 0)
            {
                throw new RecyclingException($"{Where(node)}: {where}: a value, or a list of '- filter: NAME' / 'value: V' conditions");
            }

            var conditions = new List<(string?, double)>();
            foreach (var item in sequence.Children)
            {
                if (item is YamlScalarNode)
                {
                    throw new RecyclingException($"{Where(item)}: {where}: a list of plain values is a gradient over layer positions, which ONNX tensors do not have; give one value or '- filter: NAME' / 'value: V' conditions");
                }

                if (item is not YamlMappingNode condition)
                {
                    throw new RecyclingException($"{Where(item)}: {where}: each condition is a mapping with filter and value");
                }

                string? filter = null;
                YamlScalarNode? value = null;
                foreach (var (keyNode, v) in condition.Children)
                {
                    string key = Scalar(keyNode, $"{where} key");
                    switch (key)
                    {
                        case "filter": filter = Scalar(v, $"{where}.filter"); break;
                        case "value":
                            value = v as YamlScalarNode ?? throw new RecyclingException($"{Where(v)}: {where}.value: one value (gradients over layer positions are not supported)");
                            break;
                        default:
                            throw new RecyclingException($"{Where(keyNode)}: {where}: unknown key {MessageText.Path(key)} in a condition (filter, value)");
                    }
                }

                if (value is null)
                {
                    throw new RecyclingException($"{Where(condition)}: {where}: a condition needs a value");
                }

                conditions.Add((filter, Value(value, parameter, where)));
            }

            return conditions;
        }

        private double Value(YamlScalarNode scalar, MethodParameter parameter, string where)
        {
            if (IsNull(scalar))
            {
                throw new RecyclingException($"{Where(scalar)}: {where}: a value is missing");
            }

            try
            {
                return parameter.Parse(scalar.Value!, where);
            }
            catch (RecyclingException e)
            {
                throw new RecyclingException($"{Where(scalar)}: {e.Message}");
            }
        }

        /// <summary>
        /// Refuses [ and { nested deeper than <see cref="MaxFlowDepth"/> (outside quotes and comments): YamlDotNet
        /// parses them recursively, and a hostile file of brackets would overflow the stack.
        /// </summary>
        public void CheckFlowDepth(string text)
        {
            int depth = 0, line = 1;
            char quote = '\0';
            bool comment = false;
            for (int i = 0; i < text.Length; i++)
            {
                char c = text[i];
                if (c == '\n')
                {
                    line++;
                    comment = false;
                    continue;
                }

                if (comment)
                {
                    continue;
                }

                if (quote != '\0')
                {
                    quote = c == quote ? '\0' : quote;
                    continue;
                }

                bool afterSpace = i == 0 || char.IsWhiteSpace(text[i - 1]);
                if (c is '\'' or '"' && (afterSpace || text[i - 1] is '[' or '{' or ',' or ':' or '-'))
                {
                    quote = c;
                }
                else if (c == '#' && afterSpace)
                {
                    comment = true;
                }
                else if (c is '[' or '{' && ++depth > MaxFlowDepth)
                {
                    throw new RecyclingException(string.Create(CultureInfo.InvariantCulture, $"{MessageText.Path(path)}:{line}: brackets nested deeper than {MaxFlowDepth} levels"));
                }
                else if (c is ']' or '}')
                {
                    depth = Math.Max(0, depth - 1);
                }
            }
        }

        private string ModelPath(YamlNode node, string where) => InputPath(node, where, "model");

        private string InputPath(YamlNode node, string where, string what)
        {
            string reference = Scalar(node, where);
            if (reference.Length == 0)
            {
                throw new RecyclingException($"{Where(node)}: {where}: a {what} path is empty");
            }

            string full;
            try
            {
                full = System.IO.Path.GetFullPath(System.IO.Path.Combine(_directory, reference));
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
            {
                throw new RecyclingException($"{Where(node)}: {where}: {MessageText.Path(reference)} is not a valid path");
            }

            if (!File.Exists(full) && what != "model")
            {
                throw new RecyclingException($"{Where(node)}: {where}: {MessageText.Path(reference)} not found (paths are relative to the config file){(Directory.Exists(full) ? " (it is a folder)" : "")}");
            }

            if (!File.Exists(full))
            {
                string hint = reference.Contains('+', StringComparison.Ordinal) ? " (model+adapter references are mergekit's LoRA syntax: merge the adapter and export to ONNX first)"
                    : Directory.Exists(full) ? " (it is a folder: give the .onnx file; mergekit's Hugging Face folders must be exported to ONNX first)"
                    : "";
                throw new RecyclingException($"{Where(node)}: {where}: {MessageText.Path(reference)} not found (paths are relative to the config file){hint}");
            }

            return full;
        }

        private string OutputType(YamlNode node, string key)
        {
            string text = Scalar(node, key);
            return ElementTypes.FromName(text) is { IsMergeable: true } row
                ? row.Name
                : throw new RecyclingException($"{Where(node)}: {key}: {MessageText.Path(text)} is not a float type here ({ElementTypes.MergeableNames(r => r.Names![1], ", ")})");
        }

        private string Scalar(YamlNode node, string where) =>
            node is YamlScalarNode { Value: { } value } && !IsNull((YamlScalarNode)node)
                ? value
                : throw new RecyclingException($"{Where(node)}: {where}: a single value is expected here");

        private static bool IsNull(YamlScalarNode scalar) =>
            scalar.Style == YamlDotNet.Core.ScalarStyle.Plain && scalar.Value is null or "" or "~" or "null" or "Null" or "NULL";

        private static bool SamePath(string a, string b) =>
            string.Equals(a, b, OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);

        private string Where(YamlNode node) => Where(node.Start);

        private string Where(Mark mark) => string.Create(CultureInfo.InvariantCulture, $"{MessageText.Path(path)}:{mark.Line}");

        private static string OneLine(string message) => message.ReplaceLineEndings(" ");
    }
}
