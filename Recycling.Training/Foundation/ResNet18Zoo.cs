using Recycling.MLNet.Data;
using Recycling.Training.Ops;

namespace Recycling.Training.Foundation;

/// <summary>
/// CNTK's ImageNet ResNet18 on rotated Fashion-MNIST (models/foundation/resnet18/README.md). Images are upsampled to
/// 64×64, grey copied to three channels, and fed in the model's own convention 255·x − 114.5 (CNTK's featurizer
/// subtracts a mean pixel of 114.5 from 0..255 values). The heads read ReLU393_Output_0, the last ReLU, [512, 2, 2]
/// at 64×64, flattened to 2,048 features: CNTK's 7×7 average pool after it cannot run below 193 pixels, and the
/// executor has no cut-and-pool head, so the 2×2 positions stay separate features (which also keeps where in the
/// image a feature fired, information a rotation task can use).
/// </summary>
internal static class ResNet18Zoo
{
    public const string Cut = "ReLU393_Output_0";

    public static readonly ImagePreprocessing Preprocessing = ImagePreprocessing.Parse("64x64", 3, "0.449,0.449,0.449:0.003922,0.003922,0.003922")!;

    public static FoundationZooSpec Spec { get; } = new()
    {
        Name = "resnet18",
        FoundationModel = "resnet18",
        Description = "ResNet18 (ImageNet, CNTK) fine-tuned on rotated Fashion-MNIST at 64x64",
        OodDescription = "images rotated by 75° (in domain: 0–60°)",
        Cut = Cut,
        Preprocessing = Preprocessing,
        DataFolder = Path.Combine("models", "foundation", "resnet18"),
        GenerateData = (folder, source) => FashionMnistTasks.Generate(folder, source: source ?? FashionMnistTasks.DefaultSource),
        Auxiliaries = [.. FashionMnistTasks.Auxiliaries.Select(t => new AuxiliaryTask(t.Name, $"aux_{t.Name}", t.Classes, t.Description))],
        AuxiliaryTraining = new RoleTraining { LearningRate = 1e-4, WeightDecays = [0], BatchSize = 32, BatchNorm = BatchNormMode.Frozen },
        // Weight averaging assumes the runs stay in one basin around the shared start (DiWA's "mild" ranges); in the
        // small build the two targets drawn above 1.3e-4 ended one epoch with 2-3 times the train loss and 10-14 points
        // lower accuracy than those below 8e-5, so the range stops at the auxiliary runs' rate, 1e-4.
        TargetTraining = new RoleTraining { LearningRate = 5e-5, LearningRateHigh = 1e-4, WeightDecays = [0, 1e-4, 1e-3], BatchSize = 32, BatchNorm = BatchNormMode.Frozen },

        // The head reads 2,048 unnormalised ReLU features: an Adam step of 1e-2 per weight moves a logit by tens (the
        // small zoo's probe rate sent the head-only loss to 16-20); 1e-4 moves it by a fraction.
        RatatouilleProbeLearningRate = 1e-4,
        Full = new ZooScale
        {
            Name = "full",
            Auxiliaries = 6,
            DiwaRuns = 6,
            AuxiliaryImages = 500,
            TargetImages = 1000,
            ProbeImages = 500,
            EvaluationImages = 500,
            FisherImages = 100,
            AuxiliaryEpochs = 1,
            TargetEpochs = 1,
            RatatouilleProbeSteps = 10,
        },
    };
}
