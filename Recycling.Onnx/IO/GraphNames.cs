using Recycling.Onnx.Proto;

namespace Recycling.Onnx.IO;

/// <summary>
/// The onnx checker's naming rules for each graph (the main graph and every subgraph in node attributes): graph input
/// names unique, initializer and sparse-initializer names unique, and every node output assigned once (SSA), never
/// reusing an input or initializer name. An initializer may share its name with a graph input: IR 3 requires it, later
/// versions allow it (the input's default value). A model breaking these rules is ambiguous: ONNX Runtime reads one of
/// two equally named tensors, so merging "the" tensor of that name could merge the copy it never reads.
/// </summary>
internal static class GraphNames
{
    public static void CheckUnique(string file, GraphProto main)
    {
        var pending = new Stack<GraphProto>();
        pending.Push(main);
        while (pending.TryPop(out var graph))
        {
            Check(file, graph);
            foreach (var attribute in graph.Node.SelectMany(n => n.Attribute))
            {
                if (attribute.G is not null)
                {
                    pending.Push(attribute.G);
                }

                foreach (var g in attribute.Graphs)
                {
                    pending.Push(g);
                }
            }
        }
    }

    private static void Check(string file, GraphProto graph)
    {
        string where = graph.Name.Length > 0 ? $"graph '{graph.Name}'" : "a graph without a name";
        var inputs = new HashSet<string>(StringComparer.Ordinal);
        foreach (var input in graph.Input)
        {
            if (!inputs.Add(input.Name))
            {
                throw Invalid(file, $"graph input name '{input.Name}' appears twice in {where}");
            }
        }

        var initializers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in graph.Initializer.Select(t => t.Name).Concat(graph.SparseInitializer.Select(t => t.Values?.Name ?? "")))
        {
            if (name.Length > 0 && !initializers.Add(name))
            {
                throw Invalid(file, $"initializer name '{name}' appears twice in {where}");
            }
        }

        var outputs = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in graph.Node.SelectMany(n => n.Output).Where(o => o.Length > 0))
        {
            if (!outputs.Add(name) || inputs.Contains(name) || initializers.Contains(name))
            {
                throw Invalid(file, $"value name '{name}' is assigned twice in {where} (as a node output and again as an output, input or initializer)");
            }
        }
    }

    private static OnnxFormatException Invalid(string file, string what) =>
        new(file, $"{what}: invalid ONNX, names must be unique within a graph (ONNX Runtime would read only one of them)");
}
