using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;
using Recycling.Training;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// The converters added for the exporters' CNN, FPN, ViT and BERT graphs (Resize/Upsample, ConvTranspose, Einsum,
/// the normalisations, MaxPool's indices, selection and scatter ops, activations), one single-node model per
/// signature and opset version: the executor's outputs equal ONNX Runtime's, same shape, within 1e-5 of the
/// largest reference magnitude (fp32; integer outputs exactly).
/// </summary>
[TestClass]
public sealed class OpCoverageTests
{
    public static IEnumerable<object[]> Cases =>
    [
        // op, opset, attributes, inputs, output count
        ["Upsample", 7, "mode=s:nearest;scales=fs:1,1,2,3", "x:1,2,3,4", 1],
        ["Upsample", 7, "mode=s:linear;scales=fs:1,1,2,2", "x:1,2,3,4", 1],
        ["Upsample", 9, "mode=s:nearest", "x:1,2,3,4|scales=f1,1,2,2", 1],
        ["Upsample", 9, "mode=s:linear", "x:1,2,3,4|scales=f1,1,2.5,1.5", 1],
        ["Resize", 10, "mode=s:nearest", "x:1,2,3,4|scales=f1,1,2,2", 1],
        ["Resize", 10, "mode=s:nearest", "x:1,2,6,8|scales=f1,1,0.5,0.75", 1],
        ["Resize", 10, "mode=s:linear", "x:1,2,3,4|scales=f1,1,2,2", 1],
        ["Resize", 11, "mode=s:nearest;coordinate_transformation_mode=s:asymmetric;nearest_mode=s:floor", "x:1,2,3,4|roi=f|scales=f1,1,2,2", 1],
        ["Resize", 11, "mode=s:nearest;coordinate_transformation_mode=s:asymmetric;nearest_mode=s:floor", "x:1,2,3,4|roi=f|scales=f|sizes=i1,2,7,9", 1],
        ["Resize", 11, "mode=s:linear;coordinate_transformation_mode=s:half_pixel", "x:1,2,3,4|roi=f|scales=f1,1,2,2", 1],
        ["Resize", 11, "mode=s:linear;coordinate_transformation_mode=s:pytorch_half_pixel", "x:1,2,3,4|roi=f|scales=f|sizes=i1,2,1,9", 1],
        ["Resize", 11, "mode=s:linear;coordinate_transformation_mode=s:align_corners", "x:1,2,3,4|roi=f|scales=f1,1,2,2", 1],
        ["Resize", 13, "mode=s:linear;coordinate_transformation_mode=s:align_corners", "x:1,2,3,4|-|-|sizes=i1,2,5,7", 1],
        ["Resize", 13, "mode=s:nearest", "x:1,2,3,4|-|scales=f1,1,1.7,2.4", 1],
        ["Resize", 13, "mode=s:nearest;coordinate_transformation_mode=s:half_pixel;nearest_mode=s:round_prefer_ceil", "x:1,2,6,8|-|scales=f1,1,0.5,0.6", 1],
        ["Resize", 13, "mode=s:nearest;coordinate_transformation_mode=s:tf_half_pixel_for_nn;nearest_mode=s:ceil", "x:1,2,3,4|-|scales=f1,1,2,2", 1],
        ["Resize", 13, "mode=s:linear;coordinate_transformation_mode=s:half_pixel", "x:1,2,8,8|-|scales=f1,1,0.5,0.375", 1],
        ["Resize", 13, "mode=s:cubic;coordinate_transformation_mode=s:half_pixel", "x:1,2,4,5|-|scales=f1,1,2,2", 1],
        ["Resize", 13, "mode=s:cubic;coordinate_transformation_mode=s:align_corners;cubic_coeff_a=f:-0.5;exclude_outside=i:1", "x:1,2,4,5|-|scales=f1,1,2,1.5", 1],
        ["Resize", 18, "mode=s:linear;axes=is:2,3", "x:1,2,3,4|-|scales=f2,2", 1],
        ["Resize", 19, "mode=s:linear;coordinate_transformation_mode=s:half_pixel_symmetric", "x:1,2,3,4|-|scales=f1,1,2.5,1.5", 1],
        // Conv's shape-chosen kernels (ConvAsMatmul): the dense form (all taps linked; zero taps with stride and
        // padding; dilation), the 1×1 strided projection, one input channel (unfolded; with asymmetric padding), and a
        // shape just past the dense form's bound.
        ["Conv", 11, "pads=is:1,1,1,1", "x:3,5,2,2|w:4,5,3,3|b:4", 1],
        ["Conv", 11, "pads=is:1,1,1,1;strides=is:2,2", "x:2,3,2,3|w:4,3,3,3", 1],
        ["Conv", 11, "pads=is:1,1,1,1;dilations=is:2,1", "x:2,3,2,2|w:5,3,2,3|b:5", 1],
        ["Conv", 11, "strides=is:2,2", "x:2,6,5,4|w:7,6,1,1|b:7", 1],
        ["Conv", 11, "pads=is:1,1,1,1", "x:3,1,9,8|w:5,1,3,3|b:5", 1],
        ["Conv", 11, "pads=is:0,1,2,0;strides=is:2,1", "x:2,1,9,8|w:4,1,3,2", 1],
        ["Conv", 11, "pads=is:1,1,1,1", "x:2,3,4,3|w:4,3,3,3|b:4", 1],
        ["MaxPool", 11, "kernel_shape=is:2,2;strides=is:2,2", "x:2,3,7,6", 1],
        ["MaxPool", 11, "kernel_shape=is:3,2;strides=is:1,2;dilations=is:2,1;ceil_mode=i:1", "x:2,3,8,7", 1],
        ["ConvTranspose", 11, "kernel_shape=is:2,2;strides=is:2,2", "x:1,4,3,3|w:4,3,2,2|b:3", 1],
        ["ConvTranspose", 11, "strides=is:2,2;pads=is:1,0,1,1;output_padding=is:1,1", "x:2,4,3,4|w:4,3,3,3", 1],
        ["ConvTranspose", 11, "group=i:2;dilations=is:2,1;strides=is:1,2", "x:1,4,3,3|w:4,1,3,2|b:2", 1],
        ["ConvTranspose", 11, "strides=is:2;output_shape=is:8", "x:1,2,4|w:2,3,3", 1],
        ["ConvTranspose", 11, "strides=is:2,2;auto_pad=s:SAME_UPPER", "x:1,2,3,3|w:2,2,3,3", 1],
        ["ConvTranspose", 11, "strides=is:1,2,2", "x:1,2,2,3,3|w:2,2,2,2,2", 1],
        ["Einsum", 12, "equation=s:bqhd,bkhd->bhqk", "q:2,3,2,4|k:2,5,2,4", 1],
        ["Einsum", 12, "equation=s:bhqk,bkhd->bqhd", "a:2,2,3,5|v:2,5,2,4", 1],
        ["Einsum", 12, "equation=s:i j , j k", "a:3,4|b:4,2", 1],
        ["Einsum", 12, "equation=s:...ij->...ji", "a:2,3,4", 1],
        ["InstanceNormalization", 6, "epsilon=f:0.001", "x:2,3,4,5|s:3|b:3", 1],
        ["GroupNormalization", 18, "num_groups=i:2", "x:2,4,3,3|s:2|b:2", 1],
        ["GroupNormalization", 21, "num_groups=i:2;epsilon=f:0.001", "x:2,4,3,3|s:4|b:4", 1],
        ["LpNormalization", 1, "axis=i:1;p=i:2", "x:3,4", 1],
        ["LpNormalization", 1, "axis=i:0;p=i:1", "x:3,4", 1],
        ["MeanVarianceNormalization", 13, "", "x:2,3,4,4", 1],
        ["MaxPool", 11, "kernel_shape=is:3,3;strides=is:2,2;pads=is:1,1,1,1", "x:2,3,7,7", 2],
        ["MaxPool", 11, "kernel_shape=is:2,2;strides=is:2,2;pads=is:0,0,1,1", "x:1,2,5,6", 2],
        ["MaxPool", 11, "kernel_shape=is:3;strides=is:2", "x:2,2,9", 2],
        ["DepthToSpace", 11, "blocksize=i:2;mode=s:DCR", "x:1,8,2,3", 1],
        ["DepthToSpace", 11, "blocksize=i:2;mode=s:CRD", "x:1,8,2,3", 1],
        ["SpaceToDepth", 13, "blocksize=i:2", "x:1,2,4,6", 1],
        ["Gather", 13, "axis=i:1", "x:3,5,2|idx@=i-2", 1],
        ["Gather", 13, "axis=i:0", "x:3,5|idx@=i2", 1],
        ["Gather", 13, "axis=i:1", "x:3,5|idx@2x2=i4,0,-1,1", 1],
        ["GatherElements", 13, "axis=i:1", "x:3,4|idx@3x2=i0,3,-1,2,1,1", 1],
        ["ScatterElements", 13, "axis=i:1", "x:3,4|idx@3x2=i0,3,1,2,1,0|u:3,2", 1],
        ["ScatterElements", 16, "axis=i:0;reduction=s:add", "x:3,4|idx@1x4=i0,0,2,1|u:1,4", 1],
        ["ScatterND", 13, "", "x:4,3|idx@2x1=i2,0|u:2,3", 1],
        ["ScatterND", 16, "reduction=s:add", "x:2,3,4|idx@3x2=i1,2,0,0,-1,2|u:3,4", 1],
        ["OneHot", 11, "axis=i:0", "idx=i0,3,-1,2|depth=i5|values=f-1,2", 1],
        ["TopK", 11, "axis=i:1;largest=i:1", "x:3,6|k=i3", 2],
        ["TopK", 11, "axis=i:0;largest=i:0", "x:5,2|k=i2", 2],
        ["Hardmax", 13, "axis=i:1", "x:3,5,2", 1],
        ["Hardmax", 11, "axis=i:1", "x:3,5,2", 1],
        ["Sign", 13, "", "x:3,4", 1],
        ["Round", 11, "", "x:3,4", 1],
        ["IsNaN", 13, "", "x:3,4", 1],
        ["IsInf", 10, "detect_negative=i:0", "x:3,4", 1],
        ["Mish", 18, "", "x:3,4", 1],
        ["Selu", 6, "", "x:3,4", 1],
        ["Selu", 6, "alpha=f:1.5;gamma=f:2", "x:3,4", 1],
        ["Celu", 12, "alpha=f:0.5", "x:3,4", 1],
        ["ThresholdedRelu", 10, "alpha=f:0.5", "x:3,4", 1],
        ["Shrink", 9, "bias=f:0.25;lambd=f:0.75", "x:3,4", 1],
        ["Tan", 7, "", "x:3,4", 1],
        ["Atan", 7, "", "x:3,4", 1],
        ["Sinh", 9, "", "x:3,4", 1],
    ];

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void MatchesOnnxRuntime(string op, int opset, string attributes, string inputs, int outputs)
    {
        using var model = SingleNodeModel.Create(op, opset, attributes, inputs, outputs);
        var feeds = model.RandomFeeds(op.Length + (opset * 7));
        var ort = model.RunOrt(feeds);
        var ours = model.RunTorch(feeds);
        foreach (var (name, (shape, expected)) in ort)
        {
            var (ourShape, actual) = ours[name];
            CollectionAssert.AreEqual(shape, ourShape, $"{op}-{opset} {name} shape");
            var scale = Math.Max(expected.Select(Math.Abs).DefaultIfEmpty(0).Max(), 1e-12);
            var gap = expected.Zip(actual, (e, a) => Math.Abs(e - a)).DefaultIfEmpty(0).Max();
            Assert.IsLessThanOrEqualTo(1e-5, gap / scale, $"{op}-{opset} {name}: ours [{string.Join(", ", actual.Take(12).Select(v => v.ToString("G4")))}] ONNX Runtime [{string.Join(", ", expected.Take(12).Select(v => v.ToString("G4")))}]");
        }
    }

