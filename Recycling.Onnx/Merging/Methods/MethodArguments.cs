using System.Globalization;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// A method's parameter values for one merge, checked against its declarations: for model i, a value given for that
/// model wins, then the global value, then the method's default (mergekit's resolution order).
/// </summary>
internal sealed class MethodArguments
{
    private readonly Dictionary<string, double> _global;
    private readonly Dictionary<string, double>[] _perModel;

    public MethodArguments(MergeMethodDefinition method, int inputCount, IReadOnlyDictionary<string, double>? global = null,
        IReadOnlyList<IReadOnlyDictionary<string, double>?>? perModel = null)
    {
        ArgumentNullException.ThrowIfNull(method);
        Method = method;
        InputCount = inputCount;
        _global = new(StringComparer.Ordinal);
        foreach (var (name, value) in global ?? new Dictionary<string, double>())
        {
            var parameter = Find(name);
            parameter.Check(value, Method.Name);
            _global[parameter.Name] = value;
        }

        if (perModel is not null && perModel.Count != inputCount)
        {
            throw new RecyclingException($"{Method.Name}: per-model parameters given for {perModel.Count} models, but {inputCount} are merged.");
        }

        _perModel = new Dictionary<string, double>[inputCount];
        for (int i = 0; i < inputCount; i++)
        {
            _perModel[i] = new(StringComparer.Ordinal);
            foreach (var (name, value) in perModel?[i] ?? new Dictionary<string, double>())
            {
                var parameter = Find(name);
                if (!parameter.PerModel)
                {
                    throw new RecyclingException($"{Method.Name}: {parameter.Name} is one value for the whole merge, not per model (model {i + 1}).");
                }

                parameter.Check(value, $"{Method.Name}, model {i + 1}");
                _perModel[i][parameter.Name] = value;
            }
        }
    }

    public MergeMethodDefinition Method { get; }

    public int InputCount { get; }

    /// <summary>The global value of <paramref name="name"/> (given, else the default).</summary>
    public double this[string name] => _global.TryGetValue(name, out var v) ? v : Find(name).Default;

    /// <summary>Model <paramref name="model"/>'s value of <paramref name="name"/>.</summary>
    public double Get(string name, int model) => _perModel[model].TryGetValue(name, out var v) ? v : this[name];

    /// <summary>Every model's value of <paramref name="name"/>.</summary>
    public double[] PerModel(string name) => [.. Enumerable.Range(0, InputCount).Select(i => Get(name, i))];

    public bool Flag(string name) => this[name] != 0;

    /// <summary>True when <paramref name="name"/> was given (globally or for some model) rather than defaulted.</summary>
    public bool IsGiven(string name) => _global.ContainsKey(name) || _perModel.Any(m => m.ContainsKey(name));

    /// <summary>
    /// The method and the parameters given or not at their defaults, e.g. "ties (density 0.5,0.2; lambda 0.8)": for
    /// lineage and reports (with the tool version, which fixes the defaults, this reproduces the merge).
    /// </summary>
    public string Describe()
    {
        var parts = new List<string>();
        foreach (var p in Method.Parameters.Where(p => p != CommonParameters.Int8Mask))
        {
            var values = p.PerModel ? PerModel(p.Name) : [this[p.Name]];
            if (!IsGiven(p.Name) && values.All(v => v == p.Default))
            {
                continue;
            }

            var shown = values.Distinct().Count() == 1 ? p.Format(values[0]) : string.Join(",", values.Select(p.Format));
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{p.Name} {shown}"));
        }

        return parts.Count == 0 ? Method.Name : $"{Method.Name} ({string.Join("; ", parts)})";
    }

    private MethodParameter Find(string name) =>
        Method.Parameters.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new RecyclingException(Method.Parameters.Count == 0
            ? $"{Method.Name} takes no parameters; {MessageText.Path(name)} was given."
            : $"{Method.Name} has no parameter {MessageText.Path(name)}; its parameters: {string.Join(", ", Method.Parameters.Select(p => p.Name))}.");
}
