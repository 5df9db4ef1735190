using Recycling.Onnx.Proto;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>
/// If: both branches compile with the main graph's opsets; at run time the condition's value picks one (shapes and
/// values are eager, so the exporters' shape checks and any data-dependent condition both work) and its nodes run
/// on the outer values they capture, which the If node reads as extra inputs: a captured weight trains like any
/// other. Initializers inside a branch are constants.
/// </summary>
internal sealed partial class OnnxProgram
{
    private static CompiledNode? CompileIf(NodeProto node, string label, long version, Dictionary<string, long> opsets, List<string> problems,
        Func<TensorProto, Tensor>? loadConstant, Device device)
    {
        var where = $"If (domain ai.onnx, opset {version}) at node {label}";
        var thenGraph = node.Attribute.FirstOrDefault(a => a.Name == "then_branch")?.G;
        var elseGraph = node.Attribute.FirstOrDefault(a => a.Name == "else_branch")?.G;
        if (thenGraph is null || elseGraph is null || node.Input.Count != 1)
        {
            problems.Add($"{where}: needs one condition input, then_branch and else_branch");
            return null;
        }

        var before = problems.Count;
        var branches = new[] { (thenGraph, "then"), (elseGraph, "else") }
            .Select(b => Branch.Compile(b.Item1, $" in the {b.Item2} branch of {label}", opsets, problems, loadConstant, device)).ToArray();
        if (problems.Count > before)
        {
            return null;
        }

        if (branches.Any(b => b.Outputs.Count != node.Output.Count))
        {
            problems.Add($"{where}: a branch has {branches.First(b => b.Outputs.Count != node.Output.Count).Outputs.Count} outputs, the node {node.Output.Count}");
            return null;
        }

        var captures = branches.SelectMany(b => b.Captures).Distinct(StringComparer.Ordinal).ToList();
        OpRun run = (context, args) =>
        {
            var branch = OpHelpers.Scalar(args[0]!) != 0 ? branches[0] : branches[1];
            var values = new Dictionary<string, Tensor>(branch.Constants, StringComparer.Ordinal);
            for (var k = 0; k < captures.Count; k++)
            {
                values[captures[k]] = args[k + 1]!;
            }

            RunNodes(branch.Nodes, values, context);
            return [.. branch.Outputs.Select(o => values[o])];
        };
        var spec = new OpSpec("", "If", 1, _ => run, slot => slot == 0 ? InputRole.Constant : InputRole.Data);
        var owned = branches.SelectMany(b => b.Constants.Values).ToList();
        return new CompiledNode(node, label, spec, run, owned) { Inputs = [node.Input[0], .. captures] };
    }

    /// <summary>One branch: its nodes, its initializers, the outer values it reads, its output names.</summary>
    private sealed record Branch(List<CompiledNode> Nodes, Dictionary<string, Tensor> Constants, List<string> Captures, List<string> Outputs)
    {
        public static Branch Compile(GraphProto graph, string scope, Dictionary<string, long> opsets, List<string> problems, Func<TensorProto, Tensor>? loadConstant,
            Device device)
        {
            var nodes = CompileNodes(graph.Node, opsets, problems, loadConstant, scope, device);
            var constants = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var initializer in graph.Initializer)
            {
                try
                {
                    constants[initializer.Name] = loadConstant is null ? zeros(1, device: device) : loadConstant(initializer);
                }
                catch (UnsupportedTensorException e)
                {
                    problems.Add($"initializer '{initializer.Name}'{scope}: {e.Message}");
                }
            }

            var known = new HashSet<string>(constants.Keys, StringComparer.Ordinal);
            var captures = new List<string>();
            foreach (var node in nodes)
            {
                captures.AddRange(node.Inputs.Where(name => name.Length > 0 && known.Add(name)));
                known.UnionWith(node.Proto.Output);
            }

            var outputs = graph.Output.Select(o => o.Name).ToList();
            captures.AddRange(outputs.Where(known.Add));
            return new Branch(nodes, constants, captures, outputs);
        }
    }
}
