using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Onnx.Proto;
using Recycling.Training;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Bench;

/// <summary>A benchmark model: the ONNX file, how `recycle finetune` would prepare it, and the batch it trains on.</summary>
internal sealed record TrainSpeedModel(string Name, string Arch, string Path, int[] SampleShape, HeadSpec? Head, ImagePreprocessing? Preprocessing, BatchNormMode BatchNorm)
{
    private const string ResNet18Cut = "ReLU393_Output_0";

    /// <summary>The zoo CNN and ViT (28×28 grey) and CNTK's ResNet18 at 64×64×3 cut at its last ReLU with a new 10-way head.</summary>
    public static IReadOnlyList<TrainSpeedModel> All(string repository, string? resnet18) =>
    [
        new("cnn", "cnn", System.IO.Path.Combine(repository, "models", "cnn_base.onnx"), [1, 28, 28], null, null, BatchNormMode.Train),
        new("vit", "vit", System.IO.Path.Combine(repository, "models", "vit_base.onnx"), [1, 28, 28], null, null, BatchNormMode.Train),
        new("resnet18", "resnet18", resnet18 ?? DefaultResNet18(), [3, 64, 64], new HeadSpec { Classes = 10, At = ResNet18Cut, Init = HeadInit.Random },
            ImagePreprocessing.Parse("64x64", null, null), BatchNormMode.Train),
    ];

