using System.Diagnostics.CodeAnalysis;

namespace Recycling.Training.Recipes;

/// <summary>The inputs of the recipes that recycle fine-tunings of one base on other tasks (fusing, ratatouille).</summary>
public abstract record AuxiliaryRecipeInputs : RecipeInputs
{
    protected AuxiliaryRecipeInputs()
    {
    }

    /// <summary>A copy of <paramref name="inputs"/>' shared fields with the base and the auxiliaries.</summary>
    [SetsRequiredMembers]
    protected AuxiliaryRecipeInputs(RecipeInputs inputs, string @base, IReadOnlyList<string> auxiliaries)
        : base(inputs)
    {
        Base = @base;
        Auxiliaries = auxiliaries;
    }

    /// <summary>The pretrained base the auxiliaries were fine-tuned from.</summary>
    public required string Base { get; init; }

    /// <summary>Fine-tunings of the base on other tasks (any heads).</summary>
    public required IReadOnlyList<string> Auxiliaries { get; init; }
}
