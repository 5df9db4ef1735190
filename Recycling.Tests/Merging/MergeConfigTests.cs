using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

/// <summary>
/// mergekit YAML configs (<see cref="MergeConfig"/>): a config merges exactly as the equivalent options; every bad
/// config is refused with one line naming the file, the line and the key.
/// </summary>
[TestClass]
public sealed class MergeConfigTests
{
    private static readonly string Models = Path.GetFullPath(Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-merge", "cnn", "default"));

    private string _dir = "";

    [TestInitialize]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"recycling-config-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_dir);
        foreach (var name in new[] { "base", "ft1", "ft2", "ft3" })
        {
            File.Copy(Path.Combine(Models, name + ".onnx"), Path.Combine(_dir, name + ".onnx"));
        }
    }

    [TestCleanup]
    public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private string Write(string text, string name = "config.yml")
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    [TestMethod]
    public void ReadsMergekitSchemaRelativeToTheConfigFile()
    {
        var path = Write("""
            # a mergekit TIES config
            models:
              - model: base.onnx
              - model: ft1.onnx
                parameters:
                  density: 0.5
                  weight: 1.0
              - model: ./ft2.onnx
                parameters:
                  density: [{filter: fc, value: 0.9}, {value: 0.3}]
                  weight: 0.5
            merge_method: ties
            base_model: base.onnx
            parameters:
              normalize: true
              int8_mask: true
              lambda: 0.8
            dtype: bfloat16
            tokenizer_source: base
            chat_template: chatml
            """);
        var config = MergeConfig.Load(path);
        Assert.AreEqual("ties", config.Method.Name);
        Assert.AreEqual(Path.Combine(_dir, "base.onnx"), config.BaseModel);
        CollectionAssert.AreEqual(new[] { Path.Combine(_dir, "ft1.onnx"), Path.Combine(_dir, "ft2.onnx") }, config.Models.ToArray());
        Assert.AreEqual("bf16", config.OutputType);
        Assert.IsTrue(config.HasFilters);
        Assert.AreEqual(0.9, config.Arguments("fc.weight").Get("density", 1));
        Assert.AreEqual(0.3, config.Arguments("onnx::Conv_26").Get("density", 1));
        Assert.AreEqual(0.5, config.Arguments("onnx::Conv_26").Get("density", 0));
        Assert.AreEqual(0.8, config.Arguments()["lambda"]);
        Assert.IsTrue(config.Notes.Any(n => n.Contains("tokenizer_source", StringComparison.Ordinal)), string.Join("\n", config.Notes));
        Assert.IsTrue(config.Notes.Any(n => n.Contains("chat_template", StringComparison.Ordinal)), string.Join("\n", config.Notes));
    }

    [TestMethod]
    public void ConfigMergeEqualsTheEquivalentOptions()
    {
        var path = Write("""
            merge_method: dare_linear
            base_model: base.onnx
            models:
              - model: ft1.onnx
                parameters: {weight: 0.6, density: 0.4}
              - model: ft2.onnx
                parameters: {weight: 0.3, density: 0.7}
            parameters: {seed: 11, lambda: 0.9}
            """);
        var fromConfig = Path.Combine(_dir, "config.onnx");
        var fromOptions = Path.Combine(_dir, "options.onnx");
        ModelMerger.Merge(MergeConfig.Load(path).Request(fromConfig) with { ExternalData = ExternalDataMode.Embedded });
        ModelMerger.Merge(new MergeRequest
        {
            Inputs = [Path.Combine(_dir, "ft1.onnx"), Path.Combine(_dir, "ft2.onnx")],
            Base = Path.Combine(_dir, "base.onnx"),
            Output = fromOptions,
            ExternalData = ExternalDataMode.Embedded,
            Options = new MergeOptions
            {
                MethodName = "dare_linear",
                Parameters = new Dictionary<string, double> { ["seed"] = 11, ["lambda"] = 0.9 },
                ModelParameters = [new Dictionary<string, double> { ["weight"] = 0.6, ["density"] = 0.4 }, new Dictionary<string, double> { ["weight"] = 0.3, ["density"] = 0.7 }],
            },
        });
        using var a = OnnxModel.Open(fromConfig);
        using var b = OnnxModel.Open(fromOptions);
        foreach (var tensor in a.Tensors.Where(t => t.DataType == OnnxDataType.Float))
        {
            var other = b.Tensors.Single(t => t.Name == tensor.Name && t.Path == tensor.Path);
            CollectionAssert.AreEqual(other.ReadFloat32(), tensor.ReadFloat32(), tensor.Name);
        }
    }

    [TestMethod]
    public void BaseListedAmongModelsIsTheBaseAndABaseForAnAverageIsOneMoreInput()
    {
        var slerp = MergeConfig.Load(Write("""
            merge_method: slerp
            base_model: base.onnx
            models: [{model: base.onnx}, {model: ft1.onnx}]
            parameters: {t: 0.3}
            """));
        CollectionAssert.AreEqual(new[] { Path.Combine(_dir, "ft1.onnx") }, slerp.Models.ToArray());
        Assert.AreEqual(Path.Combine(_dir, "base.onnx"), slerp.BaseModel);

        var linear = MergeConfig.Load(Write("""
            merge_method: linear
            base_model: base.onnx
            models: [{model: ft1.onnx}, {model: ft2.onnx}]
            """, "linear.yml"));
        Assert.HasCount(3, linear.Models);
        Assert.IsNull(linear.BaseModel);
        Assert.IsTrue(linear.Notes.Any(n => n.Contains("one more model", StringComparison.Ordinal)));
    }

