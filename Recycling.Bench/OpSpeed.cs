using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Recycling.Training;
using Recycling.Training.Ops;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Bench;

/// <summary>
/// <c>op-speed [--threads 1] [--reps 30] [--warmup 5] [--only NAME,...] [--mkldnn on|off] [--channels-last] [--keep-freed-memory]</c>: forward + backward of
/// <c>sum(op(x))</c> for each layer shape of the train-speed CNN and ResNet18 (64×64, batch 32), and the optimizer
/// steps over ResNet18's parameter shapes, in LibTorch (TorchSharp); scripts/bench/op_speed.py times the same in
/// PyTorch. With --channels-last every 4-D tensor is in NHWC memory order; with --keep-freed-memory glibc keeps freed memory as the trainer has it (<see cref="NativeHeap"/>). One line per case: name, CPU ms and wall ms per call (medians of the repetitions). It locates where a
/// training step's time goes in the kernels, which train-speed's whole steps cannot.
/// </summary>
internal static class OpSpeed
{
    private static readonly BenchCommand Command = new(
        "op-speed [--threads 1] [--reps 30] [--warmup 5] [--only NAME,...] [--mkldnn on|off] [--channels-last] [--keep-freed-memory]\n"
        + "  forward + backward of each layer shape of the train-speed CNN and ResNet18 in LibTorch, and the optimizer steps",
        ["--threads", "--reps", "--warmup", "--only", "--mkldnn"], ["--channels-last", "--keep-freed-memory"]);

    public static bool TryRun(string[] args, out int exitCode)
    {
        exitCode = 0;
        if (args.Length == 0 || args[0] != "op-speed")
        {
            return false;
        }

        exitCode = BenchSupport.CheckArguments(args, Command) ?? Run(args);
        return true;
    }

