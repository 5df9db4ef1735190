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
            var path = Path.Combine(folder, $"ft{i}.onnx");
            FineTuner.Run(new FineTuneOptions
            {
                Model = Path.GetFullPath(BaseFixture),
                Train = train,
                Output = path,
                Epochs = 2,
                BatchSize = 16,
                Seed = i,
                Settings = new TrainingSettings { Optimizer = OptimizerKind.Sgd, LearningRate = 0.05 + (0.05 * i), Momentum = 0.9 },
            });
            paths.Add(path);
        }

        return new TinyZoo(folder, Path.GetFullPath(BaseFixture), train, val, DatasetLoader.Load(val), paths);
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
