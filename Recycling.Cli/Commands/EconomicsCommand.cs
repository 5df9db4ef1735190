using System.CommandLine;
using System.Globalization;
using System.Text;
using Recycling.MLNet.Economics;
using Recycling.Onnx.IO;
using Recycling.Onnx;
using Spectre.Console;

namespace Recycling.Cli.Commands;

/// <summary>`recycle economics`: when recycling pays off (the seed "The Limited Benefit of Recycling Foundation Models").</summary>
internal static class EconomicsCommand
{
    private const int DefaultIterations = 10;
    private const int DefaultHeatmapIterations = 1000;

    /// <summary>Most cells of a heatmap grid (--r-count × --alpha-count): bounds its time, memory and CSV (docs/economics.md).</summary>
    internal const int MaxGridCells = 250_000;

    internal static Command Create()
    {
        var command = new Command("economics",
            "When recycling pays off: adjusted compute A over real compute C for kickstarting and augmentation at yearly compute growth r.");
        command.Subcommands.Add(CreateTable());
        command.Subcommands.Add(CreateKickstart());
        command.Subcommands.Add(CreateAugment());
        command.Subcommands.Add(CreateHeatmap());
        command.Subcommands.Add(CreateBreakEven());
        return command;
    }

    private static Command CreateTable()
    {
        var years = YearsOption("Last year T of the sum over years 0..T.", RecyclingEconomics.DefaultYears);
        var csv = CsvOption();
        var json = JsonOption();
        var command = new Command("table", "The seed's Table 1: the growth-only recycling advantage Σ r^t / r^T over years 0..T, and its limit r/(r−1).")
        {
            Options = { years, csv, json },
        };
        command.SetAction(parseResult =>
        {
            CheckOutputs(parseResult, csv);
            var rows = RecyclingEconomics.GrowthTable(years: parseResult.GetValue(years));
            WriteCsv(parseResult, csv, "scenario,growth_rate,years,advantage,limit",
                rows.Select(row => Csv(Quote(row.Name), row.GrowthRate, row.Years, row.Advantage, row.Limit)));
            var output = parseResult.InvocationConfiguration.Output;
            if (parseResult.GetValue(json))
            {
                WriteJson(output, rows);
                return 0;
            }
            var table = new Table().AddColumns("Considered growth rate", "Growth rate", $"Advantage (T = {rows[0].Years})", "Σ r^t / r^T", "Limit r/(r−1)");
            foreach (var row in rows)
            {
                table.AddRow(Markup.Escape(row.Name), $"{F(row.GrowthRate, 1)}x/yr", $"{F(row.Advantage, 1)}x", F(row.Advantage, 4), F(row.Limit, 4));
            }
            Tables.Write(CommandSupport.Terminal(output), table);
            return 0;
        });
        return command;
    }

