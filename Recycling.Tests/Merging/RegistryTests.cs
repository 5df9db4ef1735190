using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;

namespace Recycling.Tests.Merging;

/// <summary>The method registry: names, parameters, and that a new method is one class.</summary>
[TestClass]
public sealed class RegistryTests
{
    private static readonly string Root = Path.Combine(global::Recycling.Tests.Fixtures.Root, "torch-merge");

    private static string Fixture(string arch, string role) => Path.GetFullPath(Path.Combine(Root, arch, "default", role + ".onnx"));

    [TestMethod]
    public void MergekitNamesAndOurAliasesFindTheSameMethods()
    {
        foreach (var name in new[] { "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp", "model_stock", "fisher" })
        {
            Assert.AreEqual(name, MergeMethods.Find(name).Name);
        }

        Assert.AreEqual("linear", MergeMethods.Find("average").Name);
        Assert.AreEqual("task_arithmetic", MergeMethods.Find("Task-Arithmetic").Name);
        Assert.AreEqual("dare_linear", MergeMethods.Find("dare").Name);
        Assert.AreEqual("dare_ties", MergeMethods.Find("dare-ties").Name);
        Assert.AreEqual("model_stock", MergeMethods.Find("model-stock").Name);
        var unknown = Assert.ThrowsExactly<RecyclingException>(() => MergeMethods.Find("frankenmerge"));
        StringAssert.Contains(unknown.Message, "task_arithmetic");
        var passthrough = Assert.ThrowsExactly<RecyclingException>(() => MergeMethods.Find("passthrough"));
        StringAssert.Contains(passthrough.Message, "stacks layers");
        var names = MergeMethods.All.SelectMany(m => m.Aliases.Prepend(m.Name)).Select(n => n.Replace('-', '_').ToLowerInvariant()).ToList();
        Assert.HasCount(names.Distinct().Count(), names, "every name and alias is unique");
    }

    [TestMethod]
    public void ParametersAreCheckedAgainstTheirDeclarations()
    {
        var ties = MergeMethods.Find("ties");
        var range = Assert.ThrowsExactly<RecyclingException>(() => new MethodArguments(ties, 2, new Dictionary<string, double> { ["density"] = 1.5 }));
        StringAssert.Contains(range.Message, "density must be in [0, 1], not 1.5");
        var unknown = Assert.ThrowsExactly<RecyclingException>(() => new MethodArguments(ties, 2, new Dictionary<string, double> { ["gamma"] = 0.1 }));
        StringAssert.Contains(unknown.Message, "ties has no parameter");
        var global = Assert.ThrowsExactly<RecyclingException>(() => new MethodArguments(ties, 2, null,
            [new Dictionary<string, double> { ["lambda"] = 2 }, null]));
        StringAssert.Contains(global.Message, "lambda is one value for the whole merge");

        var arguments = new MethodArguments(ties, 3, new Dictionary<string, double> { ["density"] = 0.4 },
            [new Dictionary<string, double> { ["density"] = 0.7, ["weight"] = 2 }, null, null]);
        CollectionAssert.AreEqual(new[] { 0.7, 0.4, 0.4 }, arguments.PerModel("density"), "per model, then global");
        CollectionAssert.AreEqual(new[] { 2.0, 1, 1 }, arguments.PerModel("weight"), "then the default");
        Assert.IsTrue(arguments.Flag("normalize"), "mergekit's TIES normalises by default");
        Assert.AreEqual("ties (weight 2,1,1; density 0.7,0.4,0.4)", arguments.Describe());
        Assert.AreEqual(RescaleModes.Inverse, CommonParameters.Rescale.Parse("inverse", "test"));
        Assert.AreEqual(RescaleModes.L1, CommonParameters.Rescale.Parse("true", "test"));
        Assert.AreEqual(RescaleModes.L1, MergeMethods.Find("dare_ties").Parameters.Single(p => p.Name == "rescale").Default, "mergekit rescales DARE to the L1 norm");
    }

