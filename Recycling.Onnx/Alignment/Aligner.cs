using System.Text.RegularExpressions;

namespace Recycling.Onnx.Alignment;

/// <summary>
/// Finds which tensors correspond across fine-tuned exports of one base (and the base itself). Graphs are compared
/// in canonical form (<see cref="CanonicalGraph"/>); each weight is keyed by the sites that read it, so renamed,
/// Identity-deduplicated and folded tensors line up. Values are read only to confirm tied copies.
/// </summary>
public static partial class Aligner
{
    public static AlignmentPlan Align(IReadOnlyList<OnnxModel> inputs, OnnxModel? baseModel = null, HeadPolicy heads = HeadPolicy.Error)
    {
        if (inputs.Count == 0)
        {
            throw new RecyclingException("alignment needs at least one model");
        }

        if (heads == HeadPolicy.Base && baseModel is null)
        {
            throw new RecyclingException("--heads base needs a base model (--base)");
        }

        var all = baseModel is null ? inputs : [.. inputs, baseModel];
        var graphs = all.Select(CanonicalGraph.Build).ToList();
        CheckSameGraph(graphs);

        var reference = graphs[0];
        CheckConstantNodes(graphs);
        var groups = reference.Sites.Keys
            .OrderBy(s => s.Node).ThenBy(s => s.Slot)
            .GroupBy(site => string.Join("\n", graphs.Select(g => g.Sites[site].Path)))
            .ToList();

        var parameters = new List<AlignedParameter>();
        foreach (var group in groups)
        {
            var sites = group.ToList();
            var first = sites[0];
            var tensors = graphs.Take(inputs.Count).Select(g => g.Sites[first]).ToList();
            var baseTensor = baseModel is null ? null : graphs[^1].Sites[first];
            var node = reference.Nodes[first.Node];
            var parameter = new AlignedParameter($"{first}", sites, tensors, baseTensor, $"{node.OpType} input {first.Slot}")
            {
                Match = tensors.Append(baseTensor).Where(t => t is not null).Select(t => t!.Name).Distinct().Count() == 1 ? MatchKind.Name : MatchKind.Role,
            };
            parameters.Add(parameter);
        }

        MarkAliases(graphs, parameters, all);
        foreach (var p in parameters)
        {
            Classify(p, reference, all);
        }

        CheckConstants(parameters, all, heads);
        FindTies(parameters);
        CheckHeads(parameters, heads);
        var template = heads == HeadPolicy.Base ? baseModel! : heads == HeadPolicy.First ? inputs[0] : ChooseTemplate(graphs, parameters, inputs.Count);
        return new AlignmentPlan(inputs, baseModel, parameters, template, heads);
    }

    private static void CheckSameGraph(List<CanonicalGraph> graphs)
    {
        var reference = graphs[0];
        foreach (var other in graphs.Skip(1))
        {
            var a = reference.Signatures;
            var b = other.Signatures;
            for (var i = 0; i < Math.Max(a.Count, b.Count); i++)
            {
                if (i >= a.Count || i >= b.Count || a[i] != b[i])
                {
                    var left = i < a.Count ? $"{reference.Describe(i)}: {a[i]}" : "(no more nodes)";
                    var right = i < b.Count ? $"{other.Describe(i)}: {b[i]}" : "(no more nodes)";
                    throw new RecyclingException(
                        $"{other.Model.Path}: not an export of the same base as {reference.Model.Path}: graphs differ at node {i} " +
                        $"({a.Count} vs {b.Count} nodes, Identity aliases excluded):\n  {Path.GetFileName(reference.Model.Path)}: {left}\n  {Path.GetFileName(other.Model.Path)}: {right}");
                }
            }

            if (!reference.Model.Proto.Graph.Output.Select(o => reference.Producers.GetValueOrDefault(o.Name, (-1, -1)))
                    .SequenceEqual(other.Model.Proto.Graph.Output.Select(o => other.Producers.GetValueOrDefault(o.Name, (-1, -1)))))
            {
                throw new RecyclingException($"{other.Model.Path}: graph outputs differ from {reference.Model.Path}");
            }
        }
    }