    private static Command CreateKickstart()
    {
        var r = GrowthOption("--r", "Yearly growth of real compute (a multiplier: 4.2 = 4.2x a year).");
        var alpha = ManyOption("--alpha", "Reuse efficiency α in [0, 1]; several values give one series each.");
        var progress = ProgressOption();
        var years = YearsOption("Number of yearly iterations n = 1..N.", DefaultIterations);
        var plot = PlotOption("Draw the benefit by iteration (the seed's Figure 2).");
        var (width, height) = SizeOptions();
        var csv = CsvOption();
        var json = JsonOption();
        var command = new Command("kickstart",
            "Kickstarting: C_n = r·C_(n−1), A_1 = C_1, A_n = C_n + α·A_(n−1); prints the benefit A_n/C_n and its limit r/(r−α).")
        {
            Options = { r, alpha, progress, years, plot, width, height, csv, json },
        };
        command.SetAction(parseResult =>
        {
            CheckOutputs(parseResult, plot, csv);
            double growth = RecyclingEconomics.EffectiveGrowth(parseResult.GetValue(r), parseResult.GetValue(progress));
            int n = parseResult.GetValue(years);
            var series = parseResult.GetRequiredValue(alpha).Select(a => RecyclingEconomics.Kickstart(growth, a, n)).ToList();
            if (parseResult.GetValue(plot) is string png)
            {
                EconomicsPlots.SaveKickstartByIteration(png, series, parseResult.GetValue(width), parseResult.GetValue(height));
            }
            WriteCsv(parseResult, csv, "r,alpha,iteration,compute,adjusted_compute,benefit,limit",
                series.SelectMany(s => s.Steps.Select(step =>
                    Csv(s.GrowthRate, s.Alpha, step.Iteration, step.Compute, step.AdjustedCompute, step.Benefit, s.Limit))));
            return WriteSeries(parseResult, json, series, s =>
            {
                var table = new Table()
                    .Title($"Kickstarting, r = {G(s.GrowthRate)}, α = {G(s.Alpha)}")
                    .Caption($"C_1 = 1; limit r/(r−α) = {F(s.Limit, 4)}")
                    .AddColumns("n", "C_n", "A_n", "A_n/C_n");
                foreach (var step in s.Steps)
                {
                    table.AddRow(step.Iteration.ToString(CultureInfo.InvariantCulture), G(step.Compute), G(step.AdjustedCompute), F(step.Benefit, 4));
                }

                return table;
            });
        });
        return command;
    }

    private static Command CreateAugment()
    {
        var r = GrowthOption("--r", "Yearly growth of real compute (a multiplier).");
        var g = ManyOption("--g", "Yearly growth of algorithmic efficiency P (a multiplier); several values give one series each.");
        var beta = ManyOption("--beta", "Fraction β in [0, 1] of new algorithmic progress the augmented model takes up; several values give one series each.");
        var years = YearsOption("Number of yearly iterations n = 1..N.", DefaultIterations);
        var plot = PlotOption("Draw the augmentation simulations over β and g (the seed's Figure 4).");
        var (width, height) = SizeOptions();
        var csv = CsvOption();
        var json = JsonOption();
        var command = new Command("augment",
            "Augmentation: P_n = g·P_(n−1), A_n = β·P_n·C_n + A_(n−1); prints the benefit A_n/(P_n·C_n) over training from scratch.")
        {
            Options = { r, g, beta, years, plot, width, height, csv, json },
        };
        command.SetAction(parseResult =>
        {
            CheckOutputs(parseResult, plot, csv);
            double growth = parseResult.GetValue(r);
            int n = parseResult.GetValue(years);
            var series = (from progress in parseResult.GetRequiredValue(g)
                          from b in parseResult.GetRequiredValue(beta)
                          select RecyclingEconomics.Augment(growth, progress, b, n)).ToList();
            if (parseResult.GetValue(plot) is string png)
            {
                EconomicsPlots.SaveAugmentation(png, series, parseResult.GetValue(width), parseResult.GetValue(height));
            }
            WriteCsv(parseResult, csv, "r,g,beta,iteration,compute,progress,effective_compute,adjusted_compute,benefit,limit",
                series.SelectMany(s => s.Steps.Select(step => Csv(s.GrowthRate, s.ProgressGrowth, s.Beta, step.Iteration,
                    step.Compute, step.Progress, step.EffectiveCompute, step.AdjustedCompute, step.Benefit, s.Limit))));
            return WriteSeries(parseResult, json, series, s =>
            {
                var table = new Table()
                    .Title($"Augmentation, r = {G(s.GrowthRate)}, g = {G(s.ProgressGrowth)}, β = {G(s.Beta)}")
                    .Caption($"C_1 = P_1 = 1; limit β·gr/(gr−1) = {F(s.Limit, 4)}; beats training from scratch when β > {F(RecyclingEconomics.AugmentationMinimumBeta(s.GrowthRate, s.ProgressGrowth), 4)}")
                    .AddColumns("n", "C_n", "P_n", "P_n·C_n", "A_n", "A_n/(P_n·C_n)");
                foreach (var step in s.Steps)
                {
                    table.AddRow(step.Iteration.ToString(CultureInfo.InvariantCulture), G(step.Compute), G(step.Progress),
                        G(step.EffectiveCompute), G(step.AdjustedCompute), F(step.Benefit, 4));
                }

                return table;
            });
        });
        return command;
    }