    /// <summary>
    /// A seed is declared where a sparsifier draws random masks (DARE, DELLA) and nowhere else: breadcrumbs' cuts are
    /// deterministic (as mergekit's, which has no seed), so a seed given to it is refused as any undeclared parameter is.
    /// </summary>
    [TestMethod]
    public void OnlyRandomSparsifiersTakeASeed()
    {
        foreach (var name in new[] { "breadcrumbs", "breadcrumbs_ties", "ties", "task_arithmetic" })
        {
            Assert.IsFalse(MergeMethods.Find(name).Parameters.Any(p => p.Name == "seed"), name);
        }

        foreach (var name in new[] { "dare_linear", "dare_ties", "della", "della_linear" })
        {
            Assert.IsTrue(MergeMethods.Find(name).Parameters.Any(p => p.Name == "seed"), name);
        }

        var seeded = Assert.ThrowsExactly<RecyclingException>(() => new MethodArguments(MergeMethods.Find("breadcrumbs"), 2, new Dictionary<string, double> { ["seed"] = 3 }));
        StringAssert.Contains(seeded.Message, "breadcrumbs has no parameter");
        StringAssert.Contains(seeded.Message, "seed");
        var config = $"merge_method: breadcrumbs_ties\nbase_model: {Fixture("mlp", "base")}\nmodels:\n  - model: {Fixture("mlp", "ft1")}\n  - model: {Fixture("mlp", "ft2")}\nparameters:\n  seed: 3\n";
        var yaml = Assert.ThrowsExactly<RecyclingException>(() => MergeConfig.Parse(config, "crumbs.yaml"));
        StringAssert.Contains(yaml.Message, "crumbs.yaml");
        StringAssert.Contains(yaml.Message, "breadcrumbs_ties has no parameter");
    }

    /// <summary>A method written in this test assembly alone: the one class a new elementwise method needs.</summary>
    private sealed class Midrange : MergeMethodDefinition
    {
        public override string Name => "test_midrange";

        public override string Formula => "θ = (min θᵢ + max θᵢ) / 2 + offset";

        public override IReadOnlyList<MethodParameter> Parameters => [new("offset", 0, "added to every value")];

        internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) => new Run((float)arguments["offset"]);

        private sealed class Run(float offset) : ChunkwiseMethod
        {
            protected override void MergeChunk(TensorInfo tensor, long offset1, float[][] inputs, ReadOnlySpan<float> baseline, Span<float> output)
            {
                for (int e = 0; e < output.Length; e++)
                {
                    float low = inputs[0][e], high = low;
                    foreach (float[] x in inputs)
                    {
                        low = MathF.Min(low, x[e]);
                        high = MathF.Max(high, x[e]);
                    }

                    output[e] = ((low + high) / 2) + offset;
                }
            }
        }
    }

    [TestMethod]
    public void AMethodDefinedInOneClassMergesRealExportsEndToEnd()
    {
        if (MergeMethods.TryFind("test_midrange") is null)
        {
            MergeMethods.Register(new Midrange());
        }

        var inputs = new[] { Fixture("mlp", "ft1"), Fixture("mlp", "ft2"), Fixture("mlp", "ft3") };
        var folder = Directory.CreateTempSubdirectory("recycling-registry-").FullName;
        try
        {
            var output = Path.Combine(folder, "midrange.onnx");
            ModelMerger.Merge(new MergeRequest
            {
                Inputs = inputs,
                Output = output,
                Options = new MergeOptions { MethodName = "test-midrange", Parameters = new Dictionary<string, double> { ["offset"] = 0.25 } },
            });
            using var merged = OnnxModel.Open(output);
            StringAssert.Contains(merged.Metadata["recycling.method"], "test_midrange (offset 0.25)");
            var models = inputs.Select(OnnxModel.Open).ToList();
            try
            {
                int compared = 0;
                // Exports name some tensors differently; alignment pairs them by structure.
                foreach (var p in Recycling.Onnx.Alignment.Aligner.Align(models, null, Recycling.Onnx.Alignment.HeadPolicy.Error).Parameters.Where(p => p.IsFloat))
                {
                    var values = p.Tensors.Select(t => t.ReadFloat32()).ToList();
                    var actual = merged.Tensors.Single(t => t.Name == p.Tensors[0].Name).ReadFloat32();
                    for (int e = 0; e < actual.Length; e++)
                    {
                        float expected = ((values.Min(v => v[e]) + values.Max(v => v[e])) / 2) + 0.25f;
                        Assert.AreEqual(expected, actual[e], $"{p.Tensors[0].Name}[{e}]");
                        compared++;
                    }
                }

                Assert.IsGreaterThan(1000, compared);
            }
            finally
            {
                models.ForEach(m => m.Dispose());
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
