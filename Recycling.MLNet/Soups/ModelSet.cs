using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;

namespace Recycling.MLNet.Soups;

/// <summary>Greedy soup acceptance: strictly better (model soups) or at least as good (DiWA, model ratatouille).</summary>
public enum GreedyRule
{
    /// <summary>Keep an ingredient only if the soup's val accuracy gets strictly higher (Wortsman et al.).</summary>
    Strict,

    /// <summary>Keep an ingredient when the soup's val accuracy does not drop (ties accepted; DiWA / ratatouille).</summary>
    AllowTies,
}

/// <summary>One candidate tried by a greedy soup: the soup it would make and its val accuracy.</summary>
public sealed record SoupStep(string Candidate, double ValAccuracy, bool Accepted);

/// <summary>A greedy soup: the ingredients sorted by val accuracy, each step, and the accepted set.</summary>
public sealed record GreedySoupResult(GreedyRule Rule, IReadOnlyList<string> Order, IReadOnlyList<double> OrderValAccuracy, IReadOnlyList<SoupStep> Steps, IReadOnlyList<string> Accepted, double ValAccuracy)
{
    public string RuleSymbol => Rule == GreedyRule.Strict ? ">" : ">=";

    /// <summary>Indices (in the model set) of the accepted ingredients.</summary>
    public IReadOnlyList<int> AcceptedIndices { get; init; } = [];
}

/// <summary>
/// Fine-tuned exports of one base, aligned once, so that any weighted average or merge of them is built in memory
/// (<see cref="ModelMerger.MergeToBytes(AlignmentPlan, MergeOptions, OnnxDataType?)"/>) and evaluated through ONNX
/// Runtime without writing candidates to disk. Scores are cached by (model, data), so a greedy soup never runs the
/// same candidate twice. Dispose to close the models.
/// </summary>
public sealed class ModelSet : IDisposable
{
    private readonly AlignedModels _models;
    private readonly ScoringOptions _scoring;
    private readonly Dictionary<string, FloatMatrix> _cache = [];
    private readonly IReadOnlyList<string>? _fisherFiles;

    /// <param name="paths">The fine-tuned exports (ingredients).</param>
    /// <param name="basePath">The base model, needed by task arithmetic, TIES, DARE and model stock.</param>
    /// <param name="heads">How heads of different shapes are treated (Drop gives body-only merges).</param>
    /// <param name="output">The output that evaluations read (e.g. "logits").</param>
    /// <param name="fisherFiles">One Fisher file per ingredient (.npz or .onnx), for Fisher merging.</param>
    public ModelSet(IReadOnlyList<string> paths, string? basePath = null, HeadPolicy heads = HeadPolicy.Error, string output = "logits",
        ScoringOptions? scoring = null, IReadOnlyList<string>? fisherFiles = null, IReadOnlyList<string>? names = null)
    {
        ArgumentNullException.ThrowIfNull(paths);
        if (paths.Count == 0)
        {
            throw new RecyclingException("no models given");
        }

        _models = AlignedModels.Open(paths, basePath, heads);
        Paths = [.. _models.Inputs.Select(m => m.Path)];
        Names = names is not null && names.Count == paths.Count ? names : UniqueNames(Paths);
        Output = output;
        _scoring = scoring ?? new ScoringOptions();
        _fisherFiles = fisherFiles;
    }

    public IReadOnlyList<string> Paths { get; }

    /// <summary>File names without extension; the full path where two share a file name, numbered where a path repeats.</summary>
    private static string[] UniqueNames(IReadOnlyList<string> paths)
    {
        var stems = paths.Select(p => Path.GetFileNameWithoutExtension(p)).ToList();
        var names = paths.Select((p, i) => stems.Count(s => s == stems[i]) > 1 ? p : stems[i]).ToArray();
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < names.Length; i++)
        {
            var n = seen[names[i]] = seen.GetValueOrDefault(names[i]) + 1;
            names[i] = n == 1 ? names[i] : $"{names[i]} ({n})";
        }