    /// <summary>
    /// Values inside Constant nodes (shape constants, scalars) are part of the graph, not weights: they must be equal
    /// in every input, or the inputs are not exports of one base.
    /// </summary>
    private static void CheckConstantNodes(List<CanonicalGraph> graphs)
    {
        var reference = graphs[0];
        var constants = reference.Model.Tensors.Where(t => t.Kind == TensorKind.Constant && t.Path.StartsWith("graph/node[", StringComparison.Ordinal)).ToList();
        foreach (var other in graphs.Skip(1))
        {
            var theirs = other.Model.Tensors.Where(t => t.Kind == TensorKind.Constant && t.Path.StartsWith("graph/node[", StringComparison.Ordinal)).ToList();
            if (theirs.Count != constants.Count)
            {
                throw new RecyclingException($"{other.Model.Path}: {theirs.Count} Constant values vs {constants.Count} in {reference.Model.Path}: not exports of one base");
            }

            for (var i = 0; i < constants.Count; i++)
            {
                var (a, b) = (constants[i], theirs[i]);
                var equal = a.DataType == b.DataType && a.Shape.SequenceEqual(b.Shape) &&
                    (a.DataType == OnnxDataType.String
                        ? a.ReadStrings().Select(Convert.ToBase64String).SequenceEqual(b.ReadStrings().Select(Convert.ToBase64String))
                        : a.ReadRawBytes().AsSpan().SequenceEqual(b.ReadRawBytes()));
                if (!equal)
                {
                    throw new RecyclingException($"{other.Model.Path}: Constant {b.Path} differs from {a.Path} in {reference.Model.Path}: constants of the graph must be equal in exports of one base");
                }
            }
        }
    }

    private static void MarkAliases(List<CanonicalGraph> graphs, List<AlignedParameter> parameters, IReadOnlyList<OnnxModel> models)
    {
        for (var m = 0; m < graphs.Count; m++)
        {
            var shared = parameters.GroupBy(p => graphs[m].Sites[p.Sites[0]].Path).Where(g => g.Count() > 1);
            foreach (var group in shared)
            {
                foreach (var p in group)
                {
                    p.AliasedIn = [.. p.AliasedIn, Path.GetFileName(models[m].Path)];
                }
            }
        }
    }

    private static void Classify(AlignedParameter p, CanonicalGraph reference, IReadOnlyList<OnnxModel> models)
    {
        var shapes = p.AllTensors.Select(t => string.Join(",", t.Shape)).Distinct().Count();
        p.IsHead = shapes > 1;
        var types = p.AllTensors.Select(t => t.DataType).Distinct().ToList();
        if (types.Any(OnnxDataTypes.IsFloatingPoint) && !types.All(OnnxDataTypes.IsFloatingPoint))
        {
            throw new RecyclingException($"{models[0].Path}: parameter {p.Key} ({p.Tensors[0].Name}) is a float tensor in some inputs and {string.Join("/", types)} in others");
        }

        p.IsBatchNormStatistic = p.Sites.Any(s => reference.Nodes[s.Node].OpType == "BatchNormalization" && s.Slot is 3 or 4);
        var name = p.Tensors[0].Name;
        if (FoldedName().IsMatch(name))
        {
            var op = reference.Nodes[p.Sites[0].Node].OpType;
            p.Transformed = op switch
            {
                "Conv" or "ConvTranspose" => "folded by the exporter into Conv (torch folds BatchNorm into the preceding Conv for eval-mode exports): averaging folded weights approximates averaging the original parameters",
                "MatMul" or "Gemm" => "stored transposed by the exporter's constant folding: a linear transform, so averaging it equals averaging the original weight",
                _ => "a constant folded by the exporter from parameters: averaging it equals averaging the originals only if the folding was linear",
            };
        }
    }