    /// <summary>
    /// A freshly initialised export deduplicates BatchNorm's zeros and ones: the running mean is the bias's tensor and
    /// the running variance the scale's. The statistics read their own copies: the forward pass equals ONNX Runtime's,
    /// and a training-mode pass back-propagates into the shared scale and bias.
    /// </summary>
    [TestMethod]
    public void BatchNormStatisticsSharedWithParametersRun()
    {
        using var model = SingleNodeModel.Create("BatchNormalization", 15, "", "x:2,3,2,2|ones=f1,1,1|zeros=f0,0,0|zeros|ones", 1);
        var feeds = model.RandomFeeds(3);
        var ort = model.RunOrt(feeds)["y0"].Values;
        var ours = model.RunTorch(feeds)["y0"].Values;
        Assert.IsLessThanOrEqualTo(1e-5, ort.Zip(ours, (a, b) => Math.Abs(a - b)).Max());

        using var onnx = OnnxModel.Open(model.Path);
        using var program = OnnxProgram.Load(onnx);
        using var scope = NewDisposeScope();
        CollectionAssert.AreEquivalent(new[] { "ones", "zeros" }, program.Parameters.Keys.ToArray());
        var y = program.Forward(feeds, new OpContext { Training = true, BatchNorm = BatchNormMode.Train })["y0"];
        (y * y.detach()).sum().backward();
        Assert.IsGreaterThan(0.0, program.Parameters["ones"].grad!.abs().sum().item<float>());
        Assert.AreEqual(1f, program.Parameters["ones"].min().item<float>(), "the parameter is not overwritten by the running variance update");
    }

