using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Bench;

/// <summary>
/// The three benchmark networks written by hand as TorchSharp modules, the way a TorchSharp user would write them
/// (nn.Linear layout [out, in], functional ops, no graph interpreter). Weights come by canonical name
/// (<see cref="TrainSpeedModel"/> maps the ONNX initializers to these names); scripts/bench/train_speed.py holds the
/// same three networks in PyTorch with the same names.
/// </summary>
internal abstract class HandWrittenModel : nn.Module<Tensor, Tensor>
{
    private readonly Dictionary<string, Tensor> _buffers = new(StringComparer.Ordinal);

    protected HandWrittenModel(string name) : base(name)
    {
    }

    /// <summary>Trainable tensors in creation order (the optimizer's parameter order).</summary>
    public List<Parameter> Weights { get; } = [];

    public static HandWrittenModel Create(string arch, IReadOnlyDictionary<string, Tensor> weights) => arch switch
    {
        "cnn" => new ZooCnn(weights),
        "vit" => new ZooVit(weights),
        "resnet18" => new CntkResNet18(weights),
        _ => throw new ArgumentException($"no hand-written model for '{arch}'"),
    };

    protected Parameter P(IReadOnlyDictionary<string, Tensor> weights, string name)
    {
        var p = new Parameter(weights[name].detach().clone(), requires_grad: true);
        register_parameter(name.Replace('.', '_'), p);
        Weights.Add(p);
        return p;
    }

    protected Tensor B(IReadOnlyDictionary<string, Tensor> weights, string name)
    {
        var b = weights[name].detach().clone();
        register_buffer(name.Replace('.', '_'), b);
        _buffers[name] = b;
        return b;
    }

    /// <summary>The zoo CNN as exported (BatchNorm folded into the convolutions): 3 × (conv 3×3, ReLU), max-pool after the first two, global mean, linear head.</summary>
    private sealed class ZooCnn : HandWrittenModel
    {
        private readonly Parameter[] _convW, _convB;
        private readonly Parameter _headW, _headB;

        public ZooCnn(IReadOnlyDictionary<string, Tensor> w) : base("zoo_cnn")
        {
            _convW = [.. Enumerable.Range(1, 3).Select(k => P(w, $"conv{k}.weight"))];
            _convB = [.. Enumerable.Range(1, 3).Select(k => P(w, $"conv{k}.bias"))];
            (_headW, _headB) = (P(w, "head.weight"), P(w, "head.bias"));
        }

        public override Tensor forward(Tensor x)
        {
            x = F.max_pool2d(F.relu(F.conv2d(x, _convW[0], _convB[0], padding: [1, 1])), [2, 2]);
            x = F.max_pool2d(F.relu(F.conv2d(x, _convW[1], _convB[1], padding: [1, 1])), [2, 2]);
            x = F.relu(F.conv2d(x, _convW[2], _convB[2], padding: [1, 1])).mean([2, 3]);
            return F.linear(x, _headW, _headB);
        }
    }

    /// <summary>The zoo ViT: patch 7 conv embedding, class token, position embedding, 2 pre-norm encoder blocks (4 heads, exact GELU), final LayerNorm on the class token, linear head.</summary>
    private sealed class ZooVit : HandWrittenModel
    {
        private const int Heads = 4;
        private readonly Parameter _patchW, _patchB, _cls, _pos, _normW, _normB, _headW, _headB;
        private readonly Parameter[][] _blocks;

        public ZooVit(IReadOnlyDictionary<string, Tensor> w) : base("zoo_vit")
        {
            (_patchW, _patchB, _cls, _pos) = (P(w, "patch_embed.weight"), P(w, "patch_embed.bias"), P(w, "cls_token"), P(w, "pos_embed"));
            string[] names = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                "norm2.weight", "norm2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];
            _blocks = [.. Enumerable.Range(0, 2).Select(b => names.Select(n => P(w, $"blocks.{b}.{n}")).ToArray())];
            (_normW, _normB, _headW, _headB) = (P(w, "norm.weight"), P(w, "norm.bias"), P(w, "head.weight"), P(w, "head.bias"));
        }

