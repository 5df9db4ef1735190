using System.CommandLine;
using System.Globalization;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;
using Spectre.Console;

namespace Recycling.Cli.Commands;

/// <summary>`recycle merge`: merge fine-tuned exports of one base into one ONNX model.</summary>
internal static class MergeCommand
{
    internal static Option<string?> BaseOption() => new("--base") { Description = "The base (pre-trained) model; needed by task arithmetic, TIES, DARE and model stock." };

    internal static Option<string> HeadsOption() => new("--heads")
    {
        Description = "Tensors whose shapes differ (task heads): error, drop (body only, penultimate output), first, base.",
        HelpName = "error|drop|first|base",
        DefaultValueFactory = _ => "error",
    };

    internal static HeadPolicy Heads(ParseResult parseResult, Option<string> heads) => ParseEnum<HeadPolicy>(parseResult.GetValue(heads)!, "--heads");

    /// <summary>The command's description: what each method computes (τᵢ = θᵢ − θ0 is model i's task vector).</summary>
    internal const string MergeHelp = """
        Merge fine-tuned exports of one base into one ONNX model that ONNX Runtime runs.
        Methods (θᵢ: model i, θ0: --base, τᵢ = θᵢ − θ0: its task vector, N models):
          average          θ = Σ wᵢθᵢ / Σ wᵢ (uniform without --weights)
          task-arithmetic  θ = θ0 + λ Σ τᵢ
          ties             θ = θ0 + λ τm; τm: each τᵢ trimmed to its top --density magnitudes, a sign elected per
                           entry by the larger total mass, then the mean of the entries that agree with it
          dare             θ = θ0 + λ Σ τ̂ᵢ; τ̂ᵢ = τᵢ with entries dropped at rate p (--drop-rate), the rest scaled by 1/(1−p)
          dare-ties        TIES (above) over the τ̂ᵢ
          dare-average     θ = θ0 + Σ wᵢτ̂ᵢ / Σ wᵢ
          slerp            spherical interpolation of 2 models per tensor at --t
          model-stock      θ = t·mean θᵢ + (1−t)·θ0, t per tensor from the mean pairwise cosine of the τᵢ
          fisher           θ = Σ wᵢFᵢθᵢ / Σ wᵢFᵢ with diagonal Fisher Fᵢ (--fisher)
        Σ τᵢ grows with N (and 1/(1−p) lengthens each τ̂ᵢ): with λ = 1 over many models the merge moves far past every
        fine-tuning. A warning names the lengths when ‖θ − θ0‖ exceeds 2× the longest ‖τᵢ‖; λ = 1/N is a safe start.
        """;

