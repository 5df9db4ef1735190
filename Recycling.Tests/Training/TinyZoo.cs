using Recycling.MLNet.Data;
using Recycling.Onnx.Numpy;
using Recycling.Training;

namespace Recycling.Tests.Training;

/// <summary>
/// A tiny zoo for recipe tests (seconds): the BatchNorm CNN fixture (3×8×8 inputs, 4 classes, BatchNorm kept) as the
/// base, random images whose class is learnable by a pooled CNN (the channel with the highest mean, class 3 when
/// every channel mean is negative), and ingredients fine-tuned from the base by <see cref="FineTuner"/> with
/// different seeds (BatchNorm trained, so running statistics differ too).
/// </summary>
internal sealed record TinyZoo(string Folder, string Base, string Train, string ValidationPrefix, Dataset Validation, IReadOnlyList<string> Ingredients)
{
    public static readonly string BaseFixture = Path.Combine(Recycling.Tests.Zoo.ZooPaths.RepositoryRoot, "Recycling.Tests", "Training", "Fixtures", "cnn_bn.onnx");

    public static TinyZoo Create(string folder, int ingredients, int trainSamples = 96, int valSamples = 64)
    {
        Directory.CreateDirectory(folder);
        var train = WriteSplit(Path.Combine(folder, "tiny_train"), trainSamples, seed: 1);
        var val = WriteSplit(Path.Combine(folder, "tiny_val"), valSamples, seed: 2);
        var paths = new List<string>();
        for (var i = 0; i < ingredients; i++)
        {
            paths.Add(FineTune(BaseFixture, train, Path.Combine(folder, $"ft{i}.onnx"), seed: i, lr: 0.05 + (0.05 * i), epochs: 2));
        }

        return new TinyZoo(folder, Path.GetFullPath(BaseFixture), train, val, DatasetLoader.Load(val), paths);
    }

    /// <summary>Fine-tunes <paramref name="model"/> as the tiny zoo's ingredients are (SGD with momentum 0.9, batches of 16), optionally with a new head; returns <paramref name="output"/>.</summary>
    public static string FineTune(string model, string train, string output, int seed, double lr, int epochs, HeadSpec? head = null)
    {
        FineTuner.Run(new FineTuneOptions
        {
            Model = Path.GetFullPath(model),
            Train = train,
            Output = output,
            Epochs = epochs,
            BatchSize = 16,
            Seed = seed,
            Head = head,
            Settings = new TrainingSettings { Optimizer = OptimizerKind.Sgd, LearningRate = lr, Momentum = 0.9 },
        });
        return output;
    }

    /// <summary>Writes PREFIX_images.npy and PREFIX_labels.npy; returns PREFIX.</summary>
    public static string WriteSplit(string prefix, int count, int seed)
    {
        var random = new Random(seed);
        const int pixels = 8 * 8;
        var images = new float[count * 3 * pixels];
        var labels = new long[count];
        for (var s = 0; s < count; s++)
        {
            var means = new double[3];
            for (var c = 0; c < 3; c++)
            {
                var offset = (random.NextDouble() * 2) - 1;
                for (var p = 0; p < pixels; p++)
                {
                    var v = (float)(offset + (random.NextDouble() - 0.5));
                    images[(((s * 3) + c) * pixels) + p] = v;
                    means[c] += v / pixels;
                }
            }

            labels[s] = means.All(m => m < 0) ? 3 : Array.IndexOf(means, means.Max());
        }

        NpyFile.Write(prefix + "_images.npy", NpyArray.From<float>(images, count, 3, 8, 8));
        NpyFile.Write(prefix + "_labels.npy", NpyArray.From<long>(labels, count));
        return prefix;
    }
}