    private static Command CreateHeatmap()
    {
        var rMin = new Option<double>("--r-min") { Description = "Smallest compute growth r of the grid.", DefaultValueFactory = _ => 1.3 };
        var rMax = new Option<double>("--r-max") { Description = "Largest compute growth r of the grid.", DefaultValueFactory = _ => 10.5 };
        var rCount = new Option<int>("--r-count") { Description = "Number of r values, evenly spaced.", DefaultValueFactory = _ => 93 };
        var alphaCount = new Option<int>("--alpha-count") { Description = "Number of α values, evenly spaced over [0, 1].", DefaultValueFactory = _ => 101 };
        var years = YearsOption("Iterations after which the benefit is taken (\"effectively infinite\").", DefaultHeatmapIterations);
        var plot = PlotOption("Draw the grid as a heatmap (the seed's Figure 1).");
        var (width, height) = SizeOptions();
        var csv = CsvOption();
        var json = JsonOption();
        var command = new Command("heatmap", "Kickstarting benefit A/C after many iterations over a grid of r and α (the seed's Figure 1).")
        {
            Options = { rMin, rMax, rCount, alphaCount, years, plot, width, height, csv, json },
        };
        command.SetAction(parseResult =>
        {
            long gridCells = (long)parseResult.GetValue(rCount) * parseResult.GetValue(alphaCount);
            if (gridCells > MaxGridCells)
            {
                throw new RecyclingException(string.Create(CultureInfo.InvariantCulture,
                    $"--r-count {parseResult.GetValue(rCount)} × --alpha-count {parseResult.GetValue(alphaCount)} = {gridCells:N0} cells: a heatmap grid holds at most {MaxGridCells:N0}"));
            }

            CheckOutputs(parseResult, plot, csv);
            var rs = Spaced("r", parseResult.GetValue(rMin), parseResult.GetValue(rMax), parseResult.GetValue(rCount));
            var alphas = Spaced("alpha", 0, 1, parseResult.GetValue(alphaCount));
            var grid = RecyclingEconomics.KickstartBenefitGrid(rs, alphas, parseResult.GetValue(years));
            if (parseResult.GetValue(plot) is string png)
            {
                EconomicsPlots.SaveKickstartHeatmap(png, grid, parseResult.GetValue(width), parseResult.GetValue(height));
            }
            var cells = from i in Enumerable.Range(0, rs.Length)
                        from j in Enumerable.Range(0, alphas.Length)
                        select (R: rs[i], Alpha: alphas[j], Benefit: grid.Benefit[i, j]);
            WriteCsv(parseResult, csv, "r,alpha,iterations,benefit",
                cells.Select(c => Csv(c.R, c.Alpha, grid.Iterations, c.Benefit)));
            var output = parseResult.InvocationConfiguration.Output;
            if (parseResult.GetValue(json))
            {
                WriteJson(output, new
                {
                    grid.GrowthRates,
                    grid.Alphas,
                    grid.Iterations,
                    Benefit = rs.Select((_, i) => alphas.Select((_, j) => grid.Benefit[i, j]).ToArray()).ToArray(),
                });
                return 0;
            }
            // A readable excerpt: at most 10 rows of r and the α columns 0, .25, .5, .75, 1 where the grid has them.
            var console = CommandSupport.Terminal(output);
            var columns = Enumerable.Range(0, alphas.Length).Where(j => alphas.Length <= 6 || alphas[j] * 4 % 1 < 1e-9).ToArray();
            var rows = Enumerable.Range(0, rs.Length).Where(i => rs.Length <= 10 || i % ((rs.Length + 9) / 10) == 0 || i == rs.Length - 1).ToArray();
            var table = new Table()
                .Title($"Kickstarting A/C after {grid.Iterations} iterations")
                .Caption($"excerpt of a {rs.Length} r × {alphas.Length} α grid")
                .AddColumn("r");
            foreach (int j in columns)
            {
                table.AddColumn($"α = {G(alphas[j])}");
            }
            foreach (int i in rows)
            {
                table.AddRow([G(rs[i]), .. columns.Select(j => F(grid.Benefit[i, j], 3))]);
            }
            Tables.Write(console, table);
            return 0;
        });
        return command;
    }

