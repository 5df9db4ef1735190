using System.Reflection;
using System.Text;

namespace Recycling.Tests.PublicApi;

/// <summary>
/// The public API of each package, written as text and compared with the reviewed snapshot beside this file
/// (Recycling.Tests/PublicApi/&lt;assembly&gt;.txt), so every change to it shows up in review. After an intended change,
/// regenerate the snapshots with: RECYCLING_UPDATE_API=1 dotnet test Recycling.Tests --filter "FullyQualifiedName~PublicApiTests"
/// </summary>
[TestClass]
public sealed class PublicApiTests
{
    [TestMethod]
    [DataRow("Recycling.Onnx")]
    [DataRow("Recycling.MLNet")]
    [DataRow("Recycling.Training")]
    // Each new packable library adds its row (its assembly must be referenced by this project).
    public void PublicApiMatchesTheSnapshot(string assemblyName)
    {
        var actual = Describe(Assembly.Load(assemblyName));
        var snapshot = Path.Combine(Zoo.ZooPaths.RepositoryRoot, "Recycling.Tests", "PublicApi", assemblyName + ".txt");
        if (Environment.GetEnvironmentVariable("RECYCLING_UPDATE_API") == "1")
        {
            File.WriteAllText(snapshot, actual);
            return;
        }

        Assert.IsTrue(File.Exists(snapshot), $"no snapshot {snapshot}: run with RECYCLING_UPDATE_API=1 to write it");
        var expected = File.ReadAllText(snapshot).ReplaceLineEndings("\n");
        if (expected != actual)
        {
            var expectedLines = expected.Split('\n').ToHashSet();
            var actualLines = actual.Split('\n').ToHashSet();
            var added = actualLines.Where(l => !expectedLines.Contains(l)).Select(l => "+ " + l);
            var removed = expectedLines.Where(l => !actualLines.Contains(l)).Select(l => "- " + l);
            Assert.Fail($"the public API of {assemblyName} changed; review it, then regenerate the snapshot " +
                $"(RECYCLING_UPDATE_API=1 dotnet test Recycling.Tests --filter \"FullyQualifiedName~PublicApiTests\"):\n{string.Join('\n', removed.Concat(added))}");
        }
    }

    /// <summary>Every public type and its public and protected members, one line each, sorted.</summary>
    internal static string Describe(Assembly assembly)
    {
        var text = new StringBuilder();
        foreach (var type in assembly.GetExportedTypes().OrderBy(t => t.FullName, StringComparer.Ordinal))
        {
            text.Append(TypeLine(type)).Append('\n');
            const BindingFlags flags = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
            var members = type.GetMembers(flags)
                .Where(IsVisible)
                .Where(m => m is not MethodInfo { IsSpecialName: true } || m.Name.StartsWith("op_", StringComparison.Ordinal))
                .Where(m => !type.IsEnum || m is FieldInfo { IsStatic: true })
                .Select(MemberLine)
                .Order(StringComparer.Ordinal);
            foreach (var member in members)
            {
                text.Append("  ").Append(member).Append('\n');
            }
        }

        return text.ToString();
    }

    private static bool IsVisible(MemberInfo member) => member switch
    {
        MethodBase m => m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly,
        FieldInfo f => f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly,
        PropertyInfo p => p.GetAccessors(nonPublic: true).Any(IsVisible),
        EventInfo e => e.AddMethod is { } add && IsVisible(add),
        Type t => t.IsNestedPublic || t.IsNestedFamily,
        _ => false,
    };

    private static string TypeLine(Type type)
    {
        string kind = type.IsEnum ? "enum" : type.IsInterface ? "interface" : type.IsValueType ? "struct"
            : typeof(Delegate).IsAssignableFrom(type) ? "delegate"
            : type.IsAbstract && type.IsSealed ? "static class" : type.IsAbstract ? "abstract class" : type.IsSealed ? "sealed class" : "class";
        var bases = new List<string>();
        if (type.BaseType is { } b && b != typeof(object) && b != typeof(ValueType) && b != typeof(Enum) && !typeof(Delegate).IsAssignableFrom(type))
        {
            bases.Add(Name(b));
        }

        bases.AddRange(type.GetInterfaces().Select(Name).Order(StringComparer.Ordinal));
        return $"{kind} {Name(type)}{(bases.Count > 0 ? " : " + string.Join(", ", bases) : "")}";
    }