    /// <summary>
    /// If on a shape check, as exporters emit it: batch 2 takes the then branch (x + w), others the else branch
    /// (x · w, w captured from the outer graph); both equal ONNX Runtime's, and w trains through the branch.
    /// </summary>
    [TestMethod]
    public void IfRunsTheBranchItsConditionPicks()
    {
        static GraphProto Branch(string name, string op)
        {
            var g = new GraphProto { Name = name, Output = { new ValueInfoProto { Name = name + "_y", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } } } };
            g.Node.Add(new NodeProto { OpType = op, Input = { "x", "w" }, Output = { name + "_y" } });
            return g;
        }

        var graph = new GraphProto { Name = "g" };
        var dims = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "batch" }, new TensorShapeProto.Types.Dimension { DimValue = 3 } } };
        graph.Input.Add(new ValueInfoProto { Name = "x", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = dims } } });
        graph.Output.Add(new ValueInfoProto { Name = "y", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        graph.Initializer.Add(new TensorProto { Name = "w", DataType = 1, Dims = { 3 }, FloatData = { 0.5f, -1.5f, 2f } });
        graph.Initializer.Add(new TensorProto { Name = "zero", DataType = 7, Int64Data = { 0 } });
        graph.Initializer.Add(new TensorProto { Name = "two", DataType = 7, Int64Data = { 2 } });
        graph.Node.Add(new NodeProto { OpType = "Shape", Input = { "x" }, Output = { "shape" } });
        graph.Node.Add(new NodeProto { OpType = "Gather", Input = { "shape", "zero" }, Output = { "batch" } });
        graph.Node.Add(new NodeProto { OpType = "Equal", Input = { "batch", "two" }, Output = { "cond" } });
        var ifNode = new NodeProto { OpType = "If", Name = "check", Input = { "cond" }, Output = { "y" } };
        ifNode.Attribute.Add(new AttributeProto { Name = "then_branch", G = Branch("then", "Add"), Type = AttributeProto.Types.AttributeType.Graph });
        ifNode.Attribute.Add(new AttributeProto { Name = "else_branch", G = Branch("else", "Mul"), Type = AttributeProto.Types.AttributeType.Graph });
        graph.Node.Add(ifNode);
        var path = Path.Combine(Path.GetTempPath(), $"recycling-if-{Guid.NewGuid():N}.onnx");
        File.WriteAllBytes(path, new ModelProto { IrVersion = 7, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 13 } } }.ToByteArray());
        try
        {
            foreach (var batch in new[] { 2, 3 })
            {
                var feeds = new Dictionary<string, Tensor> { ["x"] = randn(batch, 3, generator: new Generator((ulong)batch)) };
                var ort = TrainingSupport.RunOrt(path, feeds)["y"];
                var ours = TrainingSupport.RunTorch(path, feeds)["y"];
                Assert.IsLessThanOrEqualTo(1e-6, TrainingSupport.RelativeGap(ours, ort), $"batch {batch}");
            }

            using var onnx = OnnxModel.Open(path);
            Assert.IsEmpty(OnnxProgram.Check(onnx));
            using var program = OnnxProgram.Load(onnx);
            using var scope = NewDisposeScope();
            Assert.IsTrue(program.Parameters.ContainsKey("w"));
            program.Forward(new Dictionary<string, Tensor> { ["x"] = ones(3, 3) }, new OpContext { Training = true })["y"].sum().backward();
            CollectionAssert.AreEqual(new[] { 3f, 3f, 3f }, program.Parameters["w"].grad!.data<float>().ToArray(), "d(sum x·w)/dw = column sums of x");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void IfWithAnUnsupportedBranchOpIsReportedOnce()
    {
        var branch = new GraphProto { Name = "b", Output = { new ValueInfoProto { Name = "b_y" } } };
        branch.Node.Add(new NodeProto { OpType = "NoSuchOp", Input = { "x" }, Output = { "b_y" } });
        var graph = new GraphProto { Name = "g" };
        graph.Input.Add(new ValueInfoProto { Name = "x", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        graph.Input.Add(new ValueInfoProto { Name = "c", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 9 } } });
        var ifNode = new NodeProto { OpType = "If", Input = { "c" }, Output = { "y" } };
        ifNode.Attribute.Add(new AttributeProto { Name = "then_branch", G = branch, Type = AttributeProto.Types.AttributeType.Graph });
        ifNode.Attribute.Add(new AttributeProto { Name = "else_branch", G = branch.Clone(), Type = AttributeProto.Types.AttributeType.Graph });
        graph.Node.Add(ifNode);
        var path = Path.Combine(Path.GetTempPath(), $"recycling-if-bad-{Guid.NewGuid():N}.onnx");
        File.WriteAllBytes(path, new ModelProto { IrVersion = 7, Graph = graph, OpsetImport = { new OperatorSetIdProto { Version = 13 } } }.ToByteArray());
        try
        {
            using var onnx = OnnxModel.Open(path);
            var problems = OnnxProgram.Check(onnx);
            Assert.HasCount(2, problems, string.Join("; ", problems));
            StringAssert.Contains(problems[0], "NoSuchOp (domain ai.onnx, opset 13) at node 'NoSuchOp' (#0 in the then branch of 'If' (#0)): not supported");
        }
        finally
        {
            File.Delete(path);
        }
    }
}