    private static Command CreateBreakEven()
    {
        var command = new Command("breakeven", "Break-even points: the α kickstarting needs for a benefit; the β and iterations for which augmentation beats training from scratch.");

        var kr = GrowthOption("--r", "Yearly growth of real compute (a multiplier).");
        var benefit = new Option<double>("--benefit") { Description = "Target benefit A/C (1 or more).", Required = true };
        var kProgress = ProgressOption();
        var kYears = new Option<int?>("--years") { Description = "Reach the benefit at iteration N; without it, in the limit of many iterations." };
        var kJson = JsonOption();
        var kickstart = new Command("kickstart", "The smallest reuse efficiency α for which kickstarting reaches the target benefit.")
        {
            Options = { kr, benefit, kProgress, kYears, kJson },
        };
        kickstart.SetAction(parseResult =>
        {
            double growth = RecyclingEconomics.EffectiveGrowth(parseResult.GetValue(kr), parseResult.GetValue(kProgress));
            var requirement = RecyclingEconomics.KickstartAlphaForBenefit(growth, parseResult.GetValue(benefit), parseResult.GetValue(kYears));
            var output = parseResult.InvocationConfiguration.Output;
            if (parseResult.GetValue(kJson))
            {
                WriteJson(output, requirement);
                return 0;
            }
            string when = requirement.Iterations is int n ? $"after {n} iterations" : "in the limit";
            output.WriteLine(requirement.Alpha is double a
                ? $"r = {G(requirement.GrowthRate)}: kickstarting reaches A/C = {G(requirement.Benefit)} {when} with α ≥ {F(a, 6)}"
                : $"r = {G(requirement.GrowthRate)}: kickstarting cannot reach A/C = {G(requirement.Benefit)} {when}, even with α = 1 (at most {F(requirement.BenefitAtFullReuse, 4)})");
            return 0;
        });

        var ar = GrowthOption("--r", "Yearly growth of real compute (a multiplier).");
        var g = GrowthOption("--g", "Yearly growth of algorithmic efficiency (a multiplier).");
        var beta = new Option<double>("--beta") { Description = "Fraction β in [0, 1] of new algorithmic progress taken up.", Required = true };
        var aYears = YearsOption("Horizon: iterations n = 1..N searched.", DefaultIterations);
        var aJson = JsonOption();
        var augment = new Command("augment", "The last iteration at which augmentation still beats training from scratch, and the β it needs.")
        {
            Options = { ar, g, beta, aYears, aJson },
        };
        augment.SetAction(parseResult =>
        {
            var result = RecyclingEconomics.AugmentationBreakEven(
                parseResult.GetValue(ar), parseResult.GetValue(g), parseResult.GetValue(beta), parseResult.GetValue(aYears));
            var output = parseResult.InvocationConfiguration.Output;
            if (parseResult.GetValue(aJson))
            {
                WriteJson(output, result);
                return 0;
            }
            output.WriteLine($"r = {G(result.GrowthRate)}, g = {G(result.ProgressGrowth)}, β = {G(result.Beta)}: " + (result.LastBeneficialIteration is int last
                ? $"augmentation beats training from scratch up to iteration {last} of {result.Horizon}"
                : $"augmentation never beats training from scratch after iteration 1 (horizon {result.Horizon})"));
            output.WriteLine($"it beats training from scratch exactly when β > 1 − 1/(g·r) = {F(result.MinimumBeta, 6)}");
            return 0;
        });

        command.Subcommands.Add(kickstart);
        command.Subcommands.Add(augment);
        return command;
    }