    /// <summary>Integer, bool and string tensors (shape constants, indices) are never averaged: they must be equal everywhere.</summary>
    private static void CheckConstants(List<AlignedParameter> parameters, IReadOnlyList<OnnxModel> models, HeadPolicy heads)
    {
        foreach (var p in parameters.Where(p => !p.IsFloat))
        {
            var first = p.Tensors[0];
            foreach (var other in p.AllTensors.Skip(1))
            {
                var equal = first.DataType == other.DataType && first.Shape.SequenceEqual(other.Shape) &&
                    (first.DataType == OnnxDataType.String
                        ? first.ReadStrings().Select(Convert.ToBase64String).SequenceEqual(other.ReadStrings().Select(Convert.ToBase64String))
                        : first.ReadRawBytes().AsSpan().SequenceEqual(other.ReadRawBytes()));
                if (!equal && !(p.IsHead && heads != HeadPolicy.Error))
                {
                    throw new RecyclingException($"{models[0].Path}: {first.DataType} tensor {first.Name} ({p.Key}, read by {p.Consumer}) differs in {Path.GetFileName(FileOf(other, models))}: integer, bool and shape tensors are never averaged and must be equal");
                }
            }
        }
    }

    private static string FileOf(OnnxTensor tensor, IReadOnlyList<OnnxModel> models) => models.First(m => m.Tensors.Contains(tensor)).Path;

    private static void CheckHeads(List<AlignedParameter> parameters, HeadPolicy heads)
    {
        var headParameters = parameters.Where(p => p.IsHead).ToList();
        if (headParameters.Count > 0 && heads == HeadPolicy.Error)
        {
            throw new RecyclingException(
                $"tensors differ in shape across the inputs (task heads?): {string.Join("; ", headParameters.Take(4).Select(p => $"{p.Tensors[0].Name} {AlignmentPlan.Reason(p)}"))}. " +
                "Choose --heads drop (body only), first or base");
        }
    }

    /// <summary>
    /// Tied weights: a float parameter equal (or equal transposed) to another in EVERY input is a copy of it, merged
    /// once so that TIES and DARE keep the tie. Candidates are found by shape; a sample of elements is compared
    /// before the full comparison, so values are read only for real candidates.
    /// </summary>
    private static void FindTies(List<AlignedParameter> parameters)
    {
        var floats = parameters.Where(p => p.IsFloat && !p.IsHead && p.Tensors[0].ElementCount > 1).ToList();
        for (var i = 0; i < floats.Count; i++)
        {
            var primary = floats[i];
            if (primary.TiedTo is not null)
            {
                continue;
            }

            for (var j = i + 1; j < floats.Count; j++)
            {
                var copy = floats[j];
                if (copy.TiedTo is not null || copy.Tensors[0].DataType != primary.Tensors[0].DataType)
                {
                    continue;
                }

                var a = primary.Tensors[0].Shape;
                var b = copy.Tensors[0].Shape;
                var same = a.SequenceEqual(b);
                var transposed = a.Count == 2 && b.Count == 2 && a[0] == b[1] && a[1] == b[0];
                if (same && AllEqual(primary, copy, transpose: false))
                {
                    copy.TiedTo = primary.Key;
                }
                else if (transposed && AllEqual(primary, copy, transpose: true))
                {
                    copy.TiedTo = primary.Key;
                    copy.TiedTransposed = true;
                }
            }
        }
    }

    private static bool AllEqual(AlignedParameter primary, AlignedParameter copy, bool transpose)
    {
        var pairs = primary.AllTensors.Zip(copy.AllTensors).ToList();
        if (pairs.Any(p => ReferenceEquals(p.First, p.Second)))
        {
            return false; // one tensor read at both places is sharing, handled as an alias
        }

        return Matches(pairs[0].First, pairs[0].Second, transpose, sample: true) && pairs.All(p => Matches(p.First, p.Second, transpose, sample: false));
    }

