using System.Text.RegularExpressions;

namespace Recycling.Onnx.Alignment;

/// <summary>
/// Finds which tensors correspond across fine-tuned exports of one base (and the base itself). Graphs are compared
/// in canonical form (<see cref="CanonicalGraph"/>); each weight is keyed by the sites that read it, so renamed,
/// Identity-deduplicated and folded tensors line up. Values are read only to confirm tied copies.
/// </summary>
public static partial class Aligner
{
    public static AlignmentPlan Align(IReadOnlyList<OnnxModel> inputs, OnnxModel? baseModel = null, HeadPolicy heads = HeadPolicy.Error) =>
        Align(inputs, baseModel, heads, allowCuts: false);

    /// <param name="allowCuts">Align models that differ by a cut and a new head (finetune --head new:K --at V) on their
    /// shared body, reporting the other nodes (<see cref="AlignmentPlan.Unshared"/>); false: refuse them, as a merge must.</param>
    internal static AlignmentPlan Align(IReadOnlyList<OnnxModel> inputs, OnnxModel? baseModel, HeadPolicy heads, bool allowCuts)
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
        var graphs = all.Select(m => CanonicalGraph.Build(m)).ToList();
        IReadOnlyList<UnsharedPart> unshared = [];
        if (graphs.Skip(1).Any(g => !g.Signatures.SequenceEqual(graphs[0].Signatures)) && SharedBody.Find(graphs) is { } body)
        {
            if (!allowCuts)
            {
                var part = body.Unshared.FirstOrDefault(u => u.Kind == UnsharedKind.NewHead) ?? body.Unshared[0];
                throw new RecyclingException(
                    $"{MessageText.Path(part.Model)}: shares only a body with {string.Join(", ", all.Select(m => m.Path).Where(p => p != part.Model).Select(MessageText.Path))}: its {part.Nodes.Count} node(s) after '{string.Join("', '", part.Reads)}' ({string.Join(", ", part.Nodes.Take(3))}{(part.Nodes.Count > 3 ? ", ..." : "")}) are not in {string.Join(", ", part.AbsentFrom.Select(p => Path.GetFileName(p)))} (a cut with a new head); merging needs one graph in every model (recycle align shows the shared body)");
            }

            unshared = body.Unshared;
            graphs = all.Select((m, i) => CanonicalGraph.Build(m, body.Keep[i])).ToList();
        }

