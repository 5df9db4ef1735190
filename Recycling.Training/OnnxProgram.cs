using System.Text.RegularExpressions;
using Recycling.Onnx;
using Recycling.Onnx.Proto;
using Recycling.Training.Ops;
using System.Runtime.InteropServices;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>Which initializers train: none matching <see cref="Freeze"/>, and only those matching <see cref="TrainOnly"/> when set.</summary>
public sealed record ParameterSelection
{
    public Regex? Freeze { get; init; }

    public Regex? TrainOnly { get; init; }

    internal bool Trains(string name) => (TrainOnly is null || TrainOnly.IsMatch(name)) && (Freeze is null || !Freeze.IsMatch(name));
}

/// <summary>A graph input: its name, element type and shape (-1 where the dimension is symbolic or unknown).</summary>
internal sealed record GraphInput(string Name, ScalarType Type, long[] Shape);

/// <summary>
/// An ONNX model's main graph as a differentiable TorchSharp program. Every float initializer that feeds
/// computation is one <see cref="Parameter"/> (however many nodes or Identity aliases read it; float16 and bfloat16
/// ones as float32 masters the graph reads cast back, <see cref="MixedPrecision"/>); BatchNorm running
/// statistics are buffers; integer and shape tensors stay constants. Nodes run in graph order, shapes are
/// computed eagerly from the actual tensors.
/// </summary>
internal sealed partial class OnnxProgram : IDisposable
{
    private readonly List<CompiledNode> _nodes;
    private readonly Dictionary<string, Tensor> _fixed;
    private readonly NodePlan _fused;
    private readonly HashSet<string> _fusedAway;
    private readonly Dictionary<string, Parameter> _parameters;
    private readonly Dictionary<string, Tensor> _buffers;
    private NodePlan? _compiled;

    private OnnxProgram(List<CompiledNode> nodes, Dictionary<string, Tensor> fixedValues, Dictionary<string, Parameter> parameters,
        Dictionary<string, Tensor> buffers, List<GraphInput> inputs, List<string> outputs, bool fuse, Device device)
    {
        Device = device;
        _nodes = nodes;
        _fixed = fixedValues;
        (_parameters, _buffers) = (parameters, buffers);
        Parameters = parameters;
        Buffers = buffers;
        Inputs = inputs;
        Outputs = outputs;
        var constants = fixedValues.Where(f => !parameters.ContainsKey(f.Key) && !buffers.ContainsKey(f.Key)).ToDictionary(StringComparer.Ordinal);
        HashSet<string> fusedAway = [];
        var fused = fuse ? Fuse(nodes, constants, outputs, out fusedAway) : nodes;
        _fusedAway = fusedAway;
        _fused = new NodePlan(fused, fixedValues, parameters, buffers);
    }

    /// <summary>Float initializers that feed computation, by initializer name, in model order.</summary>
    public IReadOnlyDictionary<string, Parameter> Parameters { get; }

    /// <summary>BatchNorm running statistics, by initializer name.</summary>
    public IReadOnlyDictionary<string, Tensor> Buffers { get; }

    public IReadOnlyList<GraphInput> Inputs { get; }

    /// <summary>Where every tensor of the program lives: parameters, buffers, constants, and what the ops create.</summary>
    public Device Device { get; }

    public IReadOnlyList<string> Outputs { get; }

    public IEnumerable<Parameter> Trainable => Parameters.Values.Where(p => p.requires_grad);

    /// <summary>
    /// The parameters whose model type differs from their master's (float16 and bfloat16 initializers, trained as float32
    /// masters, <see cref="MixedPrecision"/>), by name: the type the graph reads them in and the written model stores.
    /// </summary>
    public IReadOnlyDictionary<string, ScalarType> StoredTypes { get; private init; } = new Dictionary<string, ScalarType>();

    /// <summary>The element type the model stores <paramref name="name"/> in (a master's own type may be wider).</summary>
    public ScalarType StoredType(string name, Tensor value) => StoredTypes.TryGetValue(name, out var type) ? type : value.dtype;

    /// <summary>Every node that cannot run, one line each (op, domain, opset version, node); empty when the whole graph runs.</summary>
    public static IReadOnlyList<string> Check(OnnxModel model)
    {
        var problems = new List<string>();
        Compile(model, problems, loadConstant: null, CPU);
        return problems;
    }