    private static Option<double> GrowthOption(string name, string description) =>
        new(name) { Description = description, Required = true };

    private static Option<double[]> ManyOption(string name, string description) =>
        new(name) { Description = description, Required = true, AllowMultipleArgumentsPerToken = true, Arity = ArgumentArity.OneOrMore };

    private static Option<double> ProgressOption() =>
        new("--progress")
        {
            Description = "Yearly algorithmic progress g counted as effective compute: r becomes r·g (the same as lowering α to α/g).",
            DefaultValueFactory = _ => 1,
        };

    private static Option<int> YearsOption(string description, int defaultValue) =>
        new("--years") { Description = description, DefaultValueFactory = _ => defaultValue };

    private static Option<string?> PlotOption(string description) => new("--plot") { Description = description + " Writes a PNG." };

    private static (Option<int> Width, Option<int> Height) SizeOptions() =>
        (new Option<int>("--width") { Description = "Plot width in pixels.", DefaultValueFactory = _ => EconomicsPlots.DefaultWidth },
         new Option<int>("--height") { Description = "Plot height in pixels.", DefaultValueFactory = _ => EconomicsPlots.DefaultHeight });

    private static Option<string?> CsvOption() => new("--csv") { Description = "Also write the numbers to this CSV file." };

    private static Option<bool> JsonOption() => new("--json") { Description = "Print JSON instead of a table (docs/json.md; a diverging limit is null)." };

    private static double[] Spaced(string name, double min, double max, int count)
    {
        if (count < 1)
        {
            throw new EconomicsParameterException($"{name} count", count, "a grid needs at least one value");
        }
        if (!(max >= min))
        {
            throw new EconomicsParameterException($"{name} max", max, $"must be at least the minimum {G(min)}");
        }
        return count == 1 ? [min] : [.. Enumerable.Range(0, count).Select(i => min + ((max - min) * i / (count - 1)))];
    }

    /// <summary>The one JSON style; diverging limits (+∞) are written as null, with a note.</summary>
    private static void WriteJson<T>(TextWriter output, T value) => output.WriteLine(JsonStyle.Serialize(value, Console.Error.WriteLine));

    /// <summary>The series as JSON with --json, otherwise one table each on the terminal.</summary>
    private static int WriteSeries<TSeries>(ParseResult parseResult, Option<bool> json, IReadOnlyList<TSeries> series, Func<TSeries, Table> table)
    {
        var output = parseResult.InvocationConfiguration.Output;
        if (parseResult.GetValue(json))
        {
            WriteJson(output, series);
            return 0;
        }

        var console = CommandSupport.Terminal(output);
        foreach (var s in series)
        {
            Tables.Write(console, table(s));
        }

        return 0;
    }

    /// <summary>Checks the files the options name before any work, so a bad path fails fast and names its option.</summary>
    private static void CheckOutputs(ParseResult parseResult, params Option<string?>[] options)
    {
        foreach (var option in options)
        {
            CommandSupport.Output(parseResult, option, InputFiles.None);
        }
    }

    private static void WriteCsv(ParseResult parseResult, Option<string?> option, string header, IEnumerable<string> lines)
    {
        if (CommandSupport.Output(parseResult, option, InputFiles.None) is not { } file)
        {
            return;
        }
        var text = new StringBuilder().Append(header).Append('\n');
        foreach (string line in lines)
        {
            text.Append(line).Append('\n');
        }
        file.WriteAllText(text.ToString());
    }

    private static string Csv(params object[] values) => string.Join(',', values.Select(v => v switch
    {
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString(),
    }));

    private static string Quote(string text) => $"\"{text.Replace("\"", "\"\"", StringComparison.Ordinal)}\"";

    private static string F(double value, int decimals) =>
        double.IsFinite(value) ? value.ToString("F" + decimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) : "∞";

    private static string G(double value) => value.ToString("G6", CultureInfo.InvariantCulture);
}
