using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recycling.Onnx.Numpy;
using Recycling.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Bench;

/// <summary>
/// <c>train-speed [--models cnn,vit,resnet18] [--batch 32] [--steps 30] [--warmup 5] [--warmup-seconds 5] [--rounds 3] [--threads 1]
/// [--optimizer sgd|adamw] [--resnet18 PATH] [--unfused] [--default-kernels] [--kernels Dense,Pointwise,Unfolded,ChannelsLastPool,GatheredPool] [--in-process [--in-process-rounds N]] [--no-separate] [--from-log LOG] [--md FILE]</c>: training samples/s of three implementations of the same
/// network, same batch, same thread count, each in a fresh process so that its peak RSS is its own:
/// <list type="bullet">
/// <item>ours: the ONNX graph prepared and compiled as `recycle finetune` does, stepped by its <see cref="Trainer"/>
/// (forward, cross-entropy, backward, optimizer step);</item>
/// <item>hand: a hand-written TorchSharp module of the same network (<see cref="HandWrittenModel"/>), same weights;</item>
/// <item>torch: PyTorch (/usr/bin/python3, scripts/bench/train_speed.py), the same network in PyTorch, same weights;</item>
/// <item>unfused (with --unfused): ours with every node run as written, no node fusion, to show what the fusions gain;</item>
/// <item>default (with --default-kernels): ours with LibTorch's default kernel for every node, to show what the kernels
/// chosen by shape gain (--kernels restricts ours to some of them).</item>
/// </list>
/// The three alternate within each round (the order rotating), so a change in the shared machine's load hits all
/// alike; ratios are paired per round and their median reported with their range. Before timing, the hand-written
/// module's loss at step 0 must equal ours within 1e-5 (PyTorch's is reported). With --in-process, ours and the
/// hand-written module are also timed alternating in one process (TrainSpeedPaired.cs), the process held equal;
/// --no-separate runs that alone. Each process also reports each warm-up step's time (what the first steps cost).
/// </summary>
internal static partial class TrainSpeed
{
    private const string PythonPath = "/usr/bin/python3";
    private const double LossTolerance = 1e-5;

    private static readonly string[] ConfigOptions = ["--batch", "--steps", "--warmup", "--warmup-seconds", "--threads", "--optimizer", "--resnet18", "--kernels"];

    /// <summary>train-speed, and its two workers (started by it, one fresh process per measurement).</summary>
    private static readonly Dictionary<string, BenchCommand> Commands = new(StringComparer.Ordinal)
    {
        ["train-speed"] = new("train-speed [--models cnn,vit,resnet18] [--batch 32] [--steps 30] [--warmup 5] [--warmup-seconds 5] [--rounds 3] [--threads 1]\n"
            + "  [--optimizer sgd|adamw] [--resnet18 PATH] [--unfused] [--default-kernels] [--kernels Dense,Pointwise,Unfolded,ChannelsLastPool]\n"
            + "  [--in-process [--in-process-rounds N]] [--no-separate] [--from-log LOG[,LOG...]] [--md FILE]\n"
            + "  training samples/s of ours, a hand-written TorchSharp module and PyTorch on the same network, as JSON",
            [.. ConfigOptions, "--models", "--rounds", "--in-process-rounds", "--from-log", "--md"], ["--unfused", "--default-kernels", "--in-process", "--no-separate"]),
        ["train-speed-worker"] = new("train-speed-worker IMPL MODEL NPZ [train-speed's --batch ... --kernels]\n  one timed run (started by train-speed)",
            ConfigOptions, []) { Positional = ["IMPL", "MODEL", "NPZ"] },
        ["train-speed-paired"] = new("train-speed-paired MODEL NPZ [train-speed's --batch ... --kernels] [--rounds 3] [--unfused] [--default-kernels]\n"
            + "  the in-process pairing (started by train-speed --in-process)",
            [.. ConfigOptions, "--rounds"], ["--unfused", "--default-kernels"]) { Positional = ["MODEL", "NPZ"] },
    };

    public static bool TryRun(string[] args, out int exitCode)
    {
        exitCode = 0;
        if (args.Length == 0 || !Commands.TryGetValue(args[0], out var command))
        {
            return false;
        }

        exitCode = BenchSupport.CheckArguments(args, command) ?? args[0] switch { "train-speed" => Run(args), "train-speed-worker" => Worker(args), _ => PairedWorker(args) };
        return true;
    }