    internal static Command Create()
    {
        var models = new Argument<string[]>("models") { Description = "Fine-tuned exports of one base (.onnx).", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--output", "-o") { Description = "The merged model to write (.onnx).", Required = true };
        var method = new Option<string>("--method", "-m")
        {
            Description = "average (weighted with --weights), task-arithmetic, ties, dare, dare-ties, dare-average, slerp, model-stock, fisher.",
            DefaultValueFactory = _ => "average",
        };
        var baseModel = BaseOption();
        var weights = new Option<double[]>("--weights") { Description = "One weight per model (average, DARE-average, Fisher).", AllowMultipleArgumentsPerToken = true };
        var lambda = new Option<double>("--lambda") { Description = "λ of task arithmetic, TIES and DARE (scales the combined task vector).", DefaultValueFactory = _ => 1.0 };
        var density = new Option<double>("--density") { Description = "TIES: fraction of each task vector kept by magnitude.", DefaultValueFactory = _ => 0.2 };
        var trim = new Option<string>("--trim") { Description = "TIES trim scope: global (the paper) or per-tensor (mergekit).", HelpName = "global|per-tensor", DefaultValueFactory = _ => "global" };
        var dropRate = new Option<double>("--drop-rate") { Description = "DARE drop probability p (kept entries rescaled by 1/(1-p)).", DefaultValueFactory = _ => 0.9 };
        var t = new Option<double>("--t") { Description = "SLERP interpolation factor (0 = first model).", DefaultValueFactory = _ => 0.5 };
        var seed = new Option<ulong>("--seed") { Description = "DARE mask seed.", DefaultValueFactory = _ => 0UL };
        var heads = HeadsOption();
        var dtype = new Option<string?>("--dtype") { HelpName = "fp32|fp16|bf16", Description = "Element type of merged float tensors: fp32, fp16, bf16 (default: as in the inputs)." };
        var external = new Option<bool>("--external-data") { Description = "Store tensors in one data file beside the model (64 KiB aligned)." };
        var device = CommandSupport.DeviceOption();
        var fisher = new Option<string[]>("--fisher") { Description = "Fisher merging: one diagonal-Fisher file per model (.onnx initializers or .npz arrays, keyed by tensor name).", AllowMultipleArgumentsPerToken = true };
        var allowNonFinite = new Option<bool>("--allow-nonfinite") { Description = "Merge even when inputs hold NaN or infinity." };
        var allowOverflow = new Option<bool>("--allow-overflow") { Description = "With --dtype fp16/bf16: store merged values beyond the type's range as infinity (an error otherwise)." };
        var json = CommandSupport.JsonOption();
        var tuning = new MergeTune();
        var command = new Command("merge", MergeHelp)
        {
            Arguments = { models },
            Options = { output, method, baseModel, weights, lambda, density, trim, dropRate, t, seed, heads, dtype, external, device, fisher, allowNonFinite, allowOverflow, json },
        };
        foreach (var option in tuning.Options)
        {
            command.Options.Add(option);
        }

        command.SetAction(parseResult =>
        {
            var (mergeMethod, combination) = ParseMethod(parseResult.GetValue(method)!);
            var error = parseResult.InvocationConfiguration.Error;
            foreach (var warning in IgnoredOptions(parseResult, mergeMethod, combination, weights, lambda, density, trim, dropRate, seed, t, fisher).Concat(tuning.Ignored(parseResult)))
            {
                error.WriteLine($"warning: {warning}");
            }

            var weightValues = parseResult.GetValue(weights);
            var fisherFiles = parseResult.GetValue(fisher);
            var modelPaths = CommandSupport.Models(parseResult.GetValue(models)!);
            var basePath = parseResult.GetValue(baseModel) is { } b ? CommandSupport.Model(b) : null;
            var fisherModels = (fisherFiles ?? []).Where(f => f.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)).ToList();
            var inputs = CommandSupport.Inputs([.. modelPaths, basePath, .. fisherModels], files: (fisherFiles ?? []).Except(fisherModels));
            ModelWriter.Prepare(parseResult.GetValue(output)!, inputs, parseResult.GetValue(external) ? ExternalDataMode.External : ExternalDataMode.Auto, output.Name);
            var request = new MergeRequest
            {
                Inputs = modelPaths,
                Output = parseResult.GetValue(output)!,
                Base = basePath,
                Heads = Heads(parseResult, heads),
                OutputType = ParseDtype(parseResult.GetValue(dtype)),
                ExternalData = parseResult.GetValue(external) ? ExternalDataMode.External : ExternalDataMode.Auto,
                AllowNonFinite = parseResult.GetValue(allowNonFinite),
                FisherFiles = fisherFiles is { Length: > 0 } ? fisherFiles : null,
                Options = new MergeOptions
                {
                    Method = mergeMethod,
                    DareCombination = combination,
                    Weights = weightValues is { Length: > 0 } ? weightValues : null,
                    Lambda = parseResult.GetValue(lambda),
                    Density = parseResult.GetValue(density),
                    TrimScope = parseResult.GetValue(trim) switch
                    {
                        "global" => TiesTrimScope.Global,
                        "per-tensor" => TiesTrimScope.PerTensor,
                        var other => throw new RecyclingException($"--trim {MessageText.OneLine(other ?? "")}: use global or per-tensor"),
                    },
                    DropRate = parseResult.GetValue(dropRate),
                    T = parseResult.GetValue(t),
                    Seed = parseResult.GetValue(seed),
                    Device = CommandSupport.Device(parseResult, device).Merge,
                    AllowOverflow = parseResult.GetValue(allowOverflow),
                },
            };
            (request, var tuned) = tuning.Run(parseResult, request, parseResult.GetValue(method)!, device, parseResult.GetValue(json));
            var summary = RunWithProgress(request, parseResult.GetValue(json));
            var stdout = parseResult.InvocationConfiguration.Output;
            foreach (var warning in summary.Warnings)
            {
                parseResult.InvocationConfiguration.Error.WriteLine($"warning: {warning}");
            }

            if (parseResult.GetValue(json))
            {
                CommandSupport.WriteJson(parseResult, new
                {
                    output = Path.GetFullPath(request.Output),
                    method = request.Options.Describe(),
                    parameters = summary.Parameters,
                    merged = summary.Merged,
                    bytesRead = summary.BytesRead,
                    bytesWritten = summary.BytesWritten,
                    seconds = summary.Elapsed.TotalSeconds,
                    kernels = summary.Kernels,
                    notes = summary.Notes,
                    warnings = summary.Warnings,
                    tuning = tuned is null ? null : MergeTune.Json(tuned),
                });
                return 0;
            }

            if (tuned is not null)
            {
                MergeTune.Print(CommandSupport.Terminal(stdout), tuned);
            }

            var seconds = Math.Max(summary.Elapsed.TotalSeconds, 1e-9);
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"merged {request.Inputs.Count} models ({request.Options.Describe()}) into {request.Output}: {summary.Merged} of {summary.Parameters} parameters merged, " +
                $"{summary.BytesRead / 1e6:F1} MB read, {summary.BytesWritten / 1e6:F1} MB written in {seconds:F2} s ({(summary.BytesRead + summary.BytesWritten) / 1e9 / seconds:F2} GB/s) on {summary.Kernels}"));
            foreach (var note in summary.Notes)
            {
                stdout.WriteLine($"note: {note}");
            }

            return 0;
        });
        return command;
    }

    /// <summary>The options given on the command line that <paramref name="method"/> does not read, each with the methods that do.</summary>
    private static IEnumerable<string> IgnoredOptions(ParseResult parseResult, MergeMethod method, DareCombination combination, params Option[] options)
    {
        bool dare = method == MergeMethod.Dare;
        bool ties = method == MergeMethod.Ties || (dare && combination == DareCombination.Ties);
        foreach (var option in options)
        {
            if (parseResult.GetResult(option) is not { Implicit: false })
            {
                continue;
            }

            var (used, users) = option.Name switch
            {
                "--weights" => (method is MergeMethod.Average or MergeMethod.Fisher || (dare && combination == DareCombination.Average), "average, dare-average, fisher"),
                "--lambda" => (method is MergeMethod.TaskArithmetic || ties || (dare && combination == DareCombination.TaskArithmetic), "task-arithmetic, ties, dare, dare-ties"),
                "--density" or "--trim" => (ties, "ties, dare-ties"),
                "--drop-rate" or "--seed" => (dare, "dare, dare-ties, dare-average"),
                "--t" => (method == MergeMethod.Slerp, "slerp"),
                "--fisher" => (method == MergeMethod.Fisher, "fisher"),
                _ => (true, ""),
            };
            if (!used)
            {
                yield return $"{option.Name} is ignored by --method {parseResult.GetValue<string>("--method")} (it applies to {users})";
            }
        }
    }

    private static MergeSummary RunWithProgress(MergeRequest request, bool quiet)
    {
        if (quiet || Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            return ModelMerger.Merge(request);
        }

        var total = request.Inputs.Concat(request.Base is null ? [] : [request.Base]).Sum(f => new FileInfo(f).Exists ? new FileInfo(f).Length + DataFileLength(f) : 0);
        MergeSummary? summary = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask("merging", maxValue: Math.Max(total, 1));
                summary = ModelMerger.Merge(request, new Progress<long>(read => task.Value = Math.Min(read, task.MaxValue)));
                task.Value = task.MaxValue;
            });
        return summary!;
    }

    private static long DataFileLength(string model)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(model))!;
        return Directory.EnumerateFiles(folder, Path.GetFileName(model) + "*.data").Sum(f => new FileInfo(f).Length);
    }

    internal static (MergeMethod Method, DareCombination Combination) ParseMethod(string name) => name.ToLowerInvariant() switch
    {
        "average" or "uniform" or "weighted" or "soup" or "linear" => (MergeMethod.Average, DareCombination.TaskArithmetic),
        "task-arithmetic" or "ta" => (MergeMethod.TaskArithmetic, DareCombination.TaskArithmetic),
        "ties" => (MergeMethod.Ties, DareCombination.TaskArithmetic),
        "dare" or "dare-ta" or "dare-task-arithmetic" => (MergeMethod.Dare, DareCombination.TaskArithmetic),
        "dare-ties" => (MergeMethod.Dare, DareCombination.Ties),
        "dare-average" => (MergeMethod.Dare, DareCombination.Average),
        "slerp" => (MergeMethod.Slerp, DareCombination.TaskArithmetic),
        "model-stock" or "modelstock" => (MergeMethod.ModelStock, DareCombination.TaskArithmetic),
        "fisher" => (MergeMethod.Fisher, DareCombination.TaskArithmetic),
        _ => throw new RecyclingException($"unknown merge method {MessageText.Path(name)}: use average, task-arithmetic, ties, dare, dare-ties, dare-average, slerp, model-stock or fisher"),
    };

    internal static OnnxDataType? ParseDtype(string? name) => name?.ToLowerInvariant() switch
    {
        null => null,
        "fp32" or "float32" or "float" => OnnxDataType.Float,
        "fp16" or "float16" or "half" => OnnxDataType.Float16,
        "bf16" or "bfloat16" => OnnxDataType.BFloat16,
        _ => throw new RecyclingException($"--dtype {MessageText.OneLine(name)}: use fp32, fp16 or bf16"),
    };

    private static T ParseEnum<T>(string value, string option)
        where T : struct, Enum =>
        Enum.TryParse<T>(value.Replace("-", "", StringComparison.Ordinal), ignoreCase: true, out var parsed)
            ? parsed
            : throw new RecyclingException($"{option} {MessageText.OneLine(value)}: use {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))}");
}
