using Recycling.Training.Recipes;

namespace Recycling.Tests.Training;

/// <summary>
/// The fixture of a recipe test class: a temporary folder holding a <see cref="TinyZoo"/>, the value its new heads
/// read, and the tiny fine-tuning budget every recipe test shares. Deleted with everything in it.
/// </summary>
internal sealed class TinyZooFixture : IDisposable
{
    /// <summary>The BatchNorm CNN fixture's pooled features.</summary>
    public const string FeatureAt = "/Flatten_output_0";

    /// <summary>One epoch, batch 16, lr 0.01, the head at <see cref="FeatureAt"/>: seconds per run.</summary>
    public static readonly TargetTraining TinyTraining = new() { Epochs = 1, BatchSize = 16, LearningRate = 1e-2, FeatureAt = FeatureAt };

    /// <param name="name">Names the temporary folder (recycling-NAME-...).</param>
    /// <param name="ingredients">Fine-tunings of the base the zoo holds.</param>
    public TinyZooFixture(string name, int ingredients)
    {
        Folder = Directory.CreateTempSubdirectory($"recycling-{name}-").FullName;
        Zoo = TinyZoo.Create(Path.Combine(Folder, "zoo"), ingredients);
    }

    public string Folder { get; }

    public TinyZoo Zoo { get; }

    /// <summary>A recipe's inputs on the zoo: its train and val splits, the tiny budget, the seeds (default 0), two runs at once, the recipe folder under <see cref="Folder"/>.</summary>
    public RecipeInputs Inputs(string folder, params int[] seeds) => new()
    {
        Train = Zoo.Train,
        Validation = Zoo.ValidationPrefix,
        Folder = Path.Combine(Folder, folder),
        Training = TinyTraining,
        Seeds = seeds.Length == 0 ? [0] : seeds,
        Parallelism = 2,
    };

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}