    private static int Run(string[] args)
    {
        int Int(string name, int fallback) => BenchSupport.Option(args, name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
        set_num_threads(Int("--threads", 1));
        if (BenchSupport.Option(args, "--mkldnn") is { } mkldnn)
        {
            LibTorchContext.SetMkldnn(mkldnn == "on");
        }

        if (args.Contains("--keep-freed-memory"))
        {
            NativeHeap.KeepFreedMemory();
        }

        var (reps, warmup) = (Int("--reps", 30), Int("--warmup", 5));
        var only = BenchSupport.Option(args, "--only")?.Split(',');
        using var generator = new Generator(0);
        var channelsLast = args.Contains("--channels-last");
        Tensor Rand(long[] shape, bool grad = true)
        {
            var t = randn(shape, generator: generator);
            return (channelsLast && shape.Length == 4 ? t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) : t).requires_grad_(grad);
        }


        var cases = new List<(string Name, Func<Action> Setup)>();
        void Op(string name, long[] input, bool inputGrad, Func<Tensor, Tensor> op) => cases.Add((name, () =>
        {
            var x = Rand(input, inputGrad);
            return () =>
            {
                using var scope = NewDisposeScope();
                op(x).sum().backward();
            };
        }));

        void Conv(string name, long[] input, bool inputGrad, long cout, long k, long stride, long pad, bool bias)
        {
            var w = Rand([cout, input[1], k, k]);
            var b = bias ? Rand([cout]) : null;
            Op(name, input, inputGrad, x => F.conv2d(x, w, b, [stride, stride], [pad, pad]));
        }

        void ConvAs(string name, long[] input, long cout, long k, Func<Tensor, Tensor, Tensor> conv, bool inputGrad = true)
        {
            var w = Rand([cout, input[1], k, k]);
            Op(name, input, inputGrad, x => conv(x, w));
        }

        void BatchNorm(string name, long[] input)
        {
            var (mean, variance) = (zeros(input[1]), ones(input[1]));
            var (scale, shift) = (Rand([input[1]]), Rand([input[1]]));
            Op(name, input, true, x => F.batch_norm(x, mean, variance, scale, shift, true, 0.1, 1e-5));
        }

        // The zoo CNN (28×28×1).
        Conv("cnn.conv1", [32, 1, 28, 28], false, 16, 3, 1, 1, true);
        ConvAs("cnn.conv1.unfold", [32, 1, 28, 28], 16, 3, (x, w) => ConvAsMatmul.Unfolded(x, w, null, [1, 1], [1, 1], [1, 1]), inputGrad: false);
        Conv("cnn.conv2", [32, 16, 14, 14], true, 32, 3, 1, 1, true);
        ConvAs("cnn.conv2.unfold", [32, 16, 14, 14], 32, 3, (x, w) => ConvAsMatmul.Unfolded(x, w, null, [1, 1], [1, 1], [1, 1]));
        Conv("cnn.conv3", [32, 32, 7, 7], true, 64, 3, 1, 1, true);
        Op("cnn.relu1", [32, 16, 28, 28], true, x => F.relu(x));
        Op("cnn.pool1", [32, 16, 28, 28], true, x => F.max_pool2d(x, [2, 2]));
        Op("cnn.pool2", [32, 32, 14, 14], true, x => F.max_pool2d(x, [2, 2]));
        Op("cnn.pool1.nhwc", [32, 16, 28, 28], true, x => MaxPoolChannelsLast.Pool(x, [2, 2], [2, 2], [0, 0], [1, 1], false));
        Op("cnn.pool2.nhwc", [32, 32, 14, 14], true, x => MaxPoolChannelsLast.Pool(x, [2, 2], [2, 2], [0, 0], [1, 1], false));
        Op("cnn.pool1.gathered", [32, 16, 28, 28], true, x => MaxPoolGathered.Pool(x));
        Op("cnn.pool2.gathered", [32, 32, 14, 14], true, x => MaxPoolGathered.Pool(x));
        Op("cnn.relu1.pooled", [32, 16, 14, 14], true, x => F.relu(x));
        var block1 = Rand([16, 1, 3, 3]);
        var block1Bias = Rand([16]);
        Op("cnn.block1.relu-pool", [32, 1, 28, 28], false, x => MaxPoolGathered.Pool(F.conv2d(x, block1, block1Bias, padding: [1, 1]).relu_()));
        Op("cnn.block1.pool-relu", [32, 1, 28, 28], false, x => MaxPoolGathered.Pool(F.conv2d(x, block1, block1Bias, padding: [1, 1])).relu_());
        Op("cnn.block1.relu-pool.libtorch", [32, 1, 28, 28], false, x => F.max_pool2d(F.conv2d(x, block1, block1Bias, padding: [1, 1]).relu_(), [2, 2]));
        Op("cnn.block1.pool-relu.libtorch", [32, 1, 28, 28], false, x => F.max_pool2d(F.conv2d(x, block1, block1Bias, padding: [1, 1]), [2, 2]).relu_());
        Op("cnn.mean", [32, 64, 7, 7], true, x => x.mean([2, 3]));

        // CNTK's ResNet18 at 64×64 (its padding made explicit as the export's is).
        Conv("resnet.conv0", [32, 3, 69, 69], false, 64, 7, 2, 0, false);
        ConvAs("resnet.conv0.unfold", [32, 3, 69, 69], 64, 7, (x, w) => ConvAsMatmul.Unfolded(x, w, null, [2, 2], [0, 0], [1, 1]), inputGrad: false);
        BatchNorm("resnet.bn0", [32, 64, 32, 32]);
        Op("resnet.relu0", [32, 64, 32, 32], true, x => F.relu(x));
        Op("resnet.pool", [32, 64, 33, 33], true, x => F.max_pool2d(x, [3, 3], [2, 2]));
        Op("resnet.pool.nhwc", [32, 64, 33, 33], true, x => MaxPoolChannelsLast.Pool(x, [3, 3], [2, 2], [0, 0], [1, 1], false));
        Conv("resnet.conv64", [32, 64, 16, 16], true, 64, 3, 1, 1, false);
        BatchNorm("resnet.bn64", [32, 64, 16, 16]);
        Conv("resnet.conv128s2", [32, 64, 17, 17], true, 128, 3, 2, 0, false);
        Conv("resnet.conv128", [32, 128, 8, 8], true, 128, 3, 1, 1, false);
        Conv("resnet.conv256", [32, 256, 4, 4], true, 256, 3, 1, 1, false);
        Conv("resnet.conv512", [32, 512, 2, 2], true, 512, 3, 1, 1, false);
        Conv("resnet.proj512", [32, 256, 4, 4], true, 512, 1, 2, 0, false);
        ConvAs("resnet.conv512.dense", [32, 512, 2, 2], 512, 3, (x, w) => ConvAsMatmul.Dense(x, w, null, [1, 1], [1, 1], [1, 1]));
        ConvAs("resnet.proj512.mm", [32, 256, 4, 4], 512, 1, (x, w) => ConvAsMatmul.Pointwise(x, w, null, [2, 2]));
        BatchNorm("resnet.bn512", [32, 512, 2, 2]);

        // The optimizer step over ResNet18's trainable shapes, ours against TorchSharp's SGD.
        cases.Add(("sgd.ours", () => OptimizerStep(generator, ours: true)));
        cases.Add(("sgd.torchsharp", () => OptimizerStep(generator, ours: false)));

        foreach (var (name, setup) in cases.Where(c => only is null || only.Any(o => c.Name.StartsWith(o, StringComparison.Ordinal))))
        {
            var run = setup();
            for (var k = 0; k < warmup; k++)
            {
                run();
            }

            var (cpu, wall, system) = (new double[reps], new double[reps], new double[reps]);
            var process = Process.GetCurrentProcess();
            var faults0 = MinorFaults();
            for (var k = 0; k < reps; k++)
            {
                process.Refresh();
                var (cpu0, system0) = (process.TotalProcessorTime, process.PrivilegedProcessorTime);
                var clock = Stopwatch.StartNew();
                run();
                wall[k] = clock.Elapsed.TotalMilliseconds;
                process.Refresh();
                cpu[k] = (process.TotalProcessorTime - cpu0).TotalMilliseconds;
                system[k] = (process.PrivilegedProcessorTime - system0).TotalMilliseconds;
            }

            var faults = (MinorFaults() - faults0) / (double)reps;

            Console.WriteLine(FormattableString.Invariant($"{name,-20} cpu_ms {BenchSupport.Median(cpu),8:F3} wall_ms {BenchSupport.Median(wall),8:F3} sys_ms {BenchSupport.Median(system),8:F3} minflt {faults,8:F0}"));
        }

        return 0;
    }

