using Recycling.Onnx;
using Recycling.Training;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// Autograd through each converter family against central finite differences in float64: a one-node model whose
/// float operands are all float64 graph inputs, the scalar loss Σ y·r for a fixed random r, the derivative with
/// respect to every input element by (L(x + h) − L(x − h)) / 2h with h = 1e-6. They agree within 1e-6 of
/// max(1, max |gradient|) (the truncation error is O(h²), the rounding error about 1e-10); inputs that the output does
/// not depend on (or only piecewise-constantly, Hardmax) must have a zero numerical derivative.
/// </summary>
[TestClass]
public sealed class GradientCheckTests
{
    private const double Step = 1e-6;
    private const double Tolerance = 1e-6;

    public static IEnumerable<object[]> Cases =>
    [
        // op, opset, attributes, inputs (SingleNodeModel's syntax), training mode
        ["Conv", 13, "pads=is:1,0,1,1;strides=is:2,1", "x:2,2,5,4|w:3,2,3,2|b:3", false],
        ["Conv", 13, "group=i:2;dilations=is:1,2", "x:1,4,5,6|w:4,2,2,2", false],
        ["Conv", 13, "pads=is:1,1,1,1", "x:2,3,2,2|w:4,3,3,3|b:4", false],
        ["Conv", 13, "pads=is:1,1,1,1;strides=is:2,2", "x:1,2,2,3|w:3,2,3,3", false],
        ["Conv", 13, "strides=is:2,2", "x:2,3,5,4|w:4,3,1,1|b:4", false],
        ["Conv", 13, "pads=is:1,1,1,1;strides=is:2,1", "x:2,1,5,4|w:3,1,3,2|b:3", false],
        ["ConvTranspose", 13, "strides=is:2,2;pads=is:1,0,0,1;output_padding=is:1,0", "x:1,2,3,3|w:2,3,3,3|b:3", false],
        ["Gemm", 13, "transB=i:1;alpha=f:0.5", "a:3,4|b:5,4|c:5", false],
        ["MatMul", 13, "", "a:2,3,4|b:4,5", false],
        ["Einsum", 13, "equation=s:bqd,bkd->bqk", "a:2,3,4|b:2,5,4", false],
        ["BatchNormalization", 15, "epsilon=f:0.001", "x:4,3,2,2|s:3|b:3|m:3|v:3", true],
        ["BatchNormalization", 15, "epsilon=f:0.001", "x:4,3,2,2|s:3|b:3|m:3|v:3", false],
        ["LayerNormalization", 17, "axis=i:-1", "x:2,3,5|s:5|b:5", false],
        ["InstanceNormalization", 6, "", "x:2,3,4,4|s:3|b:3", false],
        ["GroupNormalization", 21, "num_groups=i:2", "x:2,4,3,3|s:4|b:4", false],
        ["LpNormalization", 1, "axis=i:1", "x:3,4", false],
        ["MaxPool", 13, "kernel_shape=is:2,2;strides=is:2,2;pads=is:0,0,1,1", "x:1,2,5,5", false],
        ["MaxPool", 13, "kernel_shape=is:2,2;strides=is:2,2", "x:2,3,5,6", false],
        ["AveragePool", 13, "kernel_shape=is:3,3;strides=is:2,2;pads=is:0,0,1,1", "x:1,2,6,6", false],
        ["GlobalAveragePool", 13, "", "x:2,3,4,4", false],
        ["Resize", 13, "mode=s:linear;coordinate_transformation_mode=s:half_pixel", "x:1,2,3,4|-|scales=f1,1,2,1.5", false],
        ["Resize", 13, "mode=s:cubic;coordinate_transformation_mode=s:align_corners", "x:1,1,4,4|-|scales=f1,1,1.5,2", false],
        ["Resize", 13, "mode=s:nearest;coordinate_transformation_mode=s:asymmetric;nearest_mode=s:floor", "x:1,2,3,3|-|scales=f1,1,2,2", false],
        ["Softmax", 13, "axis=i:1", "x:2,4,3", false],
        ["LogSoftmax", 13, "axis=i:-1", "x:2,5", false],
        ["Hardmax", 13, "", "x:2,5", false],
        ["Sigmoid", 13, "", "x:3,4", false],
        ["Tanh", 13, "", "x:3,4", false],
        ["Erf", 13, "", "x:3,4", false],
        ["Gelu", 20, "approximate=s:tanh", "x:3,4", false],
        ["HardSwish", 14, "", "x:3,4", false],
        ["HardSigmoid", 6, "alpha=f:0.3", "x:3,4", false],
        ["LeakyRelu", 6, "alpha=f:0.2", "x:3,4", false],
        ["Elu", 6, "", "x:3,4", false],
        ["Selu", 6, "", "x:3,4", false],
        ["Celu", 12, "alpha=f:0.7", "x:3,4", false],
        ["Mish", 18, "", "x:3,4", false],
        ["Softplus", 1, "", "x:3,4", false],
        ["PRelu", 9, "", "x:2,3,4|slope:3,1", false],
        ["Pow", 13, "", "x:3,4|p=f2", false],
        ["Div", 13, "", "a:3,4|b:4", false],
        ["Mul", 13, "", "a:3,1|b:1,4", false],
        ["ReduceMean", 18, "keepdims=i:0", "x:2,3,4|axes=i1", false],
        ["ReduceL2", 18, "", "x:2,3,4|axes=i-1", false],
        ["ReduceLogSumExp", 18, "", "x:2,3,4|axes=i0,2", false],
        ["ReduceMax", 18, "", "x:2,3,4|axes=i2", false],
        ["Gather", 13, "axis=i:1", "x:3,5|idx=i4,0,-1", false],
        ["Gather", 13, "axis=i:1", "x:3,5,2|idx@=i-2", false],
        ["Slice", 13, "", "x:3,6|starts=i1,-1|ends=i3,-7|axes=i0,1|steps=i1,-2", false],
        ["Pad", 13, "mode=s:reflect", "x:1,2,4,4|pads=i0,0,1,2,0,0,2,1", false],
        ["Transpose", 13, "perm=is:2,0,1", "x:2,3,4", false],
        ["Concat", 13, "axis=i:1", "a:2,3|b:2,2", false],
        ["Split", 13, "axis=i:1", "x:2,5|split=i2,3", false],
        ["Expand", 13, "", "x:3,1|shape=i2,3,4", false],
        ["Tile", 13, "", "x:2,3|repeats=i2,2", false],
        ["Clip", 13, "", "x:3,4|lo=f-0.5|hi=f1", false],
        ["CumSum", 14, "reverse=i:1", "x:3,4|axis=i1", false],
        ["GatherElements", 13, "axis=i:0", "x:3,4|idx@2x4=i0,2,1,0,2,2,0,1", false],
        ["ScatterND", 16, "reduction=s:add", "x:4,3|idx@2x1=i2,0|u:2,3", false],
        ["DepthToSpace", 13, "blocksize=i:2;mode=s:CRD", "x:1,8,2,2", false],
    ];

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void AutogradMatchesFiniteDifferences(string op, int opset, string attributes, string inputs, bool training)
    {
        var outputs = op == "Split" ? 2 : 1;
        using var node = SingleNodeModel.Create(op, opset, attributes, inputs, outputs, inputElementType: 11);
        using var model = OnnxModel.Open(node.Path);
        using var program = OnnxProgram.Load(model);
        using var scope = NewDisposeScope();
        var feeds = node.RandomFeeds(op.Length + opset, ScalarType.Float64);
        if (op == "BatchNormalization")
        {
            feeds["v"] = feeds["v"].abs() + 0.5;
        }

        var context = new OpContext { Training = training, BatchNorm = BatchNormMode.Train };
        var generator = new Generator(7);

        // Training-mode BatchNorm updates the running statistics it is given: each pass gets its own copies.
        Dictionary<string, Tensor> Fresh(Dictionary<string, Tensor> values) => training ? values.ToDictionary(p => p.Key, p => p.Value.clone()) : values;
        var weights = new Dictionary<string, Tensor>();
        double Loss(Dictionary<string, Tensor> values)
        {
            var total = 0.0;
            foreach (var (name, y) in program.Forward(Fresh(values), context))
            {
                if (!weights.TryGetValue(name, out var r))
                {
                    weights[name] = r = randn(y.shape, ScalarType.Float64, generator: generator);
                }

                total += (y * r).sum().item<double>();
            }

            return total;
        }

        // BatchNorm's running statistics are buffers, never differentiated (torch refuses to).
        var checkedInputs = feeds.Keys.Where(n => !(op == "BatchNormalization" && n is "m" or "v")).ToList();
        foreach (var name in checkedInputs)
        {
            feeds[name].requires_grad_(true);
        }

        // The analytic gradient: backward through the same forward pass (the first call draws r).
        Loss(feeds);
        Tensor? loss = null;
        foreach (var (name, y) in program.Forward(Fresh(feeds), context))
        {
            var term = (y * weights[name]).sum();
            loss = loss is null ? term : loss + term;
        }

        if (loss!.requires_grad)
        {
            loss.backward();
        }

        foreach (var name in checkedInputs)
        {
            var feed = feeds[name];
            var analytic = feed.grad is null ? new double[feed.numel()] : feed.grad.contiguous().data<double>().ToArray();
            var numeric = new double[analytic.Length];
            using (no_grad())
            {
                var flat = feed.detach().clone().reshape(-1);
                for (var k = 0; k < numeric.Length; k++)
                {
                    var original = flat[k].item<double>();
                    flat[k] = original + Step;
                    var plus = Loss(With(feeds, name, flat.reshape(feed.shape)));
                    flat[k] = original - Step;
                    var minus = Loss(With(feeds, name, flat.reshape(feed.shape)));
                    flat[k] = original;
                    numeric[k] = (plus - minus) / (2 * Step);
                }
            }

            var scale = Math.Max(1, analytic.Select(Math.Abs).Max());
            var gap = analytic.Zip(numeric, (a, n) => Math.Abs(a - n)).Max();
            Assert.IsLessThanOrEqualTo(Tolerance, gap / scale, $"{op}-{opset} d/d{name}: analytic [{string.Join(", ", analytic.Take(6).Select(v => v.ToString("G6")))}] numeric [{string.Join(", ", numeric.Take(6).Select(v => v.ToString("G6")))}]");
        }
    }

    private static Dictionary<string, Tensor> With(Dictionary<string, Tensor> feeds, string name, Tensor value) =>
        feeds.ToDictionary(p => p.Key, p => p.Key == name ? value : p.Value.detach());
}
