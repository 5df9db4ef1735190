using System.Diagnostics;
using System.Text.Json.Nodes;
using Recycling.Onnx.Numpy;
using TorchSharp;

namespace Recycling.Bench;

/// <summary>
/// <c>train-speed --in-process</c>: ours and the hand-written module (and, with --unfused, the unfused program) trained
/// in one process on one thread, alternating every --steps steps for --rounds rounds (the order rotating), each
/// block timed by the CPU time of that thread and by the wall clock. Separate processes measure each implementation
/// with its own memory (its peak RSS), but also with its own heap layout, JIT state and load moment; here both share
/// them, and the ratios are paired within a round, seconds apart. This is the interpreter's overhead with the process
/// held equal. The hand-written module runs twice: with TorchSharp's optimizer (as a TorchSharp user writes it) and
/// with ours (<see cref="Training.ParameterOptimizer"/>), so that the second ratio is the forward and backward alone.
/// With --default-kernels, ours also runs with LibTorch's default kernels (as the hand-written module does): that
/// against the hand-written module is the interpreter's overhead alone; with --kernels K, ours runs with the kernels K
/// (ours / default kernels: what K gains on the whole step, paired in one process).
/// </summary>
internal static partial class TrainSpeed
{
    private static JsonNode RunPaired(string name, string npz, Config config, int rounds, string[] args) =>
        RunJson(Environment.ProcessPath!, [.. SelfArgs(), "train-speed-paired", name, npz, .. config.Args, "--rounds", $"{rounds}",
            .. args.Contains("--unfused") ? new[] { "--unfused" } : [], .. args.Contains("--default-kernels") ? new[] { "--default-kernels" } : [], .. ResNetArgs(args), .. KernelArgs(args)]);

    /// <summary>
    /// A stepper of ours that runs with LibTorch's default kernel for every node: the choice is read at each node's
    /// forward, so it is switched for the step alone and the other implementations in this process keep theirs.
    /// </summary>
    private static (Func<double> Step, IDisposable Owner) WithDefaultKernels((Func<double> Step, IDisposable Owner) stepper)
    {
        return (() =>
        {
            var allowed = Training.Ops.KernelChoice.Allowed;
            Training.Ops.KernelChoice.Allowed = Training.Ops.KernelChoice.Kinds.None;
            try
            {
                return stepper.Step();
            }
            finally
            {
                Training.Ops.KernelChoice.Allowed = allowed;
            }
        }, stepper.Owner);
    }

    /// <summary>The paired worker: one JSON line with each implementation's per-round step times and the paired ratios.</summary>
    private static int PairedWorker(string[] args)
    {
        var (name, npz) = (args[1], args[2]);
        var config = Config.From(args);
        var rounds = Int(args, "--rounds", 3);
        Training.NativeHeap.KeepFreedMemory();
        torch.set_num_threads(config.Threads);
        if (BenchSupport.Option(args, "--kernels") is { } kinds)
        {
            // Ours with these kernels; "default" (--default-kernels) still runs with none of them.
            Training.Ops.KernelChoice.Allowed = Enum.Parse<Training.Ops.KernelChoice.Kinds>(kinds, ignoreCase: true);
        }
        var model = TrainSpeedModel.All(FindRepository(), BenchSupport.Option(args, "--resnet18")).Single(m => m.Name == name);
        var arrays = NpyFile.ReadNpz(npz);
        string[] impls = ["ours", .. args.Contains("--unfused") ? new[] { "unfused" } : [], .. args.Contains("--default-kernels") ? new[] { "default" } : [], "hand", "hand-sameopt"];
        var steppers = impls.ToDictionary(i => i, i => i == "default" ? WithDefaultKernels(Stepper(i, model, config, arrays)) : Stepper(i, model, config, arrays));
        try
        {
            var loss0 = new JsonObject();
            foreach (var impl in impls)
            {
                var warming = Stopwatch.StartNew();
                loss0[impl] = steppers[impl].Step();
                for (var k = 1; config.WarmingUp(k, warming.Elapsed); k++)
                {
                    steppers[impl].Step();
                }
            }

            GC.Collect();
            GC.WaitForPendingFinalizers();
            var threadTimes = impls.ToDictionary(i => i, _ => new List<double>());
            var wallTimes = impls.ToDictionary(i => i, _ => new List<double>());
            for (var r = 0; r < rounds; r++)
            {
                foreach (var impl in impls.Skip(r % impls.Length).Concat(impls.Take(r % impls.Length)))
                {
                    var step = steppers[impl].Step;
                    var thread = ThreadCpuSeconds();
                    var clock = Stopwatch.StartNew();
                    for (var k = 0; k < config.Steps; k++)
                    {
                        step();
                    }

                    wallTimes[impl].Add(clock.Elapsed.TotalSeconds / config.Steps);
                    if (double.IsFinite(thread))
                    {
                        threadTimes[impl].Add((ThreadCpuSeconds() - thread) / config.Steps);
                    }
                }
            }

            var result = new JsonObject { ["rounds"] = rounds, ["steps_per_round"] = config.Steps, ["loss0"] = loss0 };
            foreach (var impl in impls)
            {
                result[impl] = new JsonObject
                {
                    ["wall_s_per_step"] = BenchSupport.Median(wallTimes[impl]),
                    ["wall_s_per_step_runs"] = new JsonArray([.. wallTimes[impl].Select(t => JsonValue.Create(t))]),
                };
                if (threadTimes[impl].Count > 0)
                {
                    result[impl]!["thread_cpu_s_per_step"] = BenchSupport.Median(threadTimes[impl]);
                    result[impl]!["thread_cpu_s_per_step_runs"] = new JsonArray([.. threadTimes[impl].Select(t => JsonValue.Create(t))]);
                }
            }

            // Rate ratios as the separate-process figures are (above 1: ours is faster), paired per round.
            JsonObject Ratio(Dictionary<string, List<double>> times, string one, string other)
            {
                return BenchSupport.PairedRatios([.. times[other].Zip(times[one], (b, a) => b / a)]);
            }

            // The thread's CPU clock is Linux's (CLOCK_THREAD_CPUTIME_ID); elsewhere only the wall clock is paired.
            foreach (var other in impls.Skip(1))
            {
                result[$"ours_over_{other}"] = Ratio(wallTimes, "ours", other);
                if (threadTimes[other].Count > 0)
                {
                    result[$"ours_over_{other}_thread_cpu"] = Ratio(threadTimes, "ours", other);
                }
            }

            // The same program with LibTorch's default kernels against the hand-written module (which runs them too):
            // the interpreter's own cost, without what choosing kernels by shape gains.
            if (impls.Contains("default"))
            {
                result["default_over_hand"] = Ratio(wallTimes, "default", "hand");
                if (threadTimes["hand"].Count > 0)
                {
                    result["default_over_hand_thread_cpu"] = Ratio(threadTimes, "default", "hand");
                }
            }

            Console.WriteLine(result.ToJsonString());
            return 0;
        }
        finally
        {
            foreach (var (_, owner) in steppers.Values)
            {
                owner.Dispose();
            }
        }
    }
}