    private static int Int(string[] args, string name, int fallback) => BenchSupport.Option(args, name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;

    /// <summary>
    /// The warm-up runs at least <see cref="Warmup"/> steps and at least <see cref="WarmupSeconds"/> of wall time: the
    /// .NET runtime compiles the step's methods at tier 1 in the background over the first seconds, whatever the
    /// step's length (the zoo CNN and ViT were still 15–25 % slower per step after 100 warm-up steps, about 1.5 s, and
    /// steady after 3–5 s; measured in Recycling.Bench/results/train-speed-quiet-2core.md), so a step count alone
    /// would be too short for the small models or needlessly long for ResNet18.
    /// </summary>
    private sealed record Config(int Batch, int Steps, int Warmup, double WarmupSeconds, int Threads, string Optimizer)
    {
        public static Config From(string[] args) => new(Int(args, "--batch", 32), Int(args, "--steps", 30), Int(args, "--warmup", 5),
            BenchSupport.Option(args, "--warmup-seconds") is { } s ? double.Parse(s, CultureInfo.InvariantCulture) : 5.0, Int(args, "--threads", 1),
            BenchSupport.Option(args, "--optimizer") ?? "sgd");

        public string[] Args => ["--batch", $"{Batch}", "--steps", $"{Steps}", "--warmup", $"{Warmup}", "--warmup-seconds", FormattableString.Invariant($"{WarmupSeconds}"),
            "--threads", $"{Threads}", "--optimizer", Optimizer];

        /// <summary>Whether the warm-up goes on after <paramref name="done"/> steps that took <paramref name="elapsed"/>.</summary>
        public bool WarmingUp(int done, TimeSpan elapsed) => done < Math.Max(Warmup, 1) || elapsed.TotalSeconds < WarmupSeconds;

        public TrainingSettings Settings => Optimizer switch
        {
            "sgd" => new TrainingSettings { Optimizer = OptimizerKind.Sgd, LearningRate = 0.01, Momentum = 0.9 },
            "adamw" => new TrainingSettings { Optimizer = OptimizerKind.AdamW, LearningRate = 1e-3, WeightDecay = 0.01 },
            _ => throw new ArgumentException($"--optimizer {Optimizer}: use sgd or adamw"),
        };
    }

    private static int Run(string[] args)
    {
        if (BenchSupport.Option(args, "--from-log") is { } log)
        {
            return FromLog(args, log);
        }

        var config = Config.From(args);
        var repository = FindRepository();
        var wanted = (BenchSupport.Option(args, "--models") ?? "cnn,vit,resnet18").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var rounds = Int(args, "--rounds", 3);
        var script = Path.Combine(repository, "scripts", "bench", "train_speed.py");
        var python = PythonHasTorch(out var why);
        if (!python)
        {
            Console.Error.WriteLine($"train-speed: PyTorch column skipped: {PythonPath} cannot import torch and numpy ({why})");
        }

        var scratch = Directory.CreateTempSubdirectory("recycling-trainspeed-").FullName;
        var report = new JsonObject
        {
            ["batch"] = config.Batch, ["steps"] = config.Steps, ["warmup"] = config.Warmup, ["warmup_seconds"] = config.WarmupSeconds, ["threads"] = config.Threads,
            ["optimizer"] = config.Optimizer, ["rounds"] = rounds, ["load_average_start"] = LoadAverage(),
        };
        var models = new JsonObject();
        try
        {
            foreach (var model in TrainSpeedModel.All(repository, BenchSupport.Option(args, "--resnet18")).Where(m => wanted.Contains(m.Name)))
            {
                if (!File.Exists(model.Path))
                {
                    Console.Error.WriteLine($"train-speed: skipping {model.Name}: '{model.Path}' not found" + (model.Name == "resnet18" ? " (run `recycle zoo fetch resnet18`)" : ""));
                    continue;
                }

                var npz = Path.Combine(scratch, model.Name + ".npz");
                var (ours0, hand0) = WriteWeightsAndCheck(model, config, npz);
                Console.Error.WriteLine(FormattableString.Invariant($"train-speed: {model.Name}: step-0 loss ours {ours0:R}, hand-written {hand0:R}"));
                if (Math.Abs(ours0 - hand0) > LossTolerance)
                {
                    Console.Error.WriteLine(FormattableString.Invariant($"train-speed: {model.Name}: the hand-written module's step-0 loss differs from ours by {Math.Abs(ours0 - hand0):G3} (> {LossTolerance:G1}): not the same network"));
                    return 1;
                }

                var runs = new Dictionary<string, List<JsonNode>> { ["ours"] = [], ["hand"] = [], ["torch"] = [], ["unfused"] = [], ["default"] = [] };
                string[] order = [.. new[] { "ours", args.Contains("--unfused") ? "unfused" : "", args.Contains("--default-kernels") ? "default" : "", "hand", python ? "torch" : "" }.Where(i => i.Length > 0)];
                for (var r = 0; r < (args.Contains("--no-separate") ? 0 : rounds); r++)
                {
                    foreach (var impl in order.Skip(r % order.Length).Concat(order.Take(r % order.Length)))
                    {
                        var result = impl == "torch"
                            ? RunJson(PythonPath, [script, npz, model.Arch, .. config.Args])
                            : RunJson(Environment.ProcessPath!, [.. SelfArgs(), "train-speed-worker", impl, model.Name, npz, .. config.Args, .. ResNetArgs(args), .. KernelArgs(args)]);
                        // The machine's load as each run ends: rounds at a higher load spread more.
                        result["load_average"] = LoadAverage();
                        Console.Error.WriteLine($"train-speed: {model.Name} round {r + 1} {impl}: {result.ToJsonString()}");
                        runs[impl].Add(result);
                    }
                }

                var summary = runs["ours"].Count > 0 ? Summarise(runs, ours0, python) : [];
                if (args.Contains("--in-process"))
                {
                    var paired = RunPaired(model.Name, npz, config, Int(args, "--in-process-rounds", rounds), args);
                    Console.Error.WriteLine($"train-speed: {model.Name} in one process: {paired.ToJsonString()}");
                    summary["in_process"] = paired;
                }

                models[model.Name] = summary;
            }

            report["load_average_end"] = LoadAverage();
            report["models"] = models;
            var json = report.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
            Console.WriteLine(json);
            if (BenchSupport.Option(args, "--md") is { } md)
            {
                File.WriteAllText(md, Markdown(report));
            }

            return 0;
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    private static string[] KernelArgs(string[] args) => BenchSupport.Option(args, "--kernels") is { } k ? ["--kernels", k] : [];

    private static string[] ResNetArgs(string[] args) => BenchSupport.Option(args, "--resnet18") is { } p ? ["--resnet18", p] : [];

    /// <summary>Writes the initial weights (canonical names) and the batch to <paramref name="npz"/>; returns ours and the hand-written module's loss at step 0.</summary>
    private static (double Ours, double Hand) WriteWeightsAndCheck(TrainSpeedModel model, Config config, string npz)
    {
        using var prepared = model.Prepare(config.Batch);
        var weights = model.CanonicalWeights(prepared);
        var (input, labels) = model.MakeBatch(config.Batch);
        var arrays = weights.Select(w => (w.Key, w.Value.shape, Floats(w.Value)))
            .Append(("input", input.shape, Floats(input)))
            .Append(("labels", labels.shape, Floats(labels)));
        FisherFile.WriteNpz(npz, arrays);

        double ours, hand;
        using (no_grad())
        {
            using var trainer = new Trainer(prepared.Program, "logits", config.Settings);
            using var batch = new Batch(new Dictionary<string, Tensor> { [prepared.Input] = input.clone() }, labels.clone());
            ours = F.cross_entropy(trainer.Logits(batch, new Training.Ops.OpContext { Training = true, BatchNorm = model.BatchNorm }), labels).item<float>();
        }

        using (no_grad())
        {
            using var module = HandWrittenModel.Create(model.Arch, weights);
            module.train();
            hand = F.cross_entropy(module.forward(input), labels).item<float>();
        }

        return (ours, hand);
    }

    private static float[] Floats(Tensor t)
    {
        using var f = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return f.data<float>().ToArray();
    }

    /// <summary>One implementation's timed run in this (fresh) process: JSON with samples/s, step-0 loss, peak RSS.</summary>
    private static int Worker(string[] args)
    {
        var (impl, name, npz) = (args[1], args[2], args[3]);
        var config = Config.From(args);
        // Every .NET side keeps its freed native memory as the trainer sets it (ours would set it in Trainer's ctor),
        // so that ours / hand-written measures the interpreter and not glibc's heap settings.
        NativeHeap.KeepFreedMemory();
        torch.set_num_threads(config.Threads);
        var model = TrainSpeedModel.All(FindRepository(), BenchSupport.Option(args, "--resnet18")).Single(m => m.Name == name);
        // Ours reads only the batch: its weights come from the ONNX file, and holding the .npz's would count in its peak.
        var arrays = impl is "ours" or "unfused" or "default" ? new[] { "input", "labels" }.ToDictionary(k => k, k => NpyFile.ReadNpz(npz, k)) : NpyFile.ReadNpz(npz);
        if (impl is "ours" or "unfused" or "default")
        {
            Training.Ops.KernelChoice.Allowed = impl == "default" ? Training.Ops.KernelChoice.Kinds.None
                : BenchSupport.Option(args, "--kernels") is { } kinds ? Enum.Parse<Training.Ops.KernelChoice.Kinds>(kinds, ignoreCase: true) : Training.Ops.KernelChoice.Allowed;
        }

        var (step, owner) = Stepper(impl, model, config, arrays);
        using (owner)
        {
            // What loading and preparing the model cost at its peak, before any step.
            var preparedPeak = BenchSupport.ProcessStatus().GetValueOrDefault("VmHWM");
            // Each warm-up step's wall and process CPU time: what the first steps cost while the runtime still compiles.
            var (warmWall, warmCpu) = (new JsonArray(), new JsonArray());
            var loss0 = 0.0;
            var warming = Stopwatch.StartNew();
            for (var k = 0; config.WarmingUp(k, warming.Elapsed); k++)
            {
                var (started, startedCpu) = (Stopwatch.GetTimestamp(), ProcessCpuSeconds());
                var loss = step();
                if (k == 0)
                {
                    loss0 = loss;
                }

                warmWall.Add(Stopwatch.GetElapsedTime(started).TotalSeconds);
                if (ProcessCpuSeconds() - startedCpu is var spent && double.IsFinite(spent))
                {
                    warmCpu.Add(spent);
                }
            }

            // The loading's garbage is collected before timing, not during it (both .NET implementations alike).
            GC.Collect();
            GC.WaitForPendingFinalizers();

            var process = Process.GetCurrentProcess();
            var cpu = process.TotalProcessorTime;
            var thread = ThreadCpuSeconds();
            var (allocated, collections) = (GC.GetAllocatedBytesForCurrentThread(), GC.CollectionCount(0));
            var tensors = DisposeScopeManager.Statistics.TensorStatistics.CreatedInScopeCount + DisposeScopeManager.Statistics.TensorStatistics.CreatedOutsideScopeCount;
            var clock = Stopwatch.StartNew();
            for (var k = 0; k < config.Steps; k++)
            {
                step();
            }

            clock.Stop();
            thread = ThreadCpuSeconds() - thread;
            (allocated, collections) = (GC.GetAllocatedBytesForCurrentThread() - allocated, GC.CollectionCount(0) - collections);
            tensors = DisposeScopeManager.Statistics.TensorStatistics.CreatedInScopeCount + DisposeScopeManager.Statistics.TensorStatistics.CreatedOutsideScopeCount - tensors;
            process.Refresh();
            var result = new JsonObject
            {
                ["samples_per_s"] = config.Steps * config.Batch / clock.Elapsed.TotalSeconds,
                ["cpu_s_per_step"] = (process.TotalProcessorTime - cpu).TotalSeconds / config.Steps,
                ["loss0"] = loss0,
                ["peak_rss_bytes"] = BenchSupport.ProcessStatus().GetValueOrDefault("VmHWM"),
                ["peak_rss_before_training_bytes"] = preparedPeak,
                ["threads"] = torch.get_num_threads(),
                ["managed_bytes_per_step"] = allocated / config.Steps,
                ["tensors_per_step"] = tensors / (double)config.Steps,
                ["gen0_collections"] = collections,
                ["warmup_wall_s"] = warmWall,
                ["warmup_cpu_s"] = warmCpu,
            };
            if (double.IsFinite(thread))
            {
                result["thread_cpu_s_per_step"] = thread / config.Steps;
            }

            Console.WriteLine(result.ToJsonString());
        }

        return 0;
    }

    /// <summary>One training step of <paramref name="impl"/> (ours, unfused, hand, or hand-sameopt: hand with our optimizer) on the batch in <paramref name="arrays"/>
    /// (the hand-written module's weights too), and what owns its tensors.</summary>
    private static (Func<double> Step, IDisposable Owner) Stepper(string impl, TrainSpeedModel model, Config config, IReadOnlyDictionary<string, NpyArray> arrays)
    {
        Tensor Load(string key) => tensor(arrays[key].ToSingleArray(), [.. arrays[key].Shape]);
        var input = Load("input");
        using var labelValues = Load("labels");
        var labels = labelValues.to(ScalarType.Int64);
        if (impl is "ours" or "unfused" or "default")
        {
            var prepared = model.Prepare(config.Batch, fuse: impl != "unfused");
            var trainer = new Trainer(prepared.Program, "logits", config.Settings with { BatchNorm = model.BatchNorm });
            var batch = new Batch(new Dictionary<string, Tensor> { [prepared.Input] = input }, labels);
            return (() => trainer.Step(batch), new Owners(trainer, prepared, batch));
        }

        var weights = arrays.Keys.Where(k => k is not ("input" or "labels")).ToDictionary(k => k, Load, StringComparer.Ordinal);
        var module = HandWrittenModel.Create(model.Arch, weights);
        foreach (var w in weights.Values)
        {
            w.Dispose();
        }

        module.train();
        var settings = config.Settings;
        if (impl == "hand-sameopt")
        {
            // The hand-written module stepped by our optimizer: the difference to ours is then the forward and backward alone.
            var same = new ParameterOptimizer(settings.Optimizer, module.Weights, settings.EffectiveWeightDecay, settings.Momentum, settings.Nesterov);
            return (() =>
            {
                using var scope = NewDisposeScope();
                var loss = F.cross_entropy(module.forward(input), labels);
                same.ZeroGrad();
                loss.backward();
                same.Step(settings.LearningRate);
                return loss.item<float>();
            }, new Owners(same, module, input, labels));
        }

        optim.Optimizer optimizer = settings.Optimizer == OptimizerKind.Sgd
            ? optim.SGD(module.Weights, settings.LearningRate, settings.Momentum)
            : optim.AdamW(module.Weights, settings.LearningRate, weight_decay: settings.WeightDecay ?? 0.01);
        return (() =>
        {
            using var scope = NewDisposeScope();
            var loss = F.cross_entropy(module.forward(input), labels);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
            return loss.item<float>();
        }, new Owners(optimizer, module, input, labels));
    }

    /// <summary>CPU seconds the calling thread has run (Linux CLOCK_THREAD_CPUTIME_ID): the steps' own time, without the
    /// runtime's other threads (JIT, GC, finalizer) that the process time also counts.</summary>
    private static double ThreadCpuSeconds()
    {
        try
        {
            return clock_gettime(3, out var t) == 0 ? t.Seconds + (t.Nanoseconds / 1e9) : double.NaN;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return double.NaN;
        }
    }

    /// <summary>CPU seconds the whole process has run (CLOCK_PROCESS_CPUTIME_ID), all threads; NaN where unavailable.</summary>
    private static double ProcessCpuSeconds()
    {
        try
        {
            return clock_gettime(2, out var t) == 0 ? t.Seconds + (t.Nanoseconds / 1e9) : double.NaN;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return double.NaN;
        }
    }

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int clock_gettime(int clock, out Timespec time);

    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    private sealed class Owners(params IDisposable[] owned) : IDisposable
    {
        public void Dispose()
        {
            foreach (var o in owned)
            {
                o.Dispose();
            }
        }
    }

    private static JsonObject Summarise(Dictionary<string, List<JsonNode>> runs, double ours0, bool python)
    {
        double Rate(JsonNode n) => n["samples_per_s"]!.GetValue<double>();
        double CpuRate(JsonNode n) => 1 / n["cpu_s_per_step"]!.GetValue<double>();
        JsonObject Totals(List<JsonNode> r) => new()
        {
            ["samples_per_s"] = BenchSupport.Median(r.Select(Rate)),
            ["cpu_s_per_step"] = BenchSupport.Median(r.Select(n => n["cpu_s_per_step"]!.GetValue<double>())),
            ["samples_per_s_runs"] = new JsonArray([.. r.Select(n => JsonValue.Create(Rate(n)))]),
            ["peak_rss_bytes"] = r.Max(n => n["peak_rss_bytes"]!.GetValue<long>()),
            ["peak_rss_before_training_bytes"] = r.Max(n => n["peak_rss_before_training_bytes"]?.GetValue<long>() ?? 0),
            ["loss0"] = r[0]["loss0"]!.GetValue<double>(),
        };

        JsonObject Impl(List<JsonNode> r)
        {
            var summary = Totals(r);
            summary["warmup_phases"] = WarmupPhases(r);

            // The PyTorch script reports no thread time: no entry rather than NaN (which JSON cannot hold).
            if (r.All(n => n["thread_cpu_s_per_step"] is not null))
            {
                summary["thread_cpu_s_per_step"] = BenchSupport.Median(r.Select(n => n["thread_cpu_s_per_step"]!.GetValue<double>()));
            }

            return summary;
        }

        JsonObject Ratio(string other, Func<JsonNode, double> rate) => RatioOf("ours", other, rate);

        JsonObject RatioOf(string one, string other, Func<JsonNode, double> rate)
        {
            return BenchSupport.PairedRatios([.. runs[one].Zip(runs[other], (a, b) => rate(a) / rate(b))]);
        }

        var summary = new JsonObject
        {
            ["ours"] = Impl(runs["ours"]), ["hand"] = Impl(runs["hand"]), ["ours_over_hand"] = Ratio("hand", Rate), ["ours_over_hand_cpu"] = Ratio("hand", CpuRate),
        };
        if (runs["ours"].Concat(runs["hand"]).All(n => n["thread_cpu_s_per_step"] is not null))
        {
            summary["ours_over_hand_thread_cpu"] = Ratio("hand", n => 1 / n["thread_cpu_s_per_step"]!.GetValue<double>());
        }

        if (runs["default"].Count > 0)
        {
            summary["default"] = Impl(runs["default"]);
            summary["ours_over_default"] = Ratio("default", Rate);
            summary["ours_over_default_cpu"] = Ratio("default", CpuRate);
            summary["default_over_torch_cpu"] = python ? RatioOf("default", "torch", CpuRate) : null;
            summary["default_over_hand_cpu"] = RatioOf("default", "hand", CpuRate);
        }

        if (runs["unfused"].Count > 0)
        {
            summary["unfused"] = Impl(runs["unfused"]);
            summary["ours_over_unfused"] = Ratio("unfused", Rate);
            summary["ours_over_unfused_cpu"] = Ratio("unfused", CpuRate);
        }

        if (python)
        {
            summary["torch"] = Impl(runs["torch"]);
            summary["ours_over_torch"] = Ratio("torch", Rate);
            summary["ours_over_torch_cpu"] = Ratio("torch", CpuRate);
            summary["torch_loss0_gap"] = Math.Abs(runs["torch"][0]["loss0"]!.GetValue<double>() - ours0);
        }

        return summary;
    }

    /// <summary>Warm-up steps 0, 1–9, 10–19, 20–49, 50–99, 100–199, 200–499, ... (as far as the warm-up went): the mean wall and
    /// process-CPU seconds per step in each, medians over the runs.</summary>
    private static JsonArray WarmupPhases(List<JsonNode> runs)
    {
        var phases = new JsonArray();
        var count = runs.Min(n => n["warmup_wall_s"]?.AsArray().Count ?? 0);
        int[] bounds = [0, 1, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];
        for (var i = 0; i + 1 < bounds.Length && bounds[i] < count; i++)
        {
            var (from, to) = (bounds[i], Math.Min(bounds[i + 1], count));
            double Mean(JsonNode run, string key) => run[key] is JsonArray a && a.Count >= to ? a.Skip(from).Take(to - from).Average(v => v!.GetValue<double>()) : double.NaN;
            var phase = new JsonObject { ["from"] = from, ["to"] = to - 1, ["wall_s_per_step"] = BenchSupport.Median(runs.Select(n => Mean(n, "warmup_wall_s"))) };
            if (runs.Select(n => Mean(n, "warmup_cpu_s")).ToList() is var cpu && cpu.All(double.IsFinite))
            {
                phase["cpu_s_per_step"] = BenchSupport.Median(cpu);
            }

            phases.Add(phase);
        }

        return phases;
    }

    /// <summary>A paired ratio's geometric mean with its 95 % interval, or "-" where the run has none (one round).</summary>
    private static string IntervalText(JsonNode? ratio) => ratio?["ci95_low"] is { } low
        ? FormattableString.Invariant($"{ratio["geomean"]!.GetValue<double>():F3} [{low.GetValue<double>():F3}, {ratio["ci95_high"]!.GetValue<double>():F3}]") : "-";

    /// <summary>A paired ratio's "median (min–max)", or "-" where the run has none.</summary>
    private static string RatioText(JsonNode? ratio) => ratio is null ? "-"
        : FormattableString.Invariant($"{ratio["median"]!.GetValue<double>():F2} ({ratio["min"]!.GetValue<double>():F2}–{ratio["max"]!.GetValue<double>():F2})");

    private static string Markdown(JsonObject report)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"batch {report["batch"]}, {report["steps"]} timed steps after at least {report["warmup"]} warm-up steps and {report["warmup_seconds"] ?? 0} s, {report["threads"]} thread(s), {report["optimizer"]}, {report["rounds"]} rounds; load average {report["load_average_start"]} → {report["load_average_end"]}");
        var separate = report["models"]!.AsObject().Where(m => m.Value!["ours"] is not null).ToList();
        if (separate.Count > 0)
        {
            text.AppendLine();
            text.AppendLine("Speed ratios are paired per round (median, min–max over rounds): by wall clock, and by CPU time per step (what the");
            text.AppendLine("process itself spent, all threads: steadier than the wall clock on a loaded machine), and by the CPU time of the");
            text.AppendLine("thread that runs the steps alone (without the runtime's JIT, GC and finalizer threads).");
            text.AppendLine();
            text.AppendLine("The geometric mean of the paired CPU ratios comes with its 95 % confidence interval (t on the log ratios).");
            text.AppendLine();
            text.AppendLine("| model | ours samples/s | hand-written | PyTorch 1.13 | ours / PyTorch, wall | ours / PyTorch, CPU | ours / PyTorch, CPU, geometric mean [95 % CI] | ours / hand-written, wall | ours / hand-written, CPU | ours / hand-written, CPU, geometric mean [95 % CI] | ours / hand-written, main-thread CPU | peak RSS ours / hand / PyTorch (MiB) |");
            text.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var (name, node) in separate)
            {
                double V(string impl, string key) => node![impl]?[key]?.GetValue<double>() ?? double.NaN;
                string R(string key) => RatioText(node![key]);
                string M(string impl) => node![impl] is { } n ? FormattableString.Invariant($"{n["peak_rss_bytes"]!.GetValue<long>() / 1048576.0:F0}") : "-";
                text.AppendLine(FormattableString.Invariant($"| {name} | {V("ours", "samples_per_s"):F1} | {V("hand", "samples_per_s"):F1} | {V("torch", "samples_per_s"):F1} | {R("ours_over_torch")} | {R("ours_over_torch_cpu")} | {IntervalText(node!["ours_over_torch_cpu"])} | {R("ours_over_hand")} | {R("ours_over_hand_cpu")} | {IntervalText(node!["ours_over_hand_cpu"])} | {R("ours_over_hand_thread_cpu")} | {M("ours")} / {M("hand")} / {M("torch")} |"));
            }
        }

        var defaults = report["models"]!.AsObject().Where(m => m.Value!["default"] is not null).ToList();
        if (defaults.Count > 0)
        {
            text.AppendLine();
            text.AppendLine("Kernels chosen by shape (ours against the same program with LibTorch's default kernel for every node, `--default-kernels`):");
            text.AppendLine();
            text.AppendLine("| model | ours samples/s | default kernels samples/s | ours / default, wall | ours / default, CPU | default / PyTorch, CPU | default / hand-written, CPU | default / hand-written, CPU, geometric mean [95 % CI] |");
            text.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var (name, node) in defaults)
            {
                string R(string key) => RatioText(node![key]);
                text.AppendLine(FormattableString.Invariant($"| {name} | {node!["ours"]!["samples_per_s"]!.GetValue<double>():F1} | {node["default"]!["samples_per_s"]!.GetValue<double>():F1} | {R("ours_over_default")} | {R("ours_over_default_cpu")} | {R("default_over_torch_cpu")} | {R("default_over_hand_cpu")} | {IntervalText(node["default_over_hand_cpu"])} |"));
            }
        }

