using System.Collections.Concurrent;
using System.Text;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// The registry of merge methods: every <see cref="MergeMethodDefinition"/> subclass of this assembly (found by
/// reflection, so a method is one file), plus any <see cref="Register"/>ed. Names ignore case and '-' vs '_'.
/// </summary>
internal static class MergeMethods
{
    private static readonly ConcurrentDictionary<string, MergeMethodDefinition> Extra = new();

    private static readonly Lazy<MergeMethodDefinition[]> BuiltIn = new(() =>
        [.. typeof(MergeMethods).Assembly.GetTypes()
            .Where(t => t.IsSubclassOf(typeof(MergeMethodDefinition)) && !t.IsAbstract && t.GetConstructor(Type.EmptyTypes) is not null)
            .Select(t => (MergeMethodDefinition)Activator.CreateInstance(t)!)
            .OrderBy(m => m.Name, StringComparer.Ordinal)]);

    /// <summary>mergekit methods we refuse, with why.</summary>
    private static readonly Dictionary<string, string> Refused = new(StringComparer.Ordinal)
    {
        ["passthrough"] = "passthrough stacks layers (a different graph), which an ONNX merge of same-shaped models cannot do",
    };

    /// <summary>Every method, by name.</summary>
    public static IReadOnlyList<MergeMethodDefinition> All => [.. BuiltIn.Value.Concat(Extra.Values).OrderBy(m => m.Name, StringComparer.Ordinal)];

    /// <summary>Adds a method defined elsewhere (a plug-in, a test); its name and aliases must be new.</summary>
    public static void Register(MergeMethodDefinition method)
    {
        ArgumentNullException.ThrowIfNull(method);
        foreach (var name in method.Aliases.Prepend(method.Name))
        {
            if (TryFind(name) is { } existing && existing != method)
            {
                throw new ArgumentException($"merge method name {name} is taken by {existing.Name}", nameof(method));
            }
        }

        Extra[method.Name] = method;
    }

    /// <summary>The method named <paramref name="name"/> (or one of its aliases), or null.</summary>
    public static MergeMethodDefinition? TryFind(string name)
    {
        var key = Normalise(name);
        return All.FirstOrDefault(m => m.Aliases.Prepend(m.Name).Any(n => Normalise(n) == key));
    }

    /// <summary>The method named <paramref name="name"/>; a <see cref="RecyclingException"/> listing the methods otherwise.</summary>
    public static MergeMethodDefinition Find(string name)
    {
        if (TryFind(name) is { } method)
        {
            return method;
        }

        if (Refused.TryGetValue(Normalise(name), out var why))
        {
            throw new RecyclingException($"merge method {name}: {why}.");
        }

        throw new RecyclingException($"unknown merge method {MessageText.Path(name)}: use {string.Join(", ", All.Select(m => m.Name))}");
    }

    /// <summary>The --help table: each method, its aliases, formula and parameters.</summary>
    public static string Help()
    {
        var text = new StringBuilder();
        foreach (var m in All)
        {
            text.Append("  ").Append(m.Name.PadRight(17)).Append(m.Formula);
            if (m.Aliases.Count > 0)
            {
                text.Append(" (also ").Append(string.Join(", ", m.Aliases)).Append(')');
            }

            text.AppendLine();
            var parameters = m.Parameters.Where(p => p != CommonParameters.Int8Mask).ToList();
            if (parameters.Count > 0)
            {
                text.Append(' ', 19).Append(string.Join("; ", parameters.Select(p => $"{p.Name}{(p.PerModel ? "*" : "")} {p.Format(p.Default)}"))).AppendLine();
            }
        }

        return text.ToString();
    }

    private static string Normalise(string name) => name.Trim().ToLowerInvariant().Replace('-', '_');
}