    /// <summary>Builds the program; throws <see cref="RecyclingException"/> listing every unsupported node.</summary>
    /// <param name="fuse">false: run every node as written, no fusion (to compare against, in tests and benchmarks).</param>
    /// <param name="device">Where the program's tensors live (default: the CPU); feeds must be there too.</param>
    public static OnnxProgram Load(OnnxModel model, ParameterSelection? selection = null, bool fuse = true, Device? device = null)
    {
        selection ??= new ParameterSelection();
        device ??= CPU;
        var graph = model.Proto.Graph;
        var byProto = new Dictionary<TensorProto, OnnxTensor>(ReferenceEqualityComparer.Instance);
        foreach (var t in model.Tensors)
        {
            byProto[t.Proto] = t;
        }

        Tensor LoadConstant(TensorProto proto) =>
            byProto.TryGetValue(proto, out var t) ? TensorConversion.ToTorch(t, device) : throw new UnsupportedTensorException($"tensor '{proto.Name}' not found in the model");

        var problems = new List<string>();
        var nodes = Compile(model, problems, LoadConstant, device);
        if (graph.SparseInitializer.Count > 0)
        {
            problems.Add($"{graph.SparseInitializer.Count} sparse initializer(s): not supported");
        }

        if (problems.Count > 0)
        {
            throw new RecyclingException($"{model.Path}: {problems.Count} node(s) cannot run: {string.Join("; ", problems)}");
        }

        var roles = InitializerRoles(graph, nodes);
        var fixedValues = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var parameters = new Dictionary<string, Parameter>(StringComparer.Ordinal);
        var buffers = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var storedTypes = new Dictionary<string, ScalarType>(StringComparer.Ordinal);
        foreach (var proto in graph.Initializer)
        {
            var tensor = TensorConversion.ToTorch(byProto[proto], device);
            roles.TryGetValue(proto.Name, out var role);
            if (role == InputRole.RunningStatistic && tensor.is_floating_point())
            {
                // Kept in the stored type and updated in place there, as PyTorch updates a model.half()'s buffers.
                buffers[proto.Name] = tensor;
                fixedValues[proto.Name] = tensor;
            }
            else if (role == InputRole.Data && tensor.is_floating_point() && roles.ContainsKey(proto.Name))
            {
                var stored = tensor.dtype;
                var parameter = new Parameter(MixedPrecision.Master(tensor), selection.Trains(proto.Name));
                if (parameter.dtype != stored)
                {
                    storedTypes[proto.Name] = stored;
                }

                parameters[proto.Name] = parameter;
                fixedValues[proto.Name] = parameter;
            }
            else
            {
                fixedValues[proto.Name] = tensor;
            }
        }

        // An exporter deduplicates equal initializers: in a freshly initialised model a BatchNorm's running mean (zeros)
        // and variance (ones) are often the same tensor as some bias or scale, which trains. The running statistic then
        // reads its own copy (updated in --batchnorm train, not written back: the file has one tensor for both).
        nodes = SplitRunningStatistics(nodes, parameters, fixedValues, storedTypes);

        // Identity nodes that alias an initializer pass the same tensor on: the tied parameter stays one.
        var inputs = graph.Input.Where(i => !fixedValues.ContainsKey(i.Name)).Select(ToInput).ToList();
        return new OnnxProgram(nodes, fixedValues, parameters, buffers, inputs, [.. graph.Output.Select(o => o.Name)], fuse, device) { StoredTypes = storedTypes };
    }