        var unfused = report["models"]!.AsObject().Where(m => m.Value!["unfused"] is not null).ToList();
        if (unfused.Count > 0)
        {
            text.AppendLine();
            text.AppendLine("Node fusions (ours against the same program with every node run as written):");
            text.AppendLine();
            text.AppendLine("| model | ours samples/s | unfused samples/s | ours / unfused, wall | ours / unfused, CPU |");
            text.AppendLine("|---|---:|---:|---:|---:|");
            foreach (var (name, node) in unfused)
            {
                string R(string key) => RatioText(node![key]);
                text.AppendLine(FormattableString.Invariant($"| {name} | {node!["ours"]!["samples_per_s"]!.GetValue<double>():F1} | {node["unfused"]!["samples_per_s"]!.GetValue<double>():F1} | {R("ours_over_unfused")} | {R("ours_over_unfused_cpu")} |"));
            }
        }

        var paired = report["models"]!.AsObject().Where(m => m.Value!["in_process"] is not null).ToList();
        if (paired.Count > 0)
        {
            text.AppendLine();
            text.AppendLine("In one process (--in-process): ours and the hand-written module alternating every block of steps on one thread,");
            text.AppendLine("ratios paired per round (median, min–max); step times are the medians over rounds. \"Same optimizer\": the hand-written");
            text.AppendLine("module stepped by our optimizer instead of TorchSharp's `optim`, so that only the forward and backward differ. The");
            text.AppendLine("geometric mean of the paired thread-CPU ratios comes with its 95 % confidence interval (t on the log ratios).");
            text.AppendLine();
            text.AppendLine("| model | rounds × steps | ours ms/step, thread CPU | hand-written ms/step, thread CPU | ours / hand-written, thread CPU | ours / hand-written, wall | hand-written (same optimizer) ms/step | ours / hand-written (same optimizer), thread CPU | ours / hand-written, thread CPU, geometric mean [95 % CI] | same optimizer, geometric mean [95 % CI] |");
            text.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var (name, node) in paired)
            {
                var p = node!["in_process"]!;
                string R(string key) => RatioText(p[key]);
                string G(string key) => IntervalText(p[key]);
                string Ms(string impl) => p[impl]?["thread_cpu_s_per_step"] is { } t ? FormattableString.Invariant($"{t.GetValue<double>() * 1000:F2}") : "-";
                text.AppendLine(FormattableString.Invariant($"| {name} | {p["rounds"]} × {p["steps_per_round"]} | {Ms("ours")} | {Ms("hand")} | {R("ours_over_hand_thread_cpu")} | {R("ours_over_hand")} | {Ms("hand-sameopt")} | {R("ours_over_hand-sameopt_thread_cpu")} | {G("ours_over_hand_thread_cpu")} | {G("ours_over_hand-sameopt_thread_cpu")} |"));
            }