    /// <summary>`recycle zoo fetch resnet18`'s cached file, else the NuGet package's (the tests' PackageReference restores it).</summary>
    private static string DefaultResNet18()
    {
        var fetched = System.IO.Path.Combine(FoundationModels.DefaultCache, "resnet18", "model.onnx");
        var packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p : System.IO.Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var packaged = System.IO.Path.Combine(packages, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.23.1", "tools", "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");
        return File.Exists(fetched) ? fetched : packaged;
    }

    /// <summary>The same random batch every implementation trains on: inputs in the model's range, labels 0..9.</summary>
    public (Tensor Input, Tensor Labels) MakeBatch(int batchSize)
    {
        using var generator = new Generator(0);
        var input = rand([batchSize, .. SampleShape.Select(d => (long)d)], generator: generator);
        if (Arch == "resnet18")
        {
            // The CNTK model's own input convention: 255·x − 114.5 per channel.
            input = (input * 255) - 114.5;
        }

        return (input, randint(0, 10, [batchSize], generator: generator));
    }

    /// <summary>The model as `recycle finetune` runs it: prepared (head, dynamic batch, sample size), compiled (<paramref name="fuse"/>
    /// false: without node fusions), the head initialised.</summary>
    public Prepared Prepare(int batchSize, bool fuse = true)
    {
        var original = OnnxModel.Open(Path);
        try
        {
            var (input, _) = MakeBatch(batchSize);
            using var sample = input;
            var data = new Dataset(Name, new float[SampleShape.Aggregate(1, (a, d) => a * d) * 2], SampleShape, [0, 1]);
            var preprocessing = PreparedModel.Preprocessing(original, data, Preprocessing);
            var prepared = PreparedModel.Prepare(original, Head, data, preprocessing);
            var program = OnnxProgram.Load(prepared.Model, fuse: fuse);
            if (prepared.Head is not null)
            {
                prepared.InitializeHead(program, BatchFeeder.For(program, original.Path, data, preprocessing), data, Head!.Init, seed: 0);
            }

            return new Prepared(original, prepared, program);
        }
        catch
        {
            original.Dispose();
            throw;
        }
    }

    internal sealed class Prepared(OnnxModel original, PreparedModel prepared, OnnxProgram program) : IDisposable
    {
        public OnnxProgram Program => program;

        public GraphProto Graph => prepared.Model.Proto.Graph;

        public string Input => program.Inputs.Single().Name;

        public void Dispose()
        {
            program.Dispose();
            prepared.Dispose();
            original.Dispose();
        }
    }

    /// <summary>The program's initial tensors under the hand-written modules' names (nn.Linear layout), read from the graph's structure.</summary>
    public Dictionary<string, Tensor> CanonicalWeights(Prepared prepared)
    {
        var graph = prepared.Graph;
        var program = prepared.Program;
        var aliases = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var node in graph.Node.Where(n => n.OpType == "Identity"))
        {
            aliases[node.Output[0]] = aliases.TryGetValue(node.Input[0], out var root) ? root : node.Input[0];
        }

        Tensor Value(string name)
        {
            var root = aliases.TryGetValue(name, out var r) ? r : name;
            return program.Parameters.TryGetValue(root, out var p) ? p : program.Buffers.TryGetValue(root, out var b) ? b
                : throw new InvalidOperationException($"{Path}: '{name}' is not an initializer of the program");
        }

        bool IsInitializer(string name) => program.Parameters.ContainsKey(aliases.GetValueOrDefault(name, name)) || program.Buffers.ContainsKey(aliases.GetValueOrDefault(name, name));

        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var gemm = graph.Node.Single(n => n.OpType == "Gemm");
        if (gemm.Attribute.SingleOrDefault(a => a.Name == "transB")?.I != 1)
        {
            throw new InvalidOperationException($"{Path}: the head Gemm is not in nn.Linear layout (transB=1)");
        }

        (weights["head.weight"], weights["head.bias"]) = (Value(gemm.Input[1]), Value(gemm.Input[2]));
        var convs = graph.Node.Where(n => n.OpType == "Conv").ToList();
        switch (Arch)
        {
            case "cnn":
                for (var k = 0; k < convs.Count; k++)
                {
                    (weights[$"conv{k + 1}.weight"], weights[$"conv{k + 1}.bias"]) = (Value(convs[k].Input[1]), Value(convs[k].Input[2]));
                }

                break;
            case "vit":
                (weights["patch_embed.weight"], weights["patch_embed.bias"]) = (Value(convs[0].Input[1]), Value(convs[0].Input[2]));
                (weights["cls_token"], weights["pos_embed"]) = (Value("cls_token"), Value("pos_embed"));
                string[] norms = ["blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2", "norm"];
                var layerNorms = graph.Node.Where(n => n.OpType == "LayerNormalization").ToList();
                for (var k = 0; k < norms.Length; k++)
                {
                    (weights[$"{norms[k]}.weight"], weights[$"{norms[k]}.bias"]) = (Value(layerNorms[k].Input[1]), Value(layerNorms[k].Input[2]));
                }

                string[] linears = ["attn.qkv", "attn.proj", "fc1", "fc2"];
                var matmuls = graph.Node.Where(n => n.OpType == "MatMul" && IsInitializer(n.Input[1])).ToList();
                for (var k = 0; k < matmuls.Count; k++)
                {
                    var name = $"blocks.{k / 4}.{linears[k % 4]}";
                    var add = graph.Node.Single(n => n.OpType == "Add" && n.Input.Contains(matmuls[k].Output[0]));
                    weights[$"{name}.weight"] = Value(matmuls[k].Input[1]).t();
                    weights[$"{name}.bias"] = Value(add.Input.Single(i => i != matmuls[k].Output[0]));
                }

                break;
            case "resnet18":
                for (var k = 0; k < convs.Count; k++)
                {
                    var bn = graph.Node.Single(n => n.OpType == "BatchNormalization" && n.Input[0] == convs[k].Output[0]);
                    weights[$"conv{k}.weight"] = Value(convs[k].Input[1]);
                    (weights[$"bn{k}.weight"], weights[$"bn{k}.bias"]) = (Value(bn.Input[1]), Value(bn.Input[2]));
                    (weights[$"bn{k}.running_mean"], weights[$"bn{k}.running_var"]) = (Value(bn.Input[3]), Value(bn.Input[4]));
                }

                break;
            default:
                throw new InvalidOperationException($"unknown architecture {Arch}");
        }

        return weights;
    }
}