    /// <summary>
    /// Runs the graph; returns the values named in <paramref name="wanted"/> (default: the graph outputs).
    /// <paramref name="initializers"/> replaces initializer values for this call only: tensors computed from other
    /// tensors (a learned soup's Σ softmax(α)ᵢ θᵢ), so gradients flow to whatever they were computed from.
    /// </summary>
    public Dictionary<string, Tensor> Forward(IReadOnlyDictionary<string, Tensor> feeds, OpContext context, IReadOnlyCollection<string>? wanted = null,
        IReadOnlyDictionary<string, Tensor>? initializers = null)
    {
        var values = new Dictionary<string, Tensor>(_fixed, StringComparer.Ordinal);
        foreach (var (name, type) in StoredTypes)
        {
            // The graph reads the master cast to the type the model stores: autograd flows back through the cast.
            values[name] = _parameters[name].to(type);
        }

        var replaced = initializers is { Count: > 0 };
        foreach (var (name, value) in initializers ?? new Dictionary<string, Tensor>())
        {
            var stored = _fixed.TryGetValue(name, out var own) ? StoredType(name, own) : throw new RecyclingException($"the graph has no initializer '{name}' to replace");
            values[name] = value.dtype == stored ? value : value.to(stored);
        }

        foreach (var input in Inputs)
        {
            values[input.Name] = feeds.TryGetValue(input.Name, out var feed) ? feed : throw new RecyclingException($"no value given for graph input '{input.Name}'");
        }

        // A value inside a fused pattern, or a replaced constant that a fusion read when it matched: the nodes as compiled.
        var plan = (wanted is not null && wanted.Any(_fusedAway.Contains)) || (initializers is not null && initializers.Keys.Any(k => !_parameters.ContainsKey(k)))
            ? Compiled : _fused;
        var needed = plan.Needed(wanted ?? Outputs);
        RunMainGraph(plan, needed, values, context, cache: !replaced);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var name in wanted ?? Outputs)
        {
            var value = values.TryGetValue(name, out var v) ? v : throw new RecyclingException($"the graph has no value '{name}'");

            // A cached value goes out as a new handle on the same storage: the caller may dispose what it gets.
            result[name] = !replaced && plan.StaticOutputs.Contains(name) ? value.alias() : value;
        }

