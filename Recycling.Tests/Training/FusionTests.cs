using Google.Protobuf;
using Recycling.Onnx;
using Recycling.Onnx.Proto;
using Recycling.Tests.Zoo;
using Recycling.Training;
using Recycling.Training.Ops;
using static Recycling.Tests.Training.TrainingSupport;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// Node fusions (MatMul + Add as one linear, the exporters' Erf GELU as one gelu) compute what the nodes as written
/// compute: forward against ONNX Runtime (1e-5 relative) and against the unfused program, gradients of every
/// parameter against the unfused program (1e-5 relative: float32 rounding of a different summation order). Patterns
/// whose conditions fail (a 3-D weight, a constant that is not √2, a value read outside the pattern) run as written.
/// ReLU in place (after Conv, Gemm, MatMul, Add, BatchNormalization) gives the same bits as the nodes as written, outputs
/// and gradients, and its float64 gradients agree with central finite differences (h = 1e-6, within 1e-6 of max(1, |g|)).
/// </summary>
[TestClass]
public sealed class FusionTests
{
    private const double Tolerance = 1e-5;

    [TestMethod]
    public void ZooVitFusesItsLinearsAndGelusAndKeepsLogitsAndGradients()
    {
        var path = Path.Combine(ZooPaths.ModelsDirectory, "vit_base.onnx");
        using var model = OnnxModel.Open(path);
        using var fused = OnnxProgram.Load(model);
        using var plain = OnnxProgram.Load(model, fuse: false);

        // Two blocks: qkv, proj, fc1, fc2 each a MatMul + Add; one Erf GELU per block.
        CollectionAssert.AreEqual(new[] { "Linear", "Linear", "Linear", "Gelu", "Linear", "Linear", "Linear", "Linear", "Gelu", "Linear" }, fused.FusedOps.ToArray());
        Assert.IsEmpty(plain.FusedOps);

        using var input = RandomImages(3, 7);
        var feeds = new Dictionary<string, Tensor> { ["input"] = input };
        var ort = RunOrt(path, feeds)["logits"];
        var (fusedLogits, fusedGrads) = LogitsAndGradients(fused, feeds);
        var (plainLogits, plainGrads) = LogitsAndGradients(plain, feeds);
        Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(fusedLogits, ort), "fused against ONNX Runtime");
        Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(fusedLogits, plainLogits), "fused against unfused");
        Assert.HasCount(plainGrads.Count, fusedGrads);
        foreach (var (name, grad) in plainGrads)
        {
            Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(fusedGrads[name], grad), $"gradient of {name}");
        }
    }

    [TestMethod]
    public void AValueInsideAFusedPatternIsStillComputedWhenAsked()
    {
        var path = Path.Combine(ZooPaths.ModelsDirectory, "vit_base.onnx");
        using var model = OnnxModel.Open(path);
        var erf = model.Proto.Graph.Node.First(n => n.OpType == "Erf").Output[0];
        var matmul = model.Proto.Graph.Node.First(n => n.OpType == "MatMul" && model.Proto.Graph.Initializer.Any(i => i.Name == n.Input[1])).Output[0];
        using var fused = OnnxProgram.Load(model);
        using var plain = OnnxProgram.Load(model, fuse: false);
        using var input = RandomImages(2, 3);
        var feeds = new Dictionary<string, Tensor> { ["input"] = input };
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var fromFused = fused.Forward(feeds, new OpContext(), [erf, matmul, "logits"]);
        var fromPlain = plain.Forward(feeds, new OpContext(), [erf, matmul, "logits"]);
        foreach (var name in new[] { erf, matmul, "logits" })
        {
            CollectionAssert.AreEqual(fromPlain[name].data<float>().ToArray(), fromFused[name].data<float>().ToArray(), name);
        }

        // The fused path still serves a call that wants only the outputs.
        var logits = fused.Forward(feeds, new OpContext())["logits"].data<float>().ToArray();
        Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(logits, fromPlain["logits"].data<float>().ToArray()));
    }

    [TestMethod]
    [DataRow("torch", "Div", 1.4142135f, true, DisplayName = "F.gelu: (x · (1 + erf(x / √2))) · 0.5")]
    [DataRow("hf", "Div", 1.4142135f, true, DisplayName = "Hugging Face: (x · 0.5) · (1 + erf(x / √2))")]
    [DataRow("inner", "Mul", 0.70710677f, true, DisplayName = "x · ((1 + erf(x · 1/√2)) · 0.5)")]
    [DataRow("torch", "Div", 1.5f, false, DisplayName = "not a GELU: x / 1.5")]
    public void ErfGeluFormsFuseAndMatchOnnxRuntime(string form, string scaleOp, float scale, bool fuses)
    {
        var b = new GraphBuilder();
        b.Input("x", 4, 6);
        b.Scalar("s", scale);
        b.Scalar("one", 1);
        b.Scalar("half", 0.5f);
        b.Node(scaleOp, ["x", "s"], "d");
        b.Node("Erf", ["d"], "e");
        b.Node("Add", ["one", "e"], "a");
        switch (form)
        {
            case "torch":
                b.Node("Mul", ["x", "a"], "m");
                b.Node("Mul", ["m", "half"], "y");
                break;
            case "hf":
                b.Node("Mul", ["x", "half"], "m");
                b.Node("Mul", ["m", "a"], "y");
                break;
            default:
                b.Node("Mul", ["a", "half"], "m");
                b.Node("Mul", ["x", "m"], "y");
                break;
        }

        b.Output("y");
        CheckAgainstOrt(b, fuses ? ["Gelu"] : []);
    }

    [TestMethod]
    public void LinearFusesBiasOnEitherSideAndFallsBackOnA3DWeight()
    {
        var b = new GraphBuilder();
        b.Input("x", 2, 3, 4);
        b.Weight("w", 4, 5);
        b.Weight("bias", 5);
        b.Weight("w3", 2, 5, 3);
        b.Weight("bias3", 3);
        b.Node("MatMul", ["x", "w"], "h");
        b.Node("Add", ["bias", "h"], "y");
        b.Node("MatMul", ["y", "w3"], "g");
        b.Node("Add", ["g", "bias3"], "z");
        b.Output("z");

        // Both match; the second's batched (3-D) weight fails the fast path's condition and runs as MatMul, Add.
        CheckAgainstOrt(b, ["Linear", "Linear"]);
    }

    [TestMethod]
    public void LinearFusesOnTwoDimensionalAndNonContiguousInputs()
    {
        var b = new GraphBuilder();
        b.Input("x", 6, 4);
        b.Input("u", 2, 3, 4, 5);
        b.Weight("w", 4, 5);
        b.Weight("bias", 5);
        b.Weight("w2", 5, 3);
        b.Weight("bias2", 3);
        b.Node("MatMul", ["x", "w"], "h");
        b.Node("Add", ["h", "bias"], "y");

        // A transposed input: the rows are not contiguous, so folding the leading axes copies them.
        b.Node("Transpose", ["u"], "t", new AttributeProto { Name = "perm", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 0, 2, 1, 3 } });
        b.Node("MatMul", ["t", "w2"], "g");
        b.Node("Add", ["bias2", "g"], "z");
        b.Output("y");
        b.Output("z");
        CheckAgainstOrt(b, ["Linear", "Linear"]);
    }

    [TestMethod]
    public void AValueReadTwiceOrAGraphOutputIsNotFusedAway()
    {
        var b = new GraphBuilder();
        b.Input("x", 3, 4);
        b.Weight("w", 4, 4);
        b.Weight("bias", 4);
        b.Node("MatMul", ["x", "w"], "h");
        b.Node("Add", ["h", "bias"], "y");
        b.Node("Mul", ["h", "y"], "z");
        b.Node("MatMul", ["z", "w"], "k");
        b.Node("Add", ["k", "bias"], "out");
        b.Output("out");
        b.Output("k");
        CheckAgainstOrt(b, []);
    }

    [TestMethod]
    [DataRow(17, DisplayName = "opset 17: ReduceMean axes an attribute")]
    [DataRow(18, DisplayName = "opset 18: ReduceMean axes an input")]
    public void DecomposedLayerNormFusesAndMatchesOnnxRuntime(int opset)
    {
        var b = new GraphBuilder(opset);
        b.Input("x", 2, 3, 8);
        b.Weight("gamma", 8);
        b.Weight("beta", 8);
        b.Scalar("two", 2);
        b.Scalar("eps", 1e-5f);
        var keep = new AttributeProto { Name = "keepdims", Type = AttributeProto.Types.AttributeType.Int, I = 1 };
        if (opset >= 18)
        {
            b.Ints("axes", -1);
            b.Node("ReduceMean", ["x", "axes"], "m", keep);
        }
        else
        {
            b.Node("ReduceMean", ["x"], "m", keep, new AttributeProto { Name = "axes", Type = AttributeProto.Types.AttributeType.Ints, Ints = { -1 } });
        }

        b.Node("Sub", ["x", "m"], "d");
        b.Node("Pow", ["d", "two"], "p");
        b.Node("ReduceMean", opset >= 18 ? ["p", "axes"] : ["p"], "v", opset >= 18 ? [keep] : [keep, new AttributeProto { Name = "axes", Type = AttributeProto.Types.AttributeType.Ints, Ints = { -1 } }]);
        b.Node("Add", ["v", "eps"], "ve");
        b.Node("Sqrt", ["ve"], "s");
        b.Node("Div", ["d", "s"], "n");
        b.Node("Mul", ["n", "gamma"], "g");
        b.Node("Add", ["g", "beta"], "y");
        b.Output("y");
        CheckAgainstOrt(b, ["LayerNorm"]);
    }

    [TestMethod]
    public void ANormOverTheFirstAxisRunsAsWritten()
    {
        var b = new GraphBuilder(17);
        b.Input("x", 8, 8);
        b.Weight("gamma", 8);
        b.Weight("beta", 8);
        b.Scalar("two", 2);
        b.Scalar("eps", 1e-5f);
        var axes = new AttributeProto { Name = "axes", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 0 } };
        b.Node("ReduceMean", ["x"], "m", axes);
        b.Node("Sub", ["x", "m"], "d");
        b.Node("Pow", ["d", "two"], "p");
        b.Node("ReduceMean", ["p"], "v", axes);
        b.Node("Add", ["v", "eps"], "ve");
        b.Node("Sqrt", ["ve"], "s");
        b.Node("Div", ["d", "s"], "n");
        b.Node("Mul", ["n", "gamma"], "g");
        b.Node("Add", ["g", "beta"], "y");
        b.Output("y");

        // The pattern matches; at run time axis 0 is not the last axis, so the nine nodes run.
        CheckAgainstOrt(b, ["LayerNorm"]);
    }

    [TestMethod]
    public void ReluAfterConvGemmMatMulAndAddRunsInPlaceAndMatchesOnnxRuntime()
    {
        var b = new GraphBuilder(13);
        b.Input("x", 2, 3, 5, 5);
        b.Input("u", 2, 6);
        b.Weight("w", 4, 3, 3, 3);
        b.Weight("cb", 4);
        b.Weight("g", 6, 100);
        b.Weight("gb", 6);
        b.Weight("m", 6, 6);
        var pads = new AttributeProto { Name = "pads", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 1, 1, 1, 1 } };
        b.Node("Conv", ["x", "w", "cb"], "c", pads);
        b.Node("Relu", ["c"], "r1");
        b.Node("Flatten", ["r1"], "f");
        b.Node("Gemm", ["f", "g", "gb"], "h", new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        b.Node("Relu", ["h"], "r2");
        b.Node("MatMul", ["r2", "m"], "k");
        b.Node("Relu", ["k"], "r3");
        b.Node("Add", ["r3", "u"], "a");
        b.Node("Relu", ["a"], "y");
        b.Output("y");
        CheckAgainstOrt(b, ["ConvRelu", "GemmRelu", "MatMulRelu", "AddRelu"]);
        CheckSameBits(b, new OpContext { Training = true });
    }

    [TestMethod]
    [DataRow(BatchNormMode.Train, true, false)]
    [DataRow(BatchNormMode.Frozen, true, false)]
    [DataRow(BatchNormMode.Frozen, false, false)]
    [DataRow(BatchNormMode.Train, true, true)]
    [DataRow(BatchNormMode.Frozen, true, true)]
    public void ReluAfterBatchNormRunsInPlaceWithTheSameBitsAndRunningStatistics(BatchNormMode mode, bool training, bool pooled)
    {
        var b = new GraphBuilder(15);
        b.Input("x", 4, 3, 4, 4);
        b.Weight("s", 3);
        b.Weight("bias", 3);
        b.Weight("mean", 3);
        b.Positive("var", 3);
        b.Node("BatchNormalization", ["x", "s", "bias", "mean", "var"], "n");
        b.Node("Relu", ["n"], pooled ? "r" : "y");
        if (pooled)
        {
            b.Node("MaxPool", ["r"], "y", Ints("kernel_shape", 2, 2), Ints("strides", 2, 2));
        }

        b.Output("y");
        var buffers = CheckSameBits(b, new OpContext { Training = training, BatchNorm = mode }, [pooled ? "BatchNormalizationMaxPoolRelu" : "BatchNormalizationRelu"]);
        Assert.AreEqual(mode == BatchNormMode.Train && training, !buffers.Fused["mean"].SequenceEqual(buffers.Initial["mean"]), "running mean updated");
        foreach (var (name, value) in buffers.Plain)
        {
            CollectionAssert.AreEqual(value, buffers.Fused[name], name);
        }
    }

    [TestMethod]
    public void ReluRunsAsWrittenAfterSigmoidOrOnAValueReadTwiceOrAGraphOutput()
    {
        var b = new GraphBuilder(13);
        b.Input("x", 3, 4);
        b.Weight("w", 4, 4);
        b.Node("Sigmoid", ["x"], "s");
        b.Node("Relu", ["s"], "r1");
        b.Node("MatMul", ["r1", "w"], "k");
        b.Node("Relu", ["k"], "r2");
        b.Node("Mul", ["k", "r2"], "p");
        b.Node("MatMul", ["p", "w"], "q");
        b.Node("Relu", ["q"], "y");
        b.Output("y");
        b.Output("q");
        CheckAgainstOrt(b, []);
    }

    [TestMethod]
    public void APreReluValueAskedForIsNotRectified()
    {
        var b = new GraphBuilder(13);
        b.Input("x", 3, 4);
        b.Weight("w", 4, 4);
        b.Node("MatMul", ["x", "w"], "k");
        b.Node("Relu", ["k"], "y");
        b.Output("y");
        using var compiled = b.Compile();
        var program = compiled.Fused;
        CollectionAssert.AreEqual(new[] { "MatMulRelu" }, program.FusedOps.ToArray());
        using var input = tensor(Enumerable.Range(0, 12).Select(v => v - 6f).ToArray(), [3, 4]);
        using var scope = NewDisposeScope();
        var values = program.Forward(new Dictionary<string, Tensor> { ["x"] = input }, new OpContext { Training = true }, ["k", "y"]);
        var k = values["k"].detach().data<float>().ToArray();
        Assert.IsTrue(k.Any(v => v < 0), "the MatMul's value has negatives");
        CollectionAssert.AreEqual(k.Select(v => Math.Max(v, 0f)).ToArray(), values["y"].detach().data<float>().ToArray());
    }

    [TestMethod]
    public void InPlaceReluGradientsInFloat64EqualTheNodesAsWrittenAndFiniteDifferences()
    {
        var b = new GraphBuilder(13);
        b.TypedInput("x", 11, 2, 2, 4, 4);
        b.TypedInput("w", 11, 3, 2, 3, 3);
        b.TypedInput("u", 11, 2, 3, 4, 4);
        b.Node("Conv", ["x", "w"], "c", new AttributeProto { Name = "pads", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 1, 1, 1, 1 } });
        b.Node("Relu", ["c"], "r");
        b.Node("Add", ["r", "u"], "a");
        b.Node("Relu", ["a"], "y");
        b.Output("y");
        using var compiled = b.Compile();
        var fused = compiled.Fused;
        var plain = compiled.Plain;
        CollectionAssert.AreEqual(new[] { "ConvRelu", "AddRelu" }, fused.FusedOps.ToArray());
        using var generator = new Generator(21);
        var feeds = b.Inputs.ToDictionary(p => p.Key, p => randn(p.Value, ScalarType.Float64, generator: generator));
        using var r = randn([2, 3, 4, 4], ScalarType.Float64, generator: generator);
        double Loss(OnnxProgram program, Dictionary<string, Tensor> inputs)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            return (program.Forward(inputs, new OpContext())["y"] * r).sum().item<double>();
        }

        Dictionary<string, double[]> Gradients(OnnxProgram program)
        {
            using var scope = NewDisposeScope();
            var inputs = feeds.ToDictionary(f => f.Key, f => f.Value.detach().clone().requires_grad_(true));
            (program.Forward(inputs, new OpContext { Training = true })["y"] * r).sum().backward();
            return inputs.ToDictionary(i => i.Key, i => i.Value.grad!.data<double>().ToArray());
        }

        var (ours, asWritten) = (Gradients(fused), Gradients(plain));
        const double h = 1e-6;
        foreach (var (name, value) in feeds)
        {
            Assert.IsLessThanOrEqualTo(1e-12, ours[name].Zip(asWritten[name], (p, q) => Math.Abs(p - q)).Max(), $"d/d{name} against the nodes as written");
            var scale = Math.Max(1, ours[name].Max(Math.Abs));
            var flat = value.view(-1);
            for (var k = 0; k < flat.numel(); k++)
            {
                var at = value.data<double>()[k];
                using var element = flat[k];
                element.fill_(at + h);
                var up = Loss(fused, feeds);
                element.fill_(at - h);
                var down = Loss(fused, feeds);
                element.fill_(at);
                Assert.IsLessThanOrEqualTo(1e-6 * scale, Math.Abs(((up - down) / (2 * h)) - ours[name][k]), $"d/d{name}[{k}] against finite differences");
            }
        }
    }

    [TestMethod]
    public void ReluThenMaxPoolPoolsFirstAndMatchesOnnxRuntimeWithTheSameBits()
    {
        var b = new GraphBuilder(13);
        b.Input("x", 2, 3, 8, 8);
        b.Input("u", 2, 4, 9, 9);
        b.Weight("w", 4, 3, 3, 3);
        b.Weight("cb", 4);
        b.Node("Conv", ["x", "w", "cb"], "c", Ints("pads", 1, 1, 1, 1));
        b.Node("Relu", ["c"], "r1");
        b.Node("MaxPool", ["r1"], "p1", Ints("kernel_shape", 2, 2), Ints("strides", 2, 2));
        b.Node("Relu", ["u"], "r2");
        b.Node("MaxPool", ["r2"], "p2", Ints("kernel_shape", 2, 2), Ints("strides", 2, 2), new AttributeProto { Name = "ceil_mode", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        b.Node("Relu", ["u"], "r3");
        b.Node("MaxPool", ["r3"], "p3", Ints("kernel_shape", 3, 3), Ints("strides", 2, 2), Ints("pads", 1, 1, 1, 1));
        b.Output("p1");
        b.Output("p2");
        b.Output("p3");

        // p2's partial windows (ceil mode on 9 × 9) are not the gathered pool's: there the Relu runs first, as written;
        // p3's 3×3 windows are not matched.
        CheckAgainstOrt(b, ["ConvMaxPoolRelu", "MaxPoolRelu"]);
        CheckSameBits(b, new OpContext { Training = true });
    }

    /// <summary>Windows of zeros, negatives, ties and NaNs: the pooled ReLU and the ReLU'd pool agree bit for bit, values and input gradient, except that a −0 maximum may stay −0.</summary>
    [TestMethod]
    public void PoolingBeforeTheReluKeepsTiesZerosAndNaNs()
    {
        var b = new GraphBuilder(13);
        b.Input("x", 2, 3, 10, 12);
        b.Node("Relu", ["x"], "r");
        b.Node("MaxPool", ["r"], "y", Ints("kernel_shape", 2, 2), Ints("strides", 2, 2));
        b.Output("y");
        using var compiled = b.Compile();
        var fused = compiled.Fused;
        var plain = compiled.Plain;
        CollectionAssert.AreEqual(new[] { "MaxPoolRelu" }, fused.FusedOps.ToArray());
        float[] pool = [float.NaN, float.NegativeInfinity, float.PositiveInfinity, -0f, 0f, -1f, 1f, -2f, 2f];
        var random = new Random(4);
        using var x = tensor([.. Enumerable.Range(0, 720).Select(_ => pool[random.Next(pool.Length)])], [2, 3, 10, 12]);
        using var generator = new Generator(8);
        using var upstream = randn([2, 3, 5, 6], generator: generator);
        (float[] Y, float[] Grad) Run(OnnxProgram program)
        {
            using var scope = NewDisposeScope();
            var input = x.detach().clone().requires_grad_(true);
            var y = program.Forward(new Dictionary<string, Tensor> { ["x"] = input }, new OpContext { Training = true })["y"];
            (y * upstream).nan_to_num().sum().backward();
            return (y.detach().data<float>().ToArray(), input.grad!.data<float>().ToArray());
        }

        var (ours, ourGrad) = Run(fused);
        var (asWritten, theirGrad) = Run(plain);
        Assert.IsTrue(asWritten.Any(float.IsNaN) && asWritten.Count(v => v == 0) > 3, "the case has NaN and zero windows");
        CollectionAssert.AreEqual(asWritten.Select(v => v == 0 ? 0f : v).ToArray(), ours.Select(v => v == 0 ? 0f : v).ToArray(), "values up to the sign of zero");
        CollectionAssert.AreEqual(theirGrad, ourGrad, "input gradient");
    }

    [TestMethod]
    public void ReluThenMaxPoolRunsAsWrittenWhenIndicesAreAskedOrTheReluIsReadElsewhere()
    {
        var b = new GraphBuilder(13);
        b.Input("x", 2, 3, 6, 6);
        b.Weight("w", 3, 3, 1, 1);
        b.Node("Conv", ["x", "w"], "c1");
        b.Node("Relu", ["c1"], "r1");
        b.Node("MaxPool", ["r1"], ["p1", "i1"], Ints("kernel_shape", 2, 2), Ints("strides", 2, 2));
        b.Node("Conv", ["x", "w"], "c2");
        b.Node("Relu", ["c2"], "r2");
        b.Node("MaxPool", ["r2"], "p2", Ints("kernel_shape", 2, 2), Ints("strides", 2, 2));
        b.Node("Conv", ["x", "w"], "c3");
        b.Node("Relu", ["c3"], "r3");
        b.Node("MaxPool", ["r3"], "p3", Ints("kernel_shape", 2, 2), Ints("strides", 2, 2));
        b.Node("Add", ["p2", "p3"], "a");
        b.Output("p1");
        b.Output("r2");
        b.Output("a");
        CheckAgainstOrt(b, ["ConvRelu", "ConvRelu", "ConvMaxPoolRelu"]);
    }

    private static AttributeProto Ints(string name, params long[] values) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { values } };

    /// <summary>Fused and unfused give bit-equal outputs and gradients (every parameter and input) in <paramref name="context"/>;
    /// returns the buffers before and after one forward of each, by name.</summary>
    private static (Dictionary<string, float[]> Initial, Dictionary<string, float[]> Fused, Dictionary<string, float[]> Plain) CheckSameBits(GraphBuilder builder, OpContext context, string[]? expectedFusions = null)
    {
        using var compiled = builder.Compile();
        var fused = compiled.Fused;
        var plain = compiled.Plain;
        Assert.IsNotEmpty(fused.FusedOps);
        if (expectedFusions is not null)
        {
            CollectionAssert.AreEqual(expectedFusions, fused.FusedOps.ToArray());
        }

        var initial = fused.Buffers.ToDictionary(p => p.Key, p => p.Value.data<float>().ToArray());
        var random = new Random(9);
        var feeds = builder.Inputs.ToDictionary(p => p.Key, p => tensor([.. Enumerable.Range(0, (int)p.Value.Aggregate(1L, (a, d) => a * d)).Select(_ => (random.NextSingle() * 6) - 3)], p.Value));
        (Dictionary<string, float[]> Values, Dictionary<string, float[]> Buffers) Run(OnnxProgram program)
        {
            using var scope = NewDisposeScope();
            var inputs = feeds.ToDictionary(f => f.Key, f => f.Value.detach().clone().requires_grad_(true));
            var outputs = program.Forward(inputs, context);
            using var generator = new Generator(13);
            outputs.Values.Select(o => (o * randn(o.shape, generator: generator)).sum()).Aggregate((a, c) => a + c).backward();
            var values = outputs.ToDictionary(o => o.Key, o => o.Value.detach().data<float>().ToArray());
            foreach (var (name, p) in program.Parameters)
            {
                values[$"d/d{name}"] = p.grad!.data<float>().ToArray();
                p.grad.zero_();
            }

            foreach (var (name, input) in inputs)
            {
                values[$"d/d{name}"] = input.grad!.data<float>().ToArray();
            }

            return (values, program.Buffers.ToDictionary(p => p.Key, p => p.Value.data<float>().ToArray()));
        }

        var (ours, ourBuffers) = Run(fused);
        var (asWritten, theirBuffers) = Run(plain);
        Assert.HasCount(asWritten.Count, ours);
        foreach (var (name, value) in asWritten)
        {
            CollectionAssert.AreEqual(value, ours[name], name);
        }

        return (initial, ourBuffers, theirBuffers);
    }

    /// <summary>The graph's fusions are <paramref name="expectedFusions"/>; its outputs equal ONNX Runtime's, and the
    /// gradients of Σ outputs · r equal those of the same graph unfused.</summary>
    private static void CheckAgainstOrt(GraphBuilder builder, string[] expectedFusions)
    {
        using var compiled = builder.Compile();
        var program = compiled.Fused;
        var plain = compiled.Plain;
        CollectionAssert.AreEqual(expectedFusions, program.FusedOps.ToArray());
        var random = new Random(5);
        var feeds = builder.Inputs.ToDictionary(p => p.Key, p => tensor([.. Enumerable.Range(0, (int)p.Value.Aggregate(1L, (a, d) => a * d)).Select(_ => (random.NextSingle() * 6) - 3)], p.Value));
        var ort = RunOrt(compiled.Path, feeds);
        var (ours, grads) = OutputsAndGradients(program, feeds);
        var (_, plainGrads) = OutputsAndGradients(plain, feeds);
        foreach (var (name, expected) in ort)
        {
            Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(ours[name], expected), name);
        }

        Assert.HasCount(plainGrads.Count, grads);
        foreach (var (name, grad) in plainGrads)
        {
            Assert.IsLessThanOrEqualTo(Tolerance, RelativeGap(grads[name], grad), $"gradient of {name}");
        }
    }

    /// <summary>The outputs, and the gradients of Σ outputs · r (r fixed) by parameter and by graph input.</summary>
    private static (Dictionary<string, float[]> Outputs, Dictionary<string, float[]> Gradients) OutputsAndGradients(OnnxProgram program, Dictionary<string, Tensor> feeds)
    {
        using var scope = NewDisposeScope();
        var inputs = feeds.ToDictionary(f => f.Key, f => f.Value.detach().clone().requires_grad_(true));
        var outputs = program.Forward(inputs, new OpContext { Training = true });
        using var generator = new Generator(13);
        var loss = outputs.Values.Select(o => (o * randn(o.shape, generator: generator)).sum()).Aggregate((a, c) => a + c);
        loss.backward();
        var grads = program.Parameters.Where(p => p.Value.grad is not null).ToDictionary(p => p.Key, p => p.Value.grad!.data<float>().ToArray());
        foreach (var (name, input) in inputs)
        {
            grads[$"input {name}"] = input.grad!.data<float>().ToArray();
        }

        foreach (var p in program.Parameters.Values)
        {
            p.grad?.zero_();
        }

        return (outputs.ToDictionary(o => o.Key, o => o.Value.detach().data<float>().ToArray()), grads);
    }

    /// <summary>Logits and d(Σ logits · r)/dθ for a fixed r, by parameter name.</summary>
    private static (float[] Logits, Dictionary<string, float[]> Gradients) LogitsAndGradients(OnnxProgram program, Dictionary<string, Tensor> feeds)
    {
        using var scope = NewDisposeScope();
        var logits = program.Forward(feeds, new OpContext { Training = true })["logits"];
        using var generator = new Generator(11);
        var weights = randn(logits.shape, generator: generator);
        (logits * weights).sum().backward();
        var grads = program.Parameters.Where(p => p.Value.grad is not null).ToDictionary(p => p.Key, p => p.Value.grad!.data<float>().ToArray());
        foreach (var p in program.Parameters.Values)
        {
            p.grad?.zero_();
        }

        return (logits.detach().data<float>().ToArray(), grads);
    }

    /// <summary>A small float32 graph built node by node, with seeded random weights.</summary>
    private sealed class Compiled : IDisposable
    {
        private readonly Scratch _scratch = new();
        private readonly OnnxModel _model;

        public Compiled(GraphBuilder builder)
        {
            Path = System.IO.Path.Combine(_scratch.Path, "g.onnx");
            builder.Save(Path);
            _model = OnnxModel.Open(Path);
            Fused = OnnxProgram.Load(_model);
            Plain = OnnxProgram.Load(_model, fuse: false);
        }

        public string Path { get; }

        public OnnxProgram Fused { get; }

        public OnnxProgram Plain { get; }

        public void Dispose()
        {
            Plain.Dispose();
            Fused.Dispose();
            _model.Dispose();
            _scratch.Dispose();
        }
    }

    private sealed class GraphBuilder(int opset = 17)
    {
        private readonly GraphProto _graph = new() { Name = "g" };
        private readonly Random _random = new(3);

        public Dictionary<string, long[]> Inputs { get; } = [];

        public void Input(string name, params long[] shape) => TypedInput(name, 1, shape);

        /// <summary>An input of ONNX element type <paramref name="elemType"/> (1 float32, 11 float64).</summary>
        public void TypedInput(string name, int elemType, params long[] shape)
        {
            Inputs[name] = shape;
            var dims = new TensorShapeProto();
            dims.Dim.AddRange(shape.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
            _graph.Input.Add(new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elemType, Shape = dims } } });
        }

        /// <summary>A weight drawn from [0.5, 1.5) (a variance).</summary>
        public void Positive(string name, params long[] shape)
        {
            var tensor = new TensorProto { Name = name, DataType = 1 };
            tensor.Dims.AddRange(shape);
            tensor.FloatData.AddRange(Enumerable.Range(0, (int)shape.Aggregate(1L, (a, d) => a * d)).Select(_ => _random.NextSingle() + 0.5f));
            _graph.Initializer.Add(tensor);
        }

        public void Weight(string name, params long[] shape)
        {
            var tensor = new TensorProto { Name = name, DataType = 1 };
            tensor.Dims.AddRange(shape);
            tensor.FloatData.AddRange(Enumerable.Range(0, (int)shape.Aggregate(1L, (a, d) => a * d)).Select(_ => (_random.NextSingle() * 2) - 1));
            _graph.Initializer.Add(tensor);
        }

        /// <summary>A scalar as a Constant node, as the exporters write GELU's constants.</summary>
        public void Scalar(string name, float value)
        {
            var tensor = new TensorProto { DataType = 1 };
            tensor.FloatData.Add(value);
            var node = new NodeProto { OpType = "Constant", Name = name + "_constant" };
            node.Output.Add(name);
            node.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = tensor });
            _graph.Node.Add(node);
        }

        public void Ints(string name, params long[] values)
        {
            var tensor = new TensorProto { Name = name, DataType = 7, Dims = { values.Length } };
            tensor.Int64Data.AddRange(values);
            _graph.Initializer.Add(tensor);
        }

        public void Node(string op, string[] inputs, string output, params AttributeProto[] attributes) => Node(op, inputs, [output], attributes);

        public void Node(string op, string[] inputs, string[] outputs, params AttributeProto[] attributes)
        {
            var node = new NodeProto { OpType = op, Name = outputs[0] + "_node" };
            node.Input.AddRange(inputs);
            node.Attribute.AddRange(attributes);
            node.Output.AddRange(outputs);
            _graph.Node.Add(node);
        }

        public void Output(string name) => _graph.Output.Add(new ValueInfoProto { Name = name });

        /// <summary>The graph saved to a scratch file and loaded twice: with node fusion and without.</summary>
        public Compiled Compile() => new(this);

        public void Save(string path)
        {
            var model = new ModelProto { IrVersion = 8, Graph = _graph, OpsetImport = { new OperatorSetIdProto { Version = opset } } };
            File.WriteAllBytes(path, model.ToByteArray());
        }
    }
}