    /// <summary>Each bad config: (text, the line the error must name, a fragment naming the key or problem).</summary>
    public static IEnumerable<object[]> BadConfigs() =>
    [
        ["merge_method: ties\nbase_model: base.onnx\nmodels:\n  - model: ft1.onnx\n    parameters:\n      densty: 0.5\n", 6, "densty"],
        ["merge_method: ties\nbase_model: base.onnx\nmodels:\n  - model: ft1.onnx\n    parameters:\n      density: 1.5\n", 6, "density"],
        ["merge_method: ties\nbase_model: base.onnx\nmodels:\n  - model: missing.onnx\n", 4, "missing.onnx"],
        ["merge_method: frankenmerge\nmodels:\n  - model: ft1.onnx\n", 1, "frankenmerge"],
        ["merge_method: passthrough\nmodels:\n  - model: ft1.onnx\n", 1, "passthrough"],
        ["merge_method: linear\nslices:\n  - sources:\n      - model: ft1.onnx\n        layer_range: [0, 4]\n", 2, "slices"],
        ["merge_method: linear\nmodels:\n  - model: ft1.onnx\nparamters:\n  weight: 1\n", 4, "paramters"],
        ["merge_method: ties\nbase_model: base.onnx\nmodels:\n  - model: ft1.onnx\n    parameters:\n      density: [0.1, 0.5, 0.9]\n", 6, "gradient"],
        ["merge_method: ties\nbase_model: base.onnx\nmodels:\n  - model: ft1.onnx\n    parameters:\n      lambda: 0.5\n", 6, "lambda"],
        ["merge_method: ties\nmodels:\n  - model: ft1.onnx\n", 1, "base_model"],
        ["merge_method: nearswap\nbase_model: base.onnx\nmodels:\n  - model: ft1.onnx\n", 1, "t"],
        ["merge_method: nuslerp\nmodels:\n  - model: ft1.onnx\n  - model: ft2.onnx\n  - model: ft3.onnx\n", 1, "nuslerp"],
        ["merge_method: linear\nmodels:\n  - model: ft1.onnx\n    weight: 2\n", 4, "weight"],
        ["merge_method: linear\nmodels:\n  - model: ft1.onnx\ndtype: int8\n", 4, "dtype"],
        ["merge_method: linear\nmodels: [ft1.onnx\n", 3, "YAML"], // the parser notices at the end of the input
        ["merge_method: della\nbase_model: base.onnx\nmodels:\n  - model: ft1.onnx\n    parameters: {density: 0.9, epsilon: 0.2}\n", 1, "epsilon"],
        ["- merge_method: linear\n", 1, "mapping"],
        ["merge_method: linear\nmodels:\n  - model: ft1.onnx\n    parameters:\n      weight: [{filter: fc}]\n", 5, "value"],
        ["merge_method: linear\nmodels:\n  - parameters: {weight: 1}\n", 3, "model"],
        ["merge_method: [linear]\nmodels:\n  - model: ft1.onnx\n", 1, "merge_method"],
        ["models:\n  - model: ft1.onnx\n", 1, "merge_method"],
        ["merge_method: linear\nmodels:\n  - model: ft1.onnx\n    parameters: {weight: lots}\n", 4, "weight"],
        ["merge_method: linear\nmodels:\n  - model: .\n", 3, "folder"],
        ["merge_method: linear\nmodels:\n  - model: ft1.onnx+adapter\n", 3, "LoRA"],
    ];

    [TestMethod]
    [DynamicData(nameof(BadConfigs))]
    public void BadConfigIsOneLineNamingFileLineAndKey(string text, int line, string fragment)
    {
        var path = Write(text, "bad 'config'.yml");
        var e = Assert.ThrowsExactly<RecyclingException>(() => MergeConfig.Load(path));
        Assert.DoesNotContain("\n", e.Message, e.Message);
        StringAssert.Contains(e.Message, $"{MessageText.Path(path)}:{line}:", e.Message);
        StringAssert.Contains(e.Message, fragment, e.Message);
    }

    [TestMethod]
    public void RefusesFilesThatAreNotConfigs()
    {
        var missing = Path.Combine(_dir, "none.yml");
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => MergeConfig.Load(missing)).Message, "not found");
        var large = Write(new string('#', MergeConfig.MaxBytes + 1), "large.yml");
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => MergeConfig.Load(large)).Message, "too large");
        var two = Write("merge_method: linear\n---\nmerge_method: ties\n", "two.yml");
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => MergeConfig.Load(two)).Message, "one YAML document");
        var deep = Write("merge_method: linear\nmodels: " + new string('[', 300_000) + new string(']', 300_000) + "\n", "deep.yml");
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => MergeConfig.Load(deep)).Message, "deep.yml:2: brackets nested deeper than 64");
        var apostrophe = Write("merge_method: linear\nmodels: [it's, " + new string('[', 300_000) + new string(']', 300_000) + "]\n", "apostrophe.yml");
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => MergeConfig.Load(apostrophe)).Message, "nested deeper");
        var quoted = Write("merge_method: linear\nmodels:\n  - model: ft1.onnx # ]]]] [[[[\n    parameters: {weight: [{filter: '[[[[{{{{', value: 2}]}\n", "quoted.yml");
        Assert.AreEqual(1, MergeConfig.Load(quoted).Models.Count);
        var empty = Write("# nothing\n", "empty.yml");
        StringAssert.Contains(Assert.ThrowsExactly<RecyclingException>(() => MergeConfig.Load(empty)).Message, "empty");
    }
}