        public override Tensor forward(Tensor x)
        {
            x = F.conv2d(x, _patchW, _patchB, strides: [7, 7]).flatten(2).transpose(1, 2);
            x = cat([_cls.expand(x.shape[0], -1, -1), x], 1) + _pos;
            foreach (var p in _blocks)
            {
                x = x + Attention(F.layer_norm(x, [x.shape[2]], p[0], p[1]), p[2], p[3], p[4], p[5]);
                x = x + F.linear(F.gelu(F.linear(F.layer_norm(x, [x.shape[2]], p[6], p[7]), p[8], p[9])), p[10], p[11]);
            }

            x = F.layer_norm(x[TensorIndex.Colon, 0], [x.shape[2]], _normW, _normB);
            return F.linear(x, _headW, _headB);
        }

        private static Tensor Attention(Tensor x, Tensor qkvW, Tensor qkvB, Tensor projW, Tensor projB)
        {
            var (b, t, d) = (x.shape[0], x.shape[1], x.shape[2]);
            var qkv = F.linear(x, qkvW, qkvB).reshape(b, t, 3, Heads, d / Heads).permute(2, 0, 3, 1, 4);
            var (q, k, v) = (qkv[0], qkv[1], qkv[2]);
            var a = q.matmul(k.transpose(-1, -2)) * Math.Pow(d / Heads, -0.5);
            return F.linear(a.softmax(-1).matmul(v).transpose(1, 2).reshape(b, t, d), projW, projB);
        }
    }

    /// <summary>
    /// CNTK's ResNet18 (Microsoft.ML.DnnImageFeaturizer.ResNet18) up to its last ReLU, with a linear head on the
    /// flattened feature map: BasicBlocks, [2, 2, 2, 3] per stage as this export has them (22 convolutions), no conv
    /// biases, BatchNorm in train mode, and CNTK's
    /// asymmetric padding (stem 3/2, stride-2 3×3 convolutions and the max-pool 1/0: top-left only).
    /// Convolutions are numbered in the export's node order: a down-sampling block's 1×1 projection comes first.
    /// </summary>
    private sealed class CntkResNet18 : HandWrittenModel
    {
        /// <summary>The export's BatchNormalization momentum 0.98835 (ONNX weighs the old value), as PyTorch's 1 − m.</summary>
        public const double Momentum = 1 - 0.9883496761322021;

        private static readonly int[] BlocksPerStage = [2, 2, 2, 3];

        private readonly (Parameter W, Parameter Scale, Parameter Bias, Tensor Mean, Tensor Var)[] _convs;
        private readonly Parameter _headW, _headB;

        public CntkResNet18(IReadOnlyDictionary<string, Tensor> w) : base("cntk_resnet18")
        {
            _convs = [.. Enumerable.Range(0, 22).Select(k => (P(w, $"conv{k}.weight"), P(w, $"bn{k}.weight"), P(w, $"bn{k}.bias"), B(w, $"bn{k}.running_mean"), B(w, $"bn{k}.running_var")))];
            (_headW, _headB) = (P(w, "head.weight"), P(w, "head.bias"));
        }

        public override Tensor forward(Tensor x)
        {
            x = F.relu(ConvBn(0, F.pad(x, [3, 2, 3, 2]), 2));
            x = F.max_pool2d(F.pad(x, [1, 0, 1, 0], value: double.NegativeInfinity), [3, 3], [2, 2]);
            var k = 1;
            for (var stage = 0; stage < 4; stage++)
            {
                for (var block = 0; block < BlocksPerStage[stage]; block++)
                {
                    var down = stage > 0 && block == 0;
                    var shortcut = down ? ConvBn(k++, x, 2) : x;
                    var y = F.relu(ConvBn(k++, down ? F.pad(x, [1, 0, 1, 0]) : x, down ? 2 : 1, down ? 0 : 1));
                    x = F.relu(ConvBn(k++, y, 1, 1) + shortcut);
                }
            }

            return F.linear(x.flatten(1), _headW, _headB);
        }

        private Tensor ConvBn(int k, Tensor x, long stride, long padding = 0)
        {
            var (w, scale, bias, mean, variance) = _convs[k];
            return F.batch_norm(F.conv2d(x, w, null, [stride, stride], [padding, padding]), mean, variance, scale, bias, training, Momentum, 1e-5);
        }
    }
}
