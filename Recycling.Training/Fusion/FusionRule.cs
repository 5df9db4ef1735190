using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Training.Fusion;

/// <summary>
/// A chain of nodes that one TorchSharp call computes: fewer autograd nodes and temporaries per step (what a
/// hand-written module gets by calling F.linear or F.gelu). A rule only recognises its pattern; the program replaces
/// the nodes (see OnnxProgram.Fusion.cs), and where the fast path's conditions fail at run time (shapes, types) the
/// original nodes run instead, so a fusion never changes what the graph computes beyond float rounding.
/// </summary>
internal interface IFusionRule
{
    /// <summary>The pattern whose last node is <paramref name="anchor"/>, or null.</summary>
    FusionMatch? Match(FusionGraph graph, int anchor);
}

/// <summary>
/// A recognised pattern: the nodes it replaces (the anchor last), the values its fast path reads, and the fast path
/// itself (given the run's context and those values), which returns null where it does not apply to these inputs.
/// </summary>
internal sealed record FusionMatch(string OpType, int[] Nodes, string[] Inputs, Func<OpContext, Tensor?[], Tensor?> Fast);

/// <summary>The compiled nodes with who produces and how many read each value, for the rules to match against.</summary>
internal sealed class FusionGraph
{
    private readonly IReadOnlyList<CompiledNode> _nodes;
    private readonly IReadOnlyDictionary<string, Tensor> _constants;
    private readonly Dictionary<string, int> _producer = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _reads = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _reader = new(StringComparer.Ordinal);

    /// <param name="nodes">The main graph's nodes in order.</param>
    /// <param name="constants">Initializers that never train (no parameter, no buffer).</param>
    /// <param name="outputs">The graph outputs: a value read outside the graph.</param>
    public FusionGraph(IReadOnlyList<CompiledNode> nodes, IReadOnlyDictionary<string, Tensor> constants, IEnumerable<string> outputs)
    {
        _nodes = nodes;
        _constants = constants;
        for (var index = 0; index < nodes.Count; index++)
        {
            foreach (var input in nodes[index].Inputs.Where(i => i.Length > 0))
            {
                _reads[input] = _reads.GetValueOrDefault(input) + 1;
                _reader[input] = index;
            }

            foreach (var output in nodes[index].Proto.Output.Where(o => o.Length > 0))
            {
                _producer[output] = index;
            }
        }

        foreach (var output in outputs)
        {
            _reads[output] = _reads.GetValueOrDefault(output) + 1;
        }
    }

    public CompiledNode this[int index] => _nodes[index];

    /// <summary>
    /// The index of the standard <paramref name="opType"/> node that computes <paramref name="value"/> as its only
    /// output, when exactly one node reads the value and it is no graph output (a pattern may then absorb it); else -1.
    /// </summary>
    public int Private(string value, string opType) => Reads(value) == 1 ? Producer(value, opType) : -1;

    /// <summary>The value of <paramref name="value"/> when it is a constant: an initializer that never trains, or a Constant node's value; else null.</summary>
    public Tensor? Constant(string value)
    {
        if (_constants.TryGetValue(value, out var initializer))
        {
            return initializer;
        }

        // A Constant node returns the tensor its attribute holds, the same one on every call.
        return _producer.TryGetValue(value, out var index) && _nodes[index].Is("Constant") && _nodes[index].Inputs.Count == 0
            ? _nodes[index].Run(new OpContext(), [])[0] : null;
    }

    /// <summary>The single-element floating constant <paramref name="value"/> is, or null.</summary>
    public Tensor? Scalar(string value) => Constant(value) is { } t && t.numel() == 1 && t.is_floating_point() ? t : null;

    /// <summary>A binary node's two inputs in both orders (commutative ops); none for a missing node (-1) or another arity.</summary>
    public IEnumerable<(string First, string Second)> Operands(int node) =>
        node >= 0 && _nodes[node].Inputs is { Count: 2 } inputs ? [(inputs[0], inputs[1]), (inputs[1], inputs[0])] : [];

    /// <summary>The index of the one node that reads <paramref name="value"/> when nothing else does (no graph output either); else -1.</summary>
    public int Reader(string value) => Reads(value) == 1 && _reader.TryGetValue(value, out var index) ? index : -1;

    /// <summary>How many node inputs and graph outputs read <paramref name="value"/>.</summary>
    public int Reads(string value) => _reads.GetValueOrDefault(value);

    /// <summary>The index of the standard <paramref name="opType"/> node that computes <paramref name="value"/> as its only output; else -1.</summary>
    public int Producer(string value, string opType) =>
        _producer.TryGetValue(value, out var index) && _nodes[index].Is(opType) && _nodes[index].Proto.Output.Count == 1 ? index : -1;

    /// <summary>Whether <paramref name="value"/> is a single-element floating constant within <paramref name="tolerance"/> of <paramref name="expected"/>.</summary>
    public bool IsScalar(string value, double expected, double tolerance = 0) =>
        Scalar(value) is { } t && Math.Abs(OpHelpers.Scalar(t) - expected) <= tolerance;
}