        return result;
    }

    /// <summary>Runs <paramref name="nodes"/> in order, reading and adding to <paramref name="values"/>.</summary>
    private static void RunNodes(IEnumerable<CompiledNode> nodes, Dictionary<string, Tensor> values, OpContext context)
    {
        foreach (var node in nodes)
        {
            Store(node, RunNode(node, values, context), values);
        }
    }

    private static Tensor[] RunNode(CompiledNode node, Dictionary<string, Tensor> values, OpContext context)
    {
        var args = new Tensor?[node.Inputs.Count];
        for (var k = 0; k < args.Length; k++)
        {
            args[k] = node.Inputs[k].Length == 0 ? null : Input(node, values, k);
        }

        try
        {
            return node.Run(context, args);
        }
        catch (Exception e) when (e is ExternalException or ArgumentException or InvalidOperationException or IndexOutOfRangeException or UnsupportedOpException)
        {
            throw new RecyclingException($"node {node.Label} failed on inputs [{string.Join("; ", args.Select(a => a is null ? "-" : $"{a.dtype}[{string.Join(",", a.shape)}]"))}]: {FirstLine(e.Message)}", e);
        }
    }

    private static void Store(CompiledNode node, Tensor[] results, Dictionary<string, Tensor> values)
    {
        for (var k = 0; k < node.Proto.Output.Count && k < results.Length; k++)
        {
            if (node.Proto.Output[k].Length > 0)
            {
                values[node.Proto.Output[k]] = results[k];
            }
        }
    }

    public void Dispose()
    {
        DisposeStaticResults();
        foreach (var value in _fixed.Values)
        {
            value.Dispose();
        }

        foreach (var node in _nodes)
        {
            node.Dispose();
        }
    }

    private static string FirstLine(string message) => message.Split('\n')[0].Trim();

    private static List<CompiledNode> Compile(OnnxModel model, List<string> problems, Func<TensorProto, Tensor>? loadConstant, Device device)
    {
        var opsets = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var (domain, version) in model.Opsets)
        {
            opsets[OpRegistry.NormalizeDomain(domain)] = version;
        }

        return CompileNodes(model.Proto.Graph.Node, opsets, problems, loadConstant, "", device);
    }

    /// <summary>Compiles nodes of the main graph or of a branch (<paramref name="scope"/> names it in labels).</summary>
    private static List<CompiledNode> CompileNodes(IEnumerable<NodeProto> graphNodes, Dictionary<string, long> opsets, List<string> problems,
        Func<TensorProto, Tensor>? loadConstant, string scope, Device device)
    {
        var nodes = new List<CompiledNode>();
        var index = -1;
        foreach (var node in graphNodes)
        {
            index++;
            var domain = OpRegistry.NormalizeDomain(node.Domain);
            var label = $"'{(node.Name.Length > 0 ? node.Name : node.OpType)}' (#{index}{scope})";
            var domainName = domain.Length == 0 ? "ai.onnx" : domain;
            if (!opsets.TryGetValue(domain, out var version))
            {
                problems.Add($"{node.OpType} (domain {domainName}) at node {label}: the model imports no opset for its domain");
                continue;
            }

            if (domain.Length == 0 && node.OpType == "If")
            {
                if (CompileIf(node, label, version, opsets, problems, loadConstant, device) is { } compiledIf)
                {
                    nodes.Add(compiledIf);
                }

                continue;
            }

            var spec = OpRegistry.Resolve(domain, node.OpType, version);
            if (spec is null)
            {
                problems.Add($"{node.OpType} (domain {domainName}, opset {version}) at node {label}: not supported");
                continue;
            }

            try
            {
                var tensors = new List<Tensor>();
                var attributes = new NodeAttributes(node, proto =>
                {
                    var t = (loadConstant ?? (_ => torch.zeros(1, device: device)))(proto);
                    tensors.Add(t);
                    return t;
                }, device);
                nodes.Add(new CompiledNode(node, label, spec, spec.Create(attributes), tensors) { Inputs = node.Input });
            }
            catch (Exception e) when (e is UnsupportedOpException or UnsupportedTensorException)
            {
                problems.Add($"{node.OpType} (domain {domainName}, opset {version}) at node {label}: {e.Message} not supported");
            }
        }

        return nodes;
    }

    private static List<CompiledNode> SplitRunningStatistics(List<CompiledNode> nodes, Dictionary<string, Parameter> parameters, Dictionary<string, Tensor> fixedValues,
        Dictionary<string, ScalarType> storedTypes)
    {
        var aliases = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var node in nodes.Where(n => n.Proto.OpType == "Identity" && n.Proto.Input.Count == 1))
        {
            var source = node.Proto.Input[0];
            var root = aliases.TryGetValue(source, out var r) ? r : source;
            if (parameters.ContainsKey(root))
            {
                aliases[node.Proto.Output[0]] = root;
            }
        }

        return [.. nodes.Select(node =>
        {
            var inputs = node.Inputs.ToArray();
            for (var slot = 0; slot < inputs.Length; slot++)
            {
                var root = aliases.TryGetValue(inputs[slot], out var r) ? r : inputs[slot];
                if (node.Spec.Role(slot) == InputRole.RunningStatistic && parameters.TryGetValue(root, out var parameter))
                {
                    var copy = $"{root}\u0000running statistic of {node.Label} slot {slot}";
                    fixedValues[copy] = parameter.detach().to(storedTypes.GetValueOrDefault(root, parameter.dtype), copy: true);
                    inputs[slot] = copy;
                }
            }

            return node with { Inputs = inputs };
        })];
    }

    /// <summary>What each initializer is to the nodes that read it, through Identity aliases; Data wins over the others.</summary>
    private static Dictionary<string, InputRole> InitializerRoles(GraphProto graph, List<CompiledNode> nodes)
    {
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var aliases = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var node in nodes.Where(n => n.Proto.OpType == "Identity" && n.Proto.Input.Count == 1))
        {
            var source = node.Proto.Input[0];
            var resolved = aliases.TryGetValue(source, out var root) ? root : initializers.Contains(source) ? source : null;
            if (resolved is not null)
            {
                aliases[node.Proto.Output[0]] = resolved;
            }
        }

        var roles = new Dictionary<string, InputRole>(StringComparer.Ordinal);
        foreach (var node in nodes.Where(n => !(n.Proto.OpType == "Identity" && n.Proto.Input.Count == 1 && aliases.ContainsKey(n.Proto.Output[0]))))
        {
            for (var slot = 0; slot < node.Inputs.Count; slot++)
            {
                var name = node.Inputs[slot];
                var initializer = aliases.TryGetValue(name, out var root) ? root : initializers.Contains(name) ? name : null;
                if (initializer is null)
                {
                    continue;
                }

                var role = node.Spec.Role(slot);
                roles[initializer] = roles.TryGetValue(initializer, out var previous) ? (InputRole)Math.Min((int)previous, (int)role) : role;
            }
        }

        return roles;
    }

    private static GraphInput ToInput(ValueInfoProto info)
    {
        var tensorType = info.Type?.TensorType;
        var shape = tensorType?.Shape?.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : -1).ToArray() ?? [];
        var type = tensorType is null ? ScalarType.Float32 : OpHelpers.ToTorch(tensorType.ElemType);
        return new GraphInput(info.Name, type, shape);
    }

}