    /// <summary>
    /// Whether b holds a's values (transposed when asked): 64 sampled elements, or every element. Values are read
    /// through the files' handles in windows, so any size compares in bounded memory and a file shortened meanwhile is
    /// an error, not a crash; a full transposed comparison reads both tensors whole, so it stops at 2^28 elements.
    /// </summary>
    private static bool Matches(OnnxTensor a, OnnxTensor b, bool transpose, bool sample)
    {
        var elementSize = OnnxDataTypes.BitsPerElement(a.DataType) / 8;
        if (elementSize == 0 || a.DataType != b.DataType || a.ElementCount != b.ElementCount)
        {
            return false;
        }

        if (a.Storage == TensorStorage.Typed || b.Storage == TensorStorage.Typed)
        {
            // Typed fields are decoded whole (they live in the .onnx file, under 2 GiB): compare the decoded copies.
            sample = false;
        }

        var rows = transpose ? a.Shape[0] : 1;
        var cols = transpose ? a.Shape[1] : a.ElementCount;
        var count = rows * cols;
        if (sample)
        {
            Span<byte> x = stackalloc byte[16], y = stackalloc byte[16];
            for (long k = 0; k < count; k += Math.Max(1, count / 64))
            {
                var (r, c) = (k / cols, k % cols);
                a.ReadRaw(((r * cols) + c) * elementSize, x[..elementSize]);
                b.ReadRaw((transpose ? (c * rows) + r : (r * cols) + c) * elementSize, y[..elementSize]);
                if (!x[..elementSize].SequenceEqual(y[..elementSize]))
                {
                    return false;
                }
            }

            return true;
        }

        if (transpose || a.Storage == TensorStorage.Typed || b.Storage == TensorStorage.Typed)
        {
            if (count > int.MaxValue / 8)
            {
                return false;
            }

            var (whole, other) = (a.ReadRawBytes(), b.ReadRawBytes());
            for (long r = 0; r < rows; r++)
            {
                for (long c = 0; c < cols; c++)
                {
                    if (!whole.AsSpan((int)(((r * cols) + c) * elementSize), elementSize).SequenceEqual(other.AsSpan((int)(((c * rows) + r) * elementSize), elementSize)))
                    {
                        return false;
                    }
                }
            }

            return true;
        }

        var window = (int)Math.Min(a.ByteLength, 1 << 20);
        var left = System.Buffers.ArrayPool<byte>.Shared.Rent(window);
        var right = System.Buffers.ArrayPool<byte>.Shared.Rent(window);
        try
        {
            for (long offset = 0; offset < a.ByteLength; offset += window)
            {
                var n = (int)Math.Min(window, a.ByteLength - offset);
                a.ReadRaw(offset, left.AsSpan(0, n));
                b.ReadRaw(offset, right.AsSpan(0, n));
                if (!left.AsSpan(0, n).SequenceEqual(right.AsSpan(0, n)))
                {
                    return false;
                }
            }

            return true;
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(left);
            System.Buffers.ArrayPool<byte>.Shared.Return(right);
        }
    }

    /// <summary>The first fine-tuned input in which no tensor is shared by two parameters, so each gets its own value without rewiring.</summary>
    private static OnnxModel ChooseTemplate(List<CanonicalGraph> graphs, List<AlignedParameter> parameters, int inputCount)
    {
        for (var m = 0; m < inputCount; m++)
        {
            if (parameters.Select(p => graphs[m].Sites[p.Sites[0]].Path).Distinct().Count() == parameters.Count)
            {
                return graphs[m].Model;
            }
        }

        return graphs[0].Model;
    }

    /// <summary>Names exporters give to folded constants: torch's onnx::Op_N, tf2onnx's const_fold_opt__N.</summary>
    [GeneratedRegex(@"^(onnx::[A-Za-z]+_\d+|const_fold_opt__\d+)$")]
    private static partial Regex FoldedName();
}