            var withDefault = paired.Where(m => m.Value!["in_process"]!["default"] is not null).ToList();
            if (withDefault.Count > 0)
            {
                text.AppendLine();
                text.AppendLine("In one process with `--default-kernels`: ours run a second time with LibTorch's default kernel for every node, as the");
                text.AppendLine("hand-written module runs them; that against the hand-written module is the interpreter's own overhead.");
                text.AppendLine();
                text.AppendLine("| model | default kernels ms/step, thread CPU | default / hand-written, thread CPU | default / hand-written, thread CPU, geometric mean [95 % CI] | ours / default, thread CPU, geometric mean [95 % CI] |");
                text.AppendLine("|---|---:|---:|---:|---:|");
                foreach (var (name, node) in withDefault)
                {
                    var p = node!["in_process"]!;
                    var ms = p["default"]?["thread_cpu_s_per_step"] is { } t ? FormattableString.Invariant($"{t.GetValue<double>() * 1000:F2}") : "-";
                    text.AppendLine(FormattableString.Invariant($"| {name} | {ms} | {RatioText(p["default_over_hand_thread_cpu"])} | {IntervalText(p["default_over_hand_thread_cpu"])} | {IntervalText(p["ours_over_default_thread_cpu"])} |"));
                }
            }
        }

        var warmups = new List<string>();
        foreach (var (name, node) in separate)
        {
            foreach (var impl in new[] { "ours", "default", "unfused", "hand", "torch" })
            {
                if (node![impl] is not { } n || n["warmup_phases"] is not JsonArray phases || phases.Count == 0)
                {
                    continue;
                }

                var steps = string.Join("; ", phases.Select(ph => FormattableString.Invariant(
                    $"{(ph!["from"]!.GetValue<int>() == ph["to"]!.GetValue<int>() ? $"{ph["from"]}" : $"{ph["from"]}–{ph["to"]}")}: {ph["wall_s_per_step"]!.GetValue<double>() * 1000:F1} ({(ph["cpu_s_per_step"]?.GetValue<double>() ?? double.NaN) * 1000:F1})")));
                var timedWall = (double)report["batch"]!.GetValue<int>() / n["samples_per_s"]!.GetValue<double>() * 1000;
                warmups.Add(FormattableString.Invariant($"| {name} | {impl} | {steps} | {timedWall:F1} ({n["cpu_s_per_step"]!.GetValue<double>() * 1000:F1}) |"));
            }
        }

        if (warmups.Count > 0)
        {
            text.AppendLine();
            text.AppendLine("Warm-up (separate processes): mean wall ms per step over each range of warm-up steps, then over the timed steps;");
            text.AppendLine("medians over rounds (process CPU ms in brackets, all threads: the runtime's JIT compiling on another core shows there).");
            text.AppendLine();
            text.AppendLine("| model | implementation | warm-up steps: wall ms/step (process CPU) | timed steps: wall ms/step (process CPU) |");
            text.AppendLine("|---|---|---|---:|");
            foreach (var row in warmups)
            {
                text.AppendLine(row);
            }
        }

        return text.ToString();
    }

    private static string[] SelfArgs() => Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet" ? [typeof(TrainSpeed).Assembly.Location] : [];

    private static string FindRepository()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Recycling.sln")))
            {
                return dir.FullName;
            }
        }

        return Directory.GetCurrentDirectory();
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

    private static bool PythonHasTorch(out string why)
    {
        try
        {
            var start = new ProcessStartInfo(PythonPath, ["-c", "import torch, numpy"]) { RedirectStandardError = true, UseShellExecute = false };
            using var process = Process.Start(start)!;
            var error = process.StandardError.ReadToEnd();
            process.WaitForExit();
            why = error.Trim().Split('\n').LastOrDefault() ?? "";
            return process.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            why = e.Message;
            return false;
        }
    }

    /// <summary>Runs a process whose stdout's last line is a JSON object.</summary>
    private static JsonNode RunJson(string file, IEnumerable<string> arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in arguments)
        {
            start.ArgumentList.Add(a);
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        var last = output.Trim().Split('\n').LastOrDefault() ?? "";
        if (process.ExitCode != 0 || !last.StartsWith('{'))
        {
            throw new InvalidOperationException($"{file} {string.Join(" ", arguments)} failed (exit {process.ExitCode}): {output}");
        }

        return JsonNode.Parse(last)!;
    }

}