        CheckSameGraph(graphs, checkOutputs: unshared.Count == 0);

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
        return new AlignmentPlan(inputs, baseModel, parameters, template, heads) { Unshared = unshared };
    }

    private static void CheckSameGraph(List<CanonicalGraph> graphs, bool checkOutputs)
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

            if (checkOutputs && !reference.Model.Proto.Graph.Output.Select(o => reference.Producers.GetValueOrDefault(o.Name, (-1, -1)))
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
    /// <summary>The values in the attributes of the graph's canonical nodes (all but those outside a shared body).</summary>
    private static List<OnnxTensor> ConstantValues(CanonicalGraph graph)
    {
        var nodes = graph.Model.Proto.Graph.Node;
        var unique = nodes.Where(n => n.Name.Length > 0).GroupBy(n => n.Name).Where(g => g.Count() == 1).Select(g => g.Key).ToHashSet(StringComparer.Ordinal);
        var kept = graph.OriginalIndex.Select(i => $"graph/node[{(unique.Contains(nodes[i].Name) ? nodes[i].Name : $"#{i}:{nodes[i].OpType}")}]/").ToList();
        var all = graph.OriginalIndex.Count == nodes.Count;
        return [.. graph.Model.Tensors.Where(t => t.Kind == TensorKind.Constant && t.Path.StartsWith("graph/node[", StringComparison.Ordinal)
            && (all || kept.Any(k => t.Path.StartsWith(k, StringComparison.Ordinal))))];
    }

    private static void CheckConstantNodes(List<CanonicalGraph> graphs)
    {
        var reference = graphs[0];
        var constants = ConstantValues(reference);
        foreach (var other in graphs.Skip(1))
        {
            var theirs = ConstantValues(other);
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
                        : SameValues(a, b));
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

        p.IsBatchNormStatistic = p.Sites.Any(s => OpRules.For(reference.Nodes[s.Node]).StatisticSlots.Contains(s.Slot));
        var name = p.Tensors[0].Name;
        if (FoldedName().IsMatch(name))
        {
            p.Transform = OpRules.For(reference.Nodes[p.Sites[0].Node]).FoldedWeight;
            p.Transformed = p.Transform switch
            {
                ParameterTransform.FoldedIntoConv => "folded by the exporter into Conv (torch folds BatchNorm into the preceding Conv for eval-mode exports): averaging folded weights approximates averaging the original parameters",
                ParameterTransform.Transposed => "stored transposed by the exporter's constant folding: a linear transform, so averaging it equals averaging the original weight",
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
                        : SameValues(first, other));
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
    /// once so that TIES and DARE keep the tie. Near-linear in the number of parameters: a hash of a sample of each
    /// first input's elements (at most 64) buckets the candidates, a hash of all their elements in every input splits
    /// the buckets, and only parameters with equal full hashes are compared element by element. So values are read
    /// in full only for real candidates, and each copy is compared with its primary about once. The ties found are
    /// exactly those of comparing every pair in order: the earliest equal parameter is the primary.
    /// </summary>
    private static void FindTies(List<AlignedParameter> parameters)
    {
        var floats = parameters.Where(p => p.IsFloat && !p.IsHead && p.Tensors[0].ElementCount > 1 && CanCompare(p.Tensors[0])).ToList();
        var bySample = new Dictionary<(OnnxDataType, string, ulong), List<int>>();
        for (var i = 0; i < floats.Count; i++)
        {
            var key = (floats[i].Tensors[0].DataType, ShapeKey(floats[i].Tensors[0].Shape), SampleHash(floats[i].Tensors[0], transpose: false));
            if (!bySample.TryGetValue(key, out var list))
            {
                bySample[key] = list = [];
            }

            list.Add(i);
        }

        // Parameters that may be a copy of another: those sharing a sample bucket, or whose transpose sample matches one.
        var fullHash = new Dictionary<int, ulong>();
        ulong Full(int i) => fullHash.TryGetValue(i, out var h) ? h : fullHash[i] = HashAll(floats[i], transpose: false);
        var byFull = new Dictionary<(OnnxDataType, string, ulong), Queue<int>>();
        void AddFull(int i)
        {
            var key = (floats[i].Tensors[0].DataType, ShapeKey(floats[i].Tensors[0].Shape), Full(i));
            if (!byFull.TryGetValue(key, out var queue))
            {
                byFull[key] = queue = new Queue<int>();
            }

            queue.Enqueue(i);
        }

        foreach (var list in bySample.Values.Where(l => l.Count > 1))
        {
            list.ForEach(AddFull);
        }

        var transposedSample = new Dictionary<int, (OnnxDataType, string, ulong)>();
        for (var i = 0; i < floats.Count; i++)
        {
            var t = floats[i].Tensors[0];
            if (t.Shape.Count == 2)
            {
                var key = (t.DataType, ShapeKey([t.Shape[1], t.Shape[0]]), SampleHash(t, transpose: true));
                if (bySample.TryGetValue(key, out var partners) && (partners.Count > 1 || partners[0] != i))
                {
                    transposedSample[i] = key;
                    if (partners.Count == 1)
                    {
                        AddFull(partners[0]); // a candidate only as the transpose of another (larger buckets are in already)
                    }
                }
            }
        }

        foreach (var queue in byFull.Values)
        {
            var unique = new SortedSet<int>(queue);
            queue.Clear();
            foreach (var j in unique)
            {
                queue.Enqueue(j);
            }
        }

        for (var i = 0; i < floats.Count; i++)
        {
            var primary = floats[i];
            if (primary.TiedTo is not null)
            {
                continue;
            }

            var a = primary.Tensors[0];
            var candidates = new SortedSet<int>();
            if (fullHash.TryGetValue(i, out var full) && byFull.TryGetValue((a.DataType, ShapeKey(a.Shape), full), out var same))
            {
                candidates.UnionWith(Pending(same, i));
            }

            if (transposedSample.ContainsKey(i) && byFull.TryGetValue((a.DataType, ShapeKey([a.Shape[1], a.Shape[0]]), HashAll(primary, transpose: true)), out var transposed))
            {
                candidates.UnionWith(Pending(transposed, i));
            }

            foreach (var j in candidates)
            {
                var copy = floats[j];
                if (copy.TiedTo is not null)
                {
                    continue;
                }

                var b = copy.Tensors[0].Shape;
                if (a.Shape.SequenceEqual(b) && AllEqual(primary, copy, transpose: false))
                {
                    copy.TiedTo = primary.Key;
                }
                else if (a.Shape.Count == 2 && b.Count == 2 && a.Shape[0] == b[1] && a.Shape[1] == b[0] && AllEqual(primary, copy, transpose: true))
                {
                    copy.TiedTo = primary.Key;
                    copy.TiedTransposed = true;
                }
            }
        }

        // The members of a full-hash bucket after i that are not tied yet; tied ones leave the queue for good.
        IEnumerable<int> Pending(Queue<int> queue, int i)
        {
            while (queue.Count > 0 && (queue.Peek() <= i || floats[queue.Peek()].TiedTo is not null))
            {
                queue.Dequeue();
            }

            return queue.Where(j => floats[j].TiedTo is null).ToList();
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
    /// through the files' handles in windows, typed fields decoded forward a window at a time, so any size compares in
    /// bounded memory and a file shortened meanwhile is an error, not a crash (transposed too, in bands:
    /// <see cref="TransposedEqual"/>).
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
            // A sampled element of typed fields costs a scan of the fields up to it: compare them all in one pass instead.
            sample = false;
        }

        var rows = transpose ? a.Shape[0] : 1;
        var cols = transpose ? a.Shape[1] : a.ElementCount;
        var count = rows * cols;
        TieComparisons += sample ? Math.Min(count, 64) : count;
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

        if (transpose)
        {
            // a[r, c] == b[c, r]: bands of the tensor with the longer rows against short runs of the other, so each pread
            // is at least a few elements whatever the shape.
            return a.Shape[1] <= a.Shape[0] ? TransposedEqual(a, b, elementSize) : TransposedEqual(b, a, elementSize);
        }

        return SameValues(a, b);
    }

    /// <summary>Whether a and b hold the same raw bytes (their types and sizes are the caller's to compare), read in windows.</summary>
    private static bool SameValues(OnnxTensor a, OnnxTensor b)
    {
        if (a.ByteLength != b.ByteLength)
        {
            return false;
        }

        var window = (int)Math.Min(a.ByteLength, 1 << 20);
        var (cursorA, cursorB) = (a.OpenCursor(), b.OpenCursor());
        var left = System.Buffers.ArrayPool<byte>.Shared.Rent(window);
        var right = System.Buffers.ArrayPool<byte>.Shared.Rent(window);
        try
        {
            for (long offset = 0; offset < a.ByteLength; offset += window)
            {
                var n = (int)Math.Min(window, a.ByteLength - offset);
                a.ReadRaw(offset, left.AsSpan(0, n), cursorA);
                b.ReadRaw(offset, right.AsSpan(0, n), cursorB);
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

    /// <summary>
    /// Whether b (stored [cols, rows]) is the transpose of a (stored [rows, cols]), read through the handles in bounded
    /// memory: a band of a's rows at a time (one read), and for it the matching run of each of b's rows (cols reads).
    /// Callers pass as a the tensor with the shorter rows, so a band holds at least 16 rows of a 2^28-element tensor.
    /// The runs of b are read at increasing offsets within a band, so typed fields in b are decoded once per band.
    /// </summary>
    private static bool TransposedEqual(OnnxTensor a, OnnxTensor b, int elementSize)
    {
        long rows = a.Shape[0], cols = a.Shape[1];
        const int Window = 4 << 20;
        var band = (int)Math.Clamp(Window / (cols * elementSize), 1, rows);
        var bytes = checked((int)(band * cols * elementSize));
        var (cursorA, cursorB) = (a.OpenCursor(), b.OpenCursor());
        var left = System.Buffers.ArrayPool<byte>.Shared.Rent(bytes);
        var right = System.Buffers.ArrayPool<byte>.Shared.Rent(bytes);
        try
        {
            for (long r0 = 0; r0 < rows; r0 += band)
            {
                var n = (int)Math.Min(band, rows - r0);
                a.ReadRaw(r0 * cols * elementSize, left.AsSpan(0, (int)(n * cols * elementSize)), cursorA);
                for (long c = 0; c < cols; c++)
                {
                    b.ReadRaw(((c * rows) + r0) * elementSize, right.AsSpan((int)(c * n * elementSize), n * elementSize), cursorB);
                }

                for (var r = 0; r < n; r++)
                {
                    for (long c = 0; c < cols; c++)
                    {
                        if (!left.AsSpan((int)(((r * cols) + c) * elementSize), elementSize).SequenceEqual(right.AsSpan((int)(((c * n) + r) * elementSize), elementSize)))
                        {
                            return false;
                        }
                    }
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

    /// <summary>Element comparisons made by tie detection on this thread (full and sampled); tests pin its growth.</summary>
    [ThreadStatic]
    internal static long TieComparisons;

    private static string ShapeKey(IReadOnlyList<long> shape) => string.Join(",", shape);

    private static bool CanCompare(OnnxTensor t) => OnnxDataTypes.BitsPerElement(t.DataType) % 8 == 0;

    /// <summary>A hash of the elements of every input's (and the base's) tensor of <paramref name="p"/>.</summary>
    private static ulong HashAll(AlignedParameter p, bool transpose)
    {
        ulong h = 0;
        foreach (var t in p.AllTensors)
        {
            h = Mix(h, FullHash(t, transpose));
        }

        return h;
    }

    /// <summary>
    /// A hash of at most 64 of <paramref name="t"/>'s elements at evenly spaced positions of its row-major order, or of
    /// its transpose's (2-D only), each read on its own: a sample never reads the whole tensor (every 2-D parameter's
    /// transposed sample is hashed on each merge). Two tensors of one shape with equal elements (one equal to the
    /// other's transpose) get equal hashes.
    /// </summary>
    private static ulong SampleHash(OnnxTensor t, bool transpose)
    {
        var size = OnnxDataTypes.BitsPerElement(t.DataType) / 8;
        var (rows, cols) = transpose ? (t.Shape[1], t.Shape[0]) : (1, t.ElementCount);
        long count = t.ElementCount;
        var step = Math.Max(1, count / 64);

        // element (r, c) of the viewed order; transposed, it is element (c, r) of the stored [cols, rows] tensor. The
        // samples are read in stored order, so typed fields are decoded forward once, and hashed in viewed order.
        var offsets = new long[(count + step - 1) / step];
        for (var s = 0; s < offsets.Length; s++)
        {
            var k = s * step;
            offsets[s] = (transpose ? ((k % cols) * rows) + (k / cols) : k) * size;
        }

        var order = Enumerable.Range(0, offsets.Length).OrderBy(s => offsets[s]).ToArray();
        var values = new ulong[offsets.Length];
        var cursor = t.OpenCursor();
        Span<byte> single = stackalloc byte[16];
        foreach (var s in order)
        {
            t.ReadRaw(offsets[s], single[..size], cursor);
            values[s] = Value(single[..size]);
        }

        ulong h = 0x9E3779B97F4A7C15;
        foreach (var v in values)
        {
            h = Mix(h, v);
        }

        TieComparisons += Math.Min(count, 64);
        return h;
    }

    /// <summary>
    /// A hash of all of <paramref name="t"/>'s elements with their positions in its row-major order, or its transpose's
    /// (2-D only): a sum of one mix per (position, value), so the stored order can be read in windows through the file's
    /// handle, transposed or not, in bounded memory. Two tensors of one shape with equal elements (one equal to the
    /// other's transpose) get equal hashes.
    /// </summary>
    private static ulong FullHash(OnnxTensor t, bool transpose)
    {
        var size = OnnxDataTypes.BitsPerElement(t.DataType) / 8;
        long count = t.ElementCount;
        var (storedRows, storedCols) = transpose ? (t.Shape[0], t.Shape[1]) : (1, count);
        var cursor = t.OpenCursor();
        var window = System.Buffers.ArrayPool<byte>.Shared.Rent((int)Math.Min(t.ByteLength, 1 << 20));
        var windowElements = window.Length / size;
        ulong h = 0;
        long i = 0, j = 0; // the stored element (i, j); its position in the viewed order is j·storedRows + i transposed
        try
        {
            for (long start = 0; start < count; start += windowElements)
            {
                var n = (int)Math.Min(windowElements, count - start);
                t.ReadRaw(start * size, window.AsSpan(0, n * size), cursor);
                var values = window.AsSpan(0, n * size);
                for (var e = 0; e < n; e++)
                {
                    var position = transpose ? (j * storedRows) + i : (i * storedCols) + j;
                    h += Finalize(Value(values.Slice(e * size, size)) + Finalize((ulong)position ^ 0x9E3779B97F4A7C15));
                    if (++j == storedCols)
                    {
                        (i, j) = (i + 1, 0);
                    }
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(window);
        }

        TieComparisons += count;
        return h;
    }

    private static ulong Value(ReadOnlySpan<byte> element) => element.Length switch
    {
        1 => element[0],
        2 => BitConverter.ToUInt16(element),
        4 => BitConverter.ToUInt32(element),
        8 => BitConverter.ToUInt64(element),
        _ => Mix(BitConverter.ToUInt64(element), BitConverter.ToUInt64(element[8..])), // complex128
    };

    /// <summary>MurmurHash3's 64-bit finaliser: every input bit reaches every output bit.</summary>
    private static ulong Finalize(ulong x)
    {
        x = (x ^ (x >> 33)) * 0xFF51AFD7ED558CCDUL;
        x = (x ^ (x >> 33)) * 0xC4CEB9FE1A85EC53UL;
        return x ^ (x >> 33);
    }

    private static ulong Mix(ulong h, ulong v) => (System.Numerics.BitOperations.RotateLeft(h ^ v, 27) * 0x100000001B3UL) + 0x9E3779B97F4A7C15UL;

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