    private static string MemberLine(MemberInfo member) => member switch
    {
        ConstructorInfo c => $"{Static(c)}ctor({Parameters(c)})",
        MethodInfo m => $"{Static(m)}{Name(m.ReturnType)} {m.Name}{Generics(m)}({Parameters(m)})",
        PropertyInfo p => $"{(p.GetAccessors(true).Any(a => a.IsStatic) ? "static " : "")}{Name(p.PropertyType)} {p.Name}{Indexer(p)} {{ {Accessors(p)}}}",
        FieldInfo f when f.IsLiteral && f.DeclaringType!.IsEnum => $"{f.Name} = {Convert.ToInt64(f.GetRawConstantValue(), System.Globalization.CultureInfo.InvariantCulture)}",
        FieldInfo f => $"{(f.IsLiteral ? "const " : f.IsStatic ? "static " : "")}{(f.IsInitOnly ? "readonly " : "")}{Name(f.FieldType)} {f.Name}{(f.IsLiteral ? $" = {f.GetRawConstantValue()}" : "")}",
        EventInfo e => $"event {Name(e.EventHandlerType!)} {e.Name}",
        Type t => $"nested {TypeLine(t)}",
        _ => member.ToString()!,
    };

    private static string Static(MethodBase m) => m.IsStatic ? "static " : m.IsAbstract ? "abstract " : m.IsVirtual && !m.IsFinal ? "virtual " : "";

    private static string Generics(MethodInfo m) => m.IsGenericMethod ? $"<{string.Join(", ", m.GetGenericArguments().Select(Name))}>" : "";

    private static string Indexer(PropertyInfo p) => p.GetIndexParameters() is { Length: > 0 } ps ? $"[{string.Join(", ", ps.Select(x => Name(x.ParameterType)))}]" : "";

    private static string Accessors(PropertyInfo p)
    {
        var text = new StringBuilder();
        if (p.GetMethod is { } get && IsVisible(get))
        {
            text.Append("get; ");
        }

        if (p.SetMethod is { } set && IsVisible(set))
        {
            bool init = set.ReturnParameter.GetRequiredCustomModifiers().Any(t => t.FullName == "System.Runtime.CompilerServices.IsExternalInit");
            text.Append(init ? "init; " : "set; ");
        }

        return text.ToString();
    }

    private static string Parameters(MethodBase m) => string.Join(", ", m.GetParameters().Select(p =>
        $"{(p.IsOut ? "out " : p.ParameterType.IsByRef ? "ref " : "")}{Name(p.ParameterType)} {p.Name}{(p.HasDefaultValue ? " = " + (p.DefaultValue ?? "null") : "")}"));

    private static string Name(Type type)
    {
        if (type.IsByRef)
        {
            return Name(type.GetElementType()!);
        }

        if (type.IsArray)
        {
            return Name(type.GetElementType()!) + "[" + new string(',', type.GetArrayRank() - 1) + "]";
        }

        if (type.IsPointer)
        {
            return Name(type.GetElementType()!) + "*";
        }

        if (type.IsGenericParameter)
        {
            return type.Name;
        }

        if (Nullable.GetUnderlyingType(type) is { } underlying)
        {
            return Name(underlying) + "?";
        }

        var name = (type.IsNested ? Name(type.DeclaringType!) + "." : type.Namespace is { Length: > 0 } ns ? ns + "." : "") + type.Name;
        int tick = name.LastIndexOf('`');
        if (type.IsGenericType && tick >= 0)
        {
            name = name[..tick] + "<" + string.Join(", ", type.GetGenericArguments().Select(Name)) + ">";
        }

        return name;
    }
}
