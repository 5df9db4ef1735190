using System.Reflection;
using System.Reflection.Emit;
using Recycling.Onnx;
using Recycling.Training;
using Recycling.Training.Recipes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// Fine-tunings on several threads at once (the recipes' runs). The crash this pins: TorchSharp passes numbers to
/// LibTorch as implicit Scalars that a garbage collection on another thread could free mid-call ("Exception raised
/// from toFloat" in AdamW's addcdiv_, 1 run in many). A stand-alone repro (4 threads of TorchSharp's AdamW on one
/// 64-value parameter, a 5th thread collecting) failed within 5,000 steps every time; with explicit Scalars it ran
/// 290,000 steps clean. The IL scan below keeps every number this assembly hands LibTorch explicit.
/// </summary>
[TestClass]
public sealed class ConcurrentTrainingTests
{
    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    [TestMethod]
    public void NoNumberReachesLibTorchAsAnImplicitScalar()
    {
        var torchSharp = typeof(torch).Assembly;
        var creates = new Dictionary<MethodBase, bool>();
        bool CreatesScalar(MethodBase method)
        {
            if (IsImplicitScalar(method) || IsExplicitScalar(method))
            {
                return true;
            }

            if (method.DeclaringType?.Assembly != torchSharp)
            {
                return false;
            }

            if (creates.TryGetValue(method, out var known))
            {
                return known;
            }

            creates[method] = false; // a cycle adds nothing
            return creates[method] = Calls(method).Any(CreatesScalar);
        }

        var problems = new List<string>();
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        var training = typeof(FineTuner).Assembly;
        foreach (var type in training.GetTypes())
        {
            var owner = type;
            while (owner.DeclaringType is not null)
            {
                owner = owner.DeclaringType;
            }

            var mayCreate = owner == typeof(TorchScalars) || owner == typeof(ParameterOptimizer);
            foreach (var method in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
            {
                foreach (var call in Calls(method))
                {
                    var site = $"{type.FullName}.{method.Name} calls {call.DeclaringType?.Name}.{call.Name}";
                    if (IsImplicitScalar(call) || (IsExplicitScalar(call) && !mayCreate))
                    {
                        problems.Add(site);
                    }
                    else if (call.DeclaringType?.Assembly == torchSharp && !IsExplicitScalar(call) && CreatesScalar(call))
                    {
                        problems.Add(site + ", which makes a Scalar inside");
                    }
                    else if (call.DeclaringType is { } declaring && (declaring.FullName == "TorchSharp.torch+optim" || typeof(OptimizerHelper).IsAssignableFrom(declaring)))
                    {
                        problems.Add(site + ": TorchSharp's optimizers step with implicit Scalars; use ParameterOptimizer");
                    }
                }
            }
        }

        Assert.IsEmpty(problems, string.Join("\n", problems.Distinct()));
    }

    [TestMethod]
    [DataRow(OptimizerKind.Sgd, 0.0, false, 0.0)]
    [DataRow(OptimizerKind.Sgd, 0.9, false, 0.01)]
    [DataRow(OptimizerKind.Sgd, 0.9, true, 0.0)]
    [DataRow(OptimizerKind.Adam, 0.0, false, 0.0)]
    [DataRow(OptimizerKind.Adam, 0.0, false, 0.05)]
    [DataRow(OptimizerKind.AdamW, 0.0, false, 0.01)]
    public void OptimizerStepsEqualTorchSharpsAndResumeFromTheirState(OptimizerKind kind, double momentum, bool nesterov, double decay)
    {
        // Reference: TorchSharp's own optimizer (single thread, where its Scalars are safe), 6 steps at changing rates.
        using var scope = NewDisposeScope();
        var reference = Parameters();
        var ours = Parameters();
        using var theirs = kind switch
        {
            OptimizerKind.Sgd => optim.SGD(reference, 0.1, momentum, 0, decay, nesterov),
            OptimizerKind.Adam => optim.Adam(reference, 0.1, weight_decay: decay),
            _ => (optim.Optimizer)optim.AdamW(reference, 0.1, weight_decay: decay),
        };
        var optimizer = new ParameterOptimizer(kind, ours, decay, momentum, nesterov);
        ParameterOptimizer? resumed = null;
        try
        {
            for (var step = 0; step < 6; step++)
            {
                var lr = 0.1 / (step + 1);
                foreach (var group in theirs.ParamGroups)
                {
                    group.LearningRate = lr;
                }

                theirs.zero_grad();
                Loss(reference).backward();
                theirs.step();
                var current = resumed ?? optimizer;
                current.ZeroGrad();
                Loss(ours).backward();
                current.Step(lr);
                if (step == 2)
                {
                    // A checkpoint: a new optimizer over the same parameters continues from the saved state.
                    resumed = new ParameterOptimizer(kind, ours, decay, momentum, nesterov);
                    resumed.LoadState(optimizer.State());
                }

                for (var k = 0; k < ours.Count; k++)
                {
                    var gap = (ours[k] - reference[k]).abs().max().item<float>();
                    Assert.IsLessThanOrEqualTo(1e-6f, gap, $"{kind} step {step + 1}, parameter {k}");
                }
            }

            Assert.ThrowsExactly<InvalidDataException>(() => new ParameterOptimizer(kind, [ours[0]], decay, momentum, nesterov).LoadState(optimizer.State()));
        }
        finally
        {
            optimizer.Dispose();
            resumed?.Dispose();
        }
    }

    [TestMethod]
    public void FineTuningsOnFourThreadsWhileCollectingGarbageEndAsSequentialOnes()
    {
        using var scratch = new Scratch();
        var train = TinyZoo.WriteSplit(Path.Combine(scratch.Path, "train"), 96, seed: 1);
        FineTuneOptions Options(int seed, string output) => new()
        {
            Model = TinyZoo.BaseFixture,
            Train = train,
            Output = output,
            Epochs = 8,
            BatchSize = 4,
            Seed = seed,
            Settings = new TrainingSettings { Optimizer = OptimizerKind.AdamW, LearningRate = 1e-3 },
            Checkpoint = new CheckpointSettings { Enabled = false },
        };

        const int runs = 4;
        var sequential = Enumerable.Range(0, runs).Select(i => Path.Combine(scratch.Path, $"sequential{i}.onnx")).ToArray();
        for (var i = 0; i < runs; i++)
        {
            FineTuner.Run(Options(i, sequential[i]));
        }

        var concurrent = Enumerable.Range(0, runs).Select(i => Path.Combine(scratch.Path, $"concurrent{i}.onnx")).ToArray();
        using var stop = new CancellationTokenSource();
        var collector = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }
        });
        collector.Start();
        var failures = new Exception?[runs];
        try
        {
            var threads = Enumerable.Range(0, runs).Select(i => new Thread(() =>
            {
                try
                {
                    FineTuner.Run(Options(i, concurrent[i]));
                }
                catch (Exception e)
                {
                    failures[i] = e;
                }
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
        }
        finally
        {
            stop.Cancel();
            collector.Join();
        }

        Assert.IsEmpty(failures.OfType<Exception>(), string.Join("\n", failures.OfType<Exception>().Select(e => e.ToString())));
        for (var i = 0; i < runs; i++)
        {
            using var a = OnnxModel.Open(sequential[i]);
            using var b = OnnxModel.Open(concurrent[i]);
            foreach (var tensor in a.Tensors.Where(t => t.Kind == TensorKind.Initializer && t.DataType == OnnxDataType.Float))
            {
                var expected = tensor.ReadFloat32();
                var actual = b.Tensors.Single(t => t.Path == tensor.Path).ReadFloat32();
                var scale = Math.Max(1e-6f, expected.Max(MathF.Abs));
                var gap = expected.Zip(actual, (x, y) => MathF.Abs(x - y)).Max();
                Assert.IsLessThanOrEqualTo(1e-4f * scale, gap, $"run {i}, {tensor.Name}: concurrent and sequential runs agree to float tolerance");
            }
        }
    }

    /// <summary>
    /// LibTorch's thread count is per thread: every run of a recipe computes with the recipe's count (cores divided
    /// among its parallel runs), also on pool threads that ran LibTorch before with another count.
    /// </summary>
    [TestMethod]
    public void EveryRunComputesWithTheRecipesLibTorchThreadCount()
    {
        using var scratch = new Scratch();
        var original = get_num_threads();
        Parallel.For(0, 64, _ => set_num_threads(3));
        try
        {
            var store = new RunStore(scratch.Path, 2);
            var specs = Enumerable.Range(0, 6).Select(i => new RunSpec { Kind = "threads", Label = $"run {i}", Parameters = new Dictionary<string, string> { ["i"] = $"{i}" } }).ToList();
            var seen = new System.Collections.Concurrent.ConcurrentBag<int>();
            store.RunAll(specs, (_, output) =>
            {
                seen.Add(get_num_threads());
                File.WriteAllText(output, "a model");
                return new Dictionary<string, double>();
            });
            var expected = Math.Max(1, Environment.ProcessorCount / 2);
            Assert.HasCount(6, seen);
            Assert.IsTrue(seen.All(n => n == expected), $"expected {expected} everywhere, saw {string.Join(", ", seen)}");
        }
        finally
        {
            Parallel.For(0, 64, _ => set_num_threads(original));
        }
    }

    private static List<Parameter> Parameters()
    {
        var generator = new Generator(3);
        return [new Parameter(randn([5, 3], generator: generator)), new Parameter(randn([3], generator: generator))];
    }

    private static Tensor Loss(List<Parameter> parameters) => (parameters[0].sin() * parameters[0]).sum() + parameters[1].exp().sum();

    private static bool IsImplicitScalar(MethodBase method) => method.DeclaringType == typeof(Scalar) && method.Name == "op_Implicit";

    private static bool IsExplicitScalar(MethodBase method) => method.DeclaringType == typeof(ScalarExtensionMethods) && method.Name.StartsWith("To", StringComparison.Ordinal) && method.Name.EndsWith("Scalar", StringComparison.Ordinal);

    /// <summary>The methods <paramref name="method"/>'s IL calls (call, callvirt, newobj, ldftn).</summary>
    private static IEnumerable<MethodBase> Calls(MethodBase method)
    {
        byte[]? il;
        try
        {
            il = method.GetMethodBody()?.GetILAsByteArray();
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or BadImageFormatException)
        {
            yield break;
        }

        if (il is null)
        {
            yield break;
        }

        var typeArguments = method.DeclaringType is { IsGenericType: true } t ? t.GetGenericArguments() : null;
        var methodArguments = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (var i = 0; i < il.Length;)
        {
            var value = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
            i += il[i] == 0xFE ? 2 : 1;
            var op = OpCodesByValue[value];
            if (op.OperandType == OperandType.InlineMethod)
            {
                MethodBase? target = null;
                try
                {
                    target = method.Module.ResolveMethod(BitConverter.ToInt32(il, i), typeArguments, methodArguments);
                }
                catch (Exception e) when (e is ArgumentException or BadImageFormatException or TypeLoadException or FileNotFoundException)
                {
                }

                if (target is not null)
                {
                    yield return target;
                }
            }

            i += op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + (4 * BitConverter.ToInt32(il, i)),
                _ => 4,
            };
        }
    }
}
