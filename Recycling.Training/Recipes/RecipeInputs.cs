using System.Diagnostics.CodeAnalysis;

namespace Recycling.Training.Recipes;

/// <summary>
/// What every target-training recipe (fusing, ratatouille, lo-fi) shares: the target data, the recipe folder, the
/// fine-tuning budget, the seeds and the concurrency. Each recipe's options record extends it with its own models and
/// settings; the CLI's option set and the recipe files build it once (<see cref="Into{T}"/> and the records'
/// constructors taking it).
/// </summary>
public record RecipeInputs
{
    public RecipeInputs()
    {
    }

    /// <summary>A copy of <paramref name="inputs"/>' shared fields (the base of the recipes' constructors).</summary>
    [SetsRequiredMembers]
    protected RecipeInputs(RecipeInputs inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        Train = inputs.Train;
        Validation = inputs.Validation;
        Tests = inputs.Tests;
        Folder = inputs.Folder;
        Training = inputs.Training;
        Seeds = inputs.Seeds;
        Parallelism = inputs.Parallelism;
    }

    /// <summary>Target training data.</summary>
    public required string Train { get; init; }

    /// <summary>Validation data: the recipe's selections (rankings, greedy soups) and the report.</summary>
    public required string Validation { get; init; }

    /// <summary>More data reported (e.g. OOD); never used for a choice.</summary>
    public IReadOnlyList<string> Tests { get; init; } = [];

    /// <summary>The recipe folder: runs/KEY/ (content-addressed, resumable), the models written and the report.</summary>
    public required string Folder { get; init; }

    /// <summary>The fine-tuning every target run shares (the budget compared across methods).</summary>
    public TargetTraining Training { get; init; } = new();

    /// <summary>Seeds of the recipe (each: its own data orders, and the recipe's own draws).</summary>
    public IReadOnlyList<int> Seeds { get; init; } = [0, 1, 2];

    /// <summary>Concurrent fine-tunings (null: <see cref="RunStore.DefaultParallelism"/>).</summary>
    public int? Parallelism { get; init; }

    /// <summary><paramref name="options"/> (any recipe's options record, e.g. one holding its defaults) with these inputs.</summary>
    public T Into<T>(T options)
        where T : RecipeInputs
    {
        ArgumentNullException.ThrowIfNull(options);

        // The clone keeps the derived type and its own settings; only the shared fields are replaced.
        return (T)((RecipeInputs)options with
        {
            Train = Train,
            Validation = Validation,
            Tests = Tests,
            Folder = Folder,
            Training = Training,
            Seeds = Seeds,
            Parallelism = Parallelism,
        });
    }
}