    /// <summary>This process's minor page faults so far (/proc/self/stat's 10th field): fresh pages the kernel mapped.</summary>
    private static long MinorFaults()
    {
        var stat = File.ReadAllText("/proc/self/stat");
        return long.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[7], CultureInfo.InvariantCulture);
    }

    /// <summary>ResNet18's 22 convolutions, their BatchNorm scales and shifts and a 2048→10 head, with gradients set; one SGD step (momentum 0.9).</summary>
    private static Action OptimizerStep(Generator generator, bool ours)
    {
        long[][] convs = [[64, 3, 7, 7], [64, 64, 3, 3], [64, 64, 3, 3], [64, 64, 3, 3], [64, 64, 3, 3], [128, 64, 1, 1], [128, 64, 3, 3], [128, 128, 3, 3],
            [128, 128, 3, 3], [128, 128, 3, 3], [256, 128, 1, 1], [256, 128, 3, 3], [256, 256, 3, 3], [256, 256, 3, 3], [256, 256, 3, 3],
            [512, 256, 1, 1], [512, 256, 3, 3], [512, 512, 3, 3], [512, 512, 3, 3], [512, 512, 3, 3], [512, 512, 3, 3], [512, 512, 3, 3]];
        var shapes = convs.SelectMany(c => new[] { c, [c[0]], [c[0]] }).Append([10, 2048]).Append([10]).ToList();
        var parameters = shapes.Select(s => new Parameter(randn(s, generator: generator))).ToList();
        foreach (var p in parameters)
        {
            p.grad = randn(p.shape, generator: generator);
        }

        if (ours)
        {
            var optimizer = new ParameterOptimizer(OptimizerKind.Sgd, parameters, 0, momentum: 0.9);
            return () => optimizer.Step(0.01);
        }

        var sgd = optim.SGD(parameters, 0.01, 0.9);
        return () => sgd.step();
    }
}

/// <summary>LibTorch's global settings that TorchSharp does not expose (at::globalContext()), called by their C++ names.</summary>
internal static partial class LibTorchContext
{
    public static void SetMkldnn(bool enabled) => SetUserEnabledMkldnn(GlobalContext(), enabled);

    [LibraryImport("libtorch_cpu", EntryPoint = "_ZN2at13globalContextEv")]
    private static partial IntPtr GlobalContext();

    [LibraryImport("libtorch_cpu", EntryPoint = "_ZN2at7Context20setUserEnabledMkldnnEb")]
    private static partial void SetUserEnabledMkldnn(IntPtr context, [MarshalAs(UnmanagedType.U1)] bool enabled);
}