        return names;
    }

    public IReadOnlyList<string> Names { get; }

    public int Count => Paths.Count;

    public string Output { get; }

    public string? BasePath => _models.Base?.Path;

    /// <summary>The scores (<see cref="Output"/>) of ingredient <paramref name="index"/> as exported, run from its file.</summary>
    public FloatMatrix Scores(int index, Dataset data) =>
        Cached($"model {index}", data, () =>
        {
            using var scorer = OnnxScorer.Open(Paths[index], _scoring);
            return scorer.Run(data, Output);
        });

    /// <summary>The scores of the weighted average Σ wᵢθᵢ / Σ wᵢ (zero weights leave an ingredient out).</summary>
    public FloatMatrix AverageScores(IReadOnlyList<double> weights, Dataset data) =>
        MergeScores(new MergeOptions { Method = MergeMethod.Average, Weights = weights }, data);

    /// <summary>The scores of the uniform average of <paramref name="members"/> (indices into the set).</summary>
    public FloatMatrix UniformScores(IReadOnlyCollection<int> members, Dataset data) =>
        members.Count == 1 ? Scores(members.First(), data) : AverageScores(Indicator(members), data);

    /// <summary>The scores of any merge of the whole set (task arithmetic, TIES, DARE, Fisher...).</summary>
    public FloatMatrix MergeScores(MergeOptions options, Dataset data)
    {
        ArgumentNullException.ThrowIfNull(options);
        return Cached(options.Describe(), data, () =>
        {
            using var scorer = OnnxScorer.FromBytes(Merge(options), options.Describe(), _scoring);
            return scorer.Run(data, scorer.OutputNames.Contains(Output) ? Output : scorer.OutputNames[0]);
        });
    }

    /// <summary>The merged model as an embedded ONNX file in memory.</summary>
    public byte[] Merge(MergeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!options.RequiresFisher)
        {
            return ModelMerger.MergeToBytes(_models.Plan, options);
        }

        if (_fisherFiles is null)
        {
            throw new RecyclingException("Fisher merging needs one Fisher file per model");
        }

        using var fishers = FisherSet.Open(_fisherFiles, _models.Inputs);
        return ModelMerger.MergeToBytes(_models.Plan, options, fishers);
    }

    /// <summary>Accuracy and loss of ingredient <paramref name="index"/>.</summary>
    public ClassificationMetrics Evaluate(int index, Dataset data) => ClassificationMetrics.FromLogits(Scores(index, data), data);

    public ClassificationMetrics EvaluateUniform(IReadOnlyCollection<int> members, Dataset data) => ClassificationMetrics.FromLogits(UniformScores(members, data), data);

    public ClassificationMetrics EvaluateMerge(MergeOptions options, Dataset data) => ClassificationMetrics.FromLogits(MergeScores(options, data), data);

    /// <summary>The output-probability ensemble of <paramref name="members"/>: the mean of their softmax outputs (N× the inference cost).</summary>
    public ClassificationMetrics EvaluateEnsemble(IReadOnlyCollection<int> members, Dataset data)
    {
        ArgumentNullException.ThrowIfNull(members);
        ArgumentNullException.ThrowIfNull(data);
        double[]? sum = null;
        int columns = 0;
        foreach (var m in members)
        {
            var p = Scores(m, data).Softmax();
            columns = p.Columns;
            sum ??= new double[p.Data.Length];
            for (int i = 0; i < sum.Length; i++)
            {
                sum[i] += p.Data[i];
            }
        }

        if (sum is null)
        {
            throw new RecyclingException("an ensemble needs at least one model");
        }

        var mean = sum.Select(v => (float)(v / members.Count)).ToArray();
        return ClassificationMetrics.FromProbabilities(new FloatMatrix(data.Count, columns, mean), data.Labels, data.Domains);
    }

    /// <summary>
    /// Greedy soup over <paramref name="members"/> (default: all): sort by val accuracy (descending, input order on
    /// ties), start from the best, try each other ingredient once, keep it if the uniform average of the soup with it
    /// scores strictly higher (<see cref="GreedyRule.Strict"/>) or no lower (<see cref="GreedyRule.AllowTies"/>) on val.
    /// </summary>
    public GreedySoupResult GreedySoup(Dataset validation, GreedyRule rule, IReadOnlyList<int>? members = null, IProgress<int>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(validation);
        var pool = members ?? [.. Enumerable.Range(0, Count)];
        if (pool.Count == 0)
        {
            throw new RecyclingException("a greedy soup needs at least one ingredient");
        }

        var individual = pool.ToDictionary(i => i, i => Evaluate(i, validation).Accuracy);
        var order = pool.Select((index, position) => (index, position)).OrderByDescending(x => individual[x.index]).ThenBy(x => x.position).Select(x => x.index).ToList();
        var soup = new List<int> { order[0] };
        double current = individual[order[0]];
        var steps = new List<SoupStep> { new(Names[order[0]], current, true) };
        progress?.Report(1);
        foreach (var candidate in order.Skip(1))
        {
            double accuracy = EvaluateUniform([.. soup, candidate], validation).Accuracy;
            bool accept = rule == GreedyRule.Strict ? accuracy > current : accuracy >= current;
            steps.Add(new SoupStep(Names[candidate], accuracy, accept));
            if (accept)
            {
                soup.Add(candidate);
                current = accuracy;
            }

            progress?.Report(steps.Count);
        }

        return new GreedySoupResult(rule, [.. order.Select(i => Names[i])], [.. order.Select(i => individual[i])], steps, [.. soup.Select(i => Names[i])], current)
        {
            AcceptedIndices = soup,
        };
    }

    public int IndexOf(string name)
    {
        int index = Names.ToList().IndexOf(name);
        return index >= 0 ? index : throw new RecyclingException($"no model named '{name}' in the set ({string.Join(", ", Names)})");
    }

    private double[] Indicator(IReadOnlyCollection<int> members)
    {
        if (members.Count == 0 || members.Any(m => m < 0 || m >= Count))
        {
            throw new RecyclingException($"members must be indices 0..{Count - 1} (got {string.Join(",", members)})");
        }

        var weights = new double[Count];
        foreach (var m in members)
        {
            weights[m] = 1;
        }

        return weights;
    }

    private FloatMatrix Cached(string key, Dataset data, Func<FloatMatrix> compute)
    {
        var full = string.Create(CultureInfo.InvariantCulture, $"{key}|{data.Name}|{data.Count}");
        if (!_cache.TryGetValue(full, out var scores))
        {
            scores = compute();
            _cache[full] = scores;
        }

        return scores;
    }

    public void Dispose() => _models.Dispose();
}
