using Recycling.Onnx.Proto;

namespace Recycling.Onnx.IO;

/// <summary>A tensor found in a model's structure, with the stable path that says where it lives.</summary>
internal readonly record struct TensorSite(TensorProto Proto, string Path, TensorKind Kind);

/// <summary>Visits every place a tensor can live in a model, in a fixed order, and names each with a stable path.</summary>
internal sealed class TensorCollector
{
    private readonly List<TensorSite> _sites = [];

    public static List<TensorSite> Collect(ModelProto model)
    {
        var collector = new TensorCollector();
        collector.CollectModel(model);
        return collector._sites;
    }

    private void Add(TensorProto proto, string path, TensorKind kind) => _sites.Add(new TensorSite(proto, path, kind));

    private void CollectModel(ModelProto model)
    {
        CollectGraph(model.Graph, "graph");
        for (var i = 0; i < model.TrainingInfo.Count; i++)
        {
            var info = model.TrainingInfo[i];
            if (info.Initialization is not null)
            {
                CollectGraph(info.Initialization, $"training_info[{i}]/initialization");
            }

            if (info.Algorithm is not null)
            {
                CollectGraph(info.Algorithm, $"training_info[{i}]/algorithm");
            }
        }

        foreach (var function in model.Functions)
        {
            var prefix = $"function[{function.Domain}:{function.Name}{(function.Overload.Length > 0 ? ":" + function.Overload : "")}]";
            CollectNodes(function.Node, prefix);
            foreach (var attribute in function.AttributeProto)
            {
                CollectAttribute(attribute, $"{prefix}/attribute[{attribute.Name}]", isConstant: false);
            }
        }
    }

    private void CollectGraph(GraphProto graph, string prefix)
    {
        foreach (var tensor in graph.Initializer)
        {
            Add(tensor, $"{prefix}/initializer[{tensor.Name}]", TensorKind.Initializer);
        }

        foreach (var sparse in graph.SparseInitializer)
        {
            CollectSparse(sparse, $"{prefix}/sparse_initializer[{sparse.Values?.Name}]");
        }

        CollectNodes(graph.Node, prefix);
    }

    private void CollectNodes(IList<NodeProto> nodes, string prefix)
    {
        var names = nodes.Where(n => n.Name.Length > 0).GroupBy(n => n.Name).Where(g => g.Count() == 1).Select(g => g.Key).ToHashSet();
        for (var i = 0; i < nodes.Count; i++)
        {
            var node = nodes[i];
            var label = names.Contains(node.Name) ? node.Name : $"#{i}:{node.OpType}";
            var isConstant = Alignment.OpRules.For(node).IsConstant;
            foreach (var attribute in node.Attribute)
            {
                CollectAttribute(attribute, $"{prefix}/node[{label}]/attribute[{attribute.Name}]", isConstant);
            }
        }
    }

    private void CollectAttribute(AttributeProto attribute, string path, bool isConstant)
    {
        var kind = isConstant ? TensorKind.Constant : TensorKind.Attribute;
        if (attribute.T is not null)
        {
            Add(attribute.T, path, kind);
        }

        for (var i = 0; i < attribute.Tensors.Count; i++)
        {
            Add(attribute.Tensors[i], $"{path}[{i}]", kind);
        }

        if (attribute.SparseTensor is not null)
        {
            CollectSparse(attribute.SparseTensor, path);
        }

        for (var i = 0; i < attribute.SparseTensors.Count; i++)
        {
            CollectSparse(attribute.SparseTensors[i], $"{path}[{i}]");
        }

        if (attribute.G is not null)
        {
            CollectGraph(attribute.G, path);
        }

        for (var i = 0; i < attribute.Graphs.Count; i++)
        {
            CollectGraph(attribute.Graphs[i], $"{path}[{i}]");
        }
    }

    private void CollectSparse(SparseTensorProto sparse, string path)
    {
        if (sparse.Values is not null)
        {
            Add(sparse.Values, $"{path}/values", TensorKind.SparseValues);
        }

        if (sparse.Indices is not null)
        {
            Add(sparse.Indices, $"{path}/indices", TensorKind.SparseIndices);
        }
    }
}
