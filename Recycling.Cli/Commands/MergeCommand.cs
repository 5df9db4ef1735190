using System.CommandLine;
using System.Globalization;
using Recycling.Onnx;
using Recycling.Onnx.Alignment;
using Recycling.Onnx.Merging;
using Recycling.Onnx.Merging.Methods;
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

    /// <summary>The command's description: what each method of the registry computes (τᵢ = θᵢ − θ0 is model i's task vector).</summary>
    internal static string MergeHelp => $"""
        Merge fine-tuned exports of one base into one ONNX model that ONNX Runtime runs.
        Methods (mergekit's names; θᵢ: model i, θ0: --base, τᵢ = θᵢ − θ0: its task vector, N models), then their
        parameters with defaults (* may differ per model: --param density=0.5,0.3). docs/merge-methods.md has the details.
        {MergeMethods.Help().TrimEnd()}
        Σ τᵢ grows with N (and rescaling lengthens each τ̂ᵢ): with λ = 1 over many models the merge moves far past every
        fine-tuning. A warning names the lengths when ‖θ − θ0‖ exceeds 2× the longest ‖τᵢ‖; λ = 1/N is a safe start.
        """;

    internal static Command Create()
    {
        var models = new Argument<string[]>("models") { Description = "Fine-tuned exports of one base (.onnx); none with --config.", Arity = ArgumentArity.ZeroOrMore };
        var output = new Option<string>("--output", "-o") { Description = "The merged model to write (.onnx).", Required = true };
        var method = new Option<string>("--method", "-m")
        {
            Description = $"The merge method: {string.Join(", ", MergeMethods.All.Select(m => m.Name))} (aliases: average, dare, dare-ties ...; see above).",
            DefaultValueFactory = _ => "linear",
        };
        var baseModel = BaseOption();
        var weights = new Option<double[]>("--weights") { Description = "One weight per model (the weight parameter).", AllowMultipleArgumentsPerToken = true };
        var lambda = new Option<double?>("--lambda") { Description = "λ of the task-arithmetic family (scales the combined task vector; default 1)." };
        var density = new Option<double?>("--density") { Description = "Fraction of each task vector kept (ties, dare_*, ...; mergekit's default 1 keeps all)." };
        var trim = new Option<string?>("--trim") { Description = "TIES trim scope: per-tensor (mergekit, default) or global (the paper).", HelpName = "per-tensor|global" };
        var dropRate = new Option<double?>("--drop-rate") { Description = "DARE drop probability p: density 1 − p." };
        var t = new Option<double?>("--t") { Description = "SLERP interpolation factor (0 = the base, or the first model without one; default 0.5)." };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the random masks (DARE, DELLA ...).", DefaultValueFactory = _ => 0UL };
        var parameters = new Option<string[]>("--param", "-p")
        {
            Description = "A method parameter by mergekit name, NAME=VALUE (e.g. rescale=inverse, normalize=true, gamma=0.01); a comma list gives one value per model.",
            AllowMultipleArgumentsPerToken = true,
            HelpName = "name=value",
        };
        var heads = HeadsOption();
        var dtype = new Option<string?>("--dtype") { HelpName = "fp32|fp16|bf16", Description = "Element type of merged float tensors: fp32, fp16, bf16 (default: as in the inputs)." };
        var external = new Option<bool>("--external-data") { Description = "Store tensors in one data file beside the model (64 KiB aligned)." };
        var device = CommandSupport.DeviceOption();
        var fisher = new Option<string[]>("--fisher") { Description = "Fisher merging: one diagonal-Fisher file per model (.onnx initializers or .npz arrays, keyed by tensor name).", AllowMultipleArgumentsPerToken = true };
        var allowNonFinite = new Option<bool>("--allow-nonfinite") { Description = "Merge even when inputs hold NaN or infinity." };
        var allowOverflow = new Option<bool>("--allow-overflow") { Description = "With --dtype fp16/bf16: store merged values beyond the type's range as infinity (an error otherwise)." };
        var json = CommandSupport.JsonOption();
        var config = MergeConfigOption.Create();
        var tuning = new MergeTune();
        var command = new Command("merge", MergeHelp)
        {
            Arguments = { models },
            Options = { output, method, baseModel, weights, lambda, density, trim, dropRate, t, seed, parameters, heads, dtype, external, device, fisher, allowNonFinite, allowOverflow, json, config },
        };
        foreach (var option in tuning.Options)
        {
            command.Options.Add(option);
        }

        command.SetAction(parseResult =>
        {
            var mergeConfig = MergeConfigOption.Load(parseResult, config, models, method, baseModel, weights, lambda, density, trim, dropRate, t, seed, parameters, fisher);
            var fromConfig = mergeConfig?.Request(parseResult.GetValue(output)!);
            var definition = mergeConfig?.Method ?? MergeMethods.Find(parseResult.GetValue(method)!);
            var error = parseResult.InvocationConfiguration.Error;
            foreach (var warning in IgnoredOptions(parseResult, definition, weights, lambda, density, trim, dropRate, seed, t, fisher).Concat(tuning.Ignored(parseResult)))
            {
                error.WriteLine($"warning: {warning}");
            }

            var fisherFiles = parseResult.GetValue(fisher) is { Length: > 0 } flagged ? flagged : fromConfig?.FisherFiles?.ToArray();
            var modelPaths = fromConfig?.Inputs.ToArray() ?? CommandSupport.Models(parseResult.GetValue(models)!);
            var basePath = fromConfig is not null ? fromConfig.Base : parseResult.GetValue(baseModel) is { } b ? CommandSupport.Model(b) : null;
            var fisherModels = (fisherFiles ?? []).Where(f => f.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)).ToList();
            var inputs = CommandSupport.Inputs([.. modelPaths, basePath, .. fisherModels], files: (fisherFiles ?? []).Except(fisherModels));
            ModelWriter.Prepare(parseResult.GetValue(output)!, inputs, parseResult.GetValue(external) ? ExternalDataMode.External : ExternalDataMode.Auto, output.Name);
            var request = new MergeRequest
            {
                Inputs = modelPaths,
                Output = parseResult.GetValue(output)!,
                Base = basePath,
                Heads = Heads(parseResult, heads),
                OutputType = ParseDtype(parseResult.GetValue(dtype)) ?? fromConfig?.OutputType,
                ExternalData = parseResult.GetValue(external) ? ExternalDataMode.External : ExternalDataMode.Auto,
                AllowNonFinite = parseResult.GetValue(allowNonFinite),
                FisherFiles = fisherFiles is { Length: > 0 } ? fisherFiles : null,
                Options = fromConfig is null
                    ? Options(parseResult, definition, weights, lambda, density, trim, dropRate, t, seed, parameters, allowOverflow, device, modelPaths.Length)
                    : fromConfig.Options with { Device = CommandSupport.Device(parseResult, device).Merge, AllowOverflow = parseResult.GetValue(allowOverflow) },
            };
            (request, var tuned) = tuning.Run(parseResult, request, definition.Name, device, parseResult.GetValue(json));
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

    /// <summary>The merge options from the flags: typed flags and --param NAME=VALUE[,VALUE...] (per model with a comma list).</summary>
    private static MergeOptions Options(ParseResult parseResult, MergeMethodDefinition definition, Option<double[]> weights, Option<double?> lambda,
        Option<double?> density, Option<string?> trim, Option<double?> dropRate, Option<double?> t, Option<ulong> seed, Option<string[]> parameters,
        Option<bool> allowOverflow, Option<string> device, int models)
    {
        var global = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
        List<Dictionary<string, double>>? perModel = null;
        foreach (var text in parseResult.GetValue(parameters) ?? [])
        {
            int equals = text.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                throw new RecyclingException($"--param {MessageText.OneLine(text)}: write NAME=VALUE, e.g. density=0.5");
            }

            var name = text[..equals].Trim();
            var parameter = definition.Parameters.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))
                ?? throw new RecyclingException($"--param {MessageText.OneLine(text)}: {definition.Name} has no parameter {MessageText.Path(name)}; its parameters: {string.Join(", ", definition.Parameters.Select(p => p.Name))}");
            var values = text[(equals + 1)..].Split(',');
            if (values.Length == 1)
            {
                global[parameter.Name] = parameter.Parse(values[0], $"--param {parameter.Name}");
                continue;
            }

            if (values.Length != models)
            {
                throw new RecyclingException($"--param {MessageText.OneLine(text)}: {values.Length} values for {models} models");
            }

            perModel ??= [.. Enumerable.Range(0, models).Select(_ => new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase))];
            for (int i = 0; i < models; i++)
            {
                perModel[i][parameter.Name] = parameter.Parse(values[i], $"--param {parameter.Name} (model {i + 1})");
            }
        }

        var weightValues = parseResult.GetValue(weights);
        return new MergeOptions
        {
            MethodName = definition.Name,
            Parameters = global,
            ModelParameters = perModel,
            Weights = weightValues is { Length: > 0 } ? weightValues : null,
            Lambda = parseResult.GetValue(lambda) ?? 1.0,
            Density = parseResult.GetValue(density),
            DropRate = parseResult.GetValue(dropRate),
            TrimScope = parseResult.GetValue(trim) switch
            {
                null => null,
                "global" => TiesTrimScope.Global,
                "per-tensor" or "per_tensor" => TiesTrimScope.PerTensor,
                var other => throw new RecyclingException($"--trim {MessageText.OneLine(other)}: use per-tensor or global"),
            },
            T = parseResult.GetValue(t) ?? 0.5,
            Seed = parseResult.GetValue(seed),
            Device = CommandSupport.Device(parseResult, device).Merge,
            AllowOverflow = parseResult.GetValue(allowOverflow),
        };
    }

    /// <summary>The options given on the command line that <paramref name="method"/> does not read, each with the methods that do.</summary>
    private static IEnumerable<string> IgnoredOptions(ParseResult parseResult, MergeMethodDefinition method, params Option[] options)
    {
        foreach (var option in options)
        {
            if (parseResult.GetResult(option) is not { Implicit: false })
            {
                continue;
            }

            Func<MergeMethodDefinition, bool> reads = option.Name switch
            {
                "--weights" => m => m.Parameters.Any(p => p.Name == "weight"),
                "--lambda" => m => m.Parameters.Any(p => p.Name == "lambda"),
                "--density" or "--drop-rate" => m => m.Parameters.Any(p => p.Name == "density"),
                "--trim" => m => m.Parameters.Any(p => p.Name == "trim"),
                "--seed" => m => m.Parameters.Any(p => p.Name == "seed"),
                "--t" => m => m.Parameters.Any(p => p.Name == "t"),
                "--fisher" => m => m.NeedsFisher,
                _ => _ => true,
            };
            if (!reads(method))
            {
                var users = MergeMethods.All.Where(reads).Select(m => m.Name);
                yield return $"{option.Name} is ignored by --method {parseResult.GetValue<string>("--method")} (it applies to {string.Join(", ", users)})";
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

    internal static OnnxDataType? ParseDtype(string? name) =>
        name is null ? null
        : ElementTypes.FromName(name) is { IsMergeable: true } row ? row.Type
        : throw new RecyclingException($"--dtype {MessageText.OneLine(name)}: use {ElementTypes.MergeableNames(r => r.Name, " or ")}");

    private static T ParseEnum<T>(string value, string option)
        where T : struct, Enum =>
        Enum.TryParse<T>(value.Replace("-", "", StringComparison.Ordinal), ignoreCase: true, out var parsed)
            ? parsed
            : throw new RecyclingException($"{option} {MessageText.OneLine(value)}: use {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))}");
}
