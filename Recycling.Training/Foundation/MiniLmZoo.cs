using System.Diagnostics;
using Recycling.Onnx;

namespace Recycling.Training.Foundation;

/// <summary>
/// all-MiniLM-L6-v2 on WordNet 3.0 text tasks (models/foundation/minilm/README.md): the target is a noun synset's
/// supersense (26 lexicographer files) from its definition, OOD the same label from the synset's usage example. The
/// heads read the mean-pooled last hidden state (<see cref="MeanPooling"/>: the sentence embedding of
/// sentence-transformers; the export's own pooled output '924' is BERT's untrained pooler). Texts are cut to 32
/// tokens (95 % of the definitions fit; the batch is padded to its longest text). The embeddings stay frozen in every
/// fine-tuning: with a few thousand sentences most of the 30,522 word vectors receive no gradient, and AdamW's weight
/// decay would only shrink them; the six encoder layers, their LayerNorms and the head train.
/// </summary>
internal static class MiniLmZoo
{
    public const string Generator = "scripts/foundation/wordnet_tasks.py";

    public static FoundationZooSpec Spec { get; } = new()
    {
        Name = "minilm",
        FoundationModel = "minilm",
        Description = "all-MiniLM-L6-v2 fine-tuned on WordNet noun supersenses (26 classes; OOD: usage examples instead of definitions)",
        OodDescription = "the synsets' usage examples (in domain: their definitions)",
        Cut = MeanPooling.Output,
        AddFeatures = (model, output) =>
        {
            using var source = OnnxModel.Open(model);
            MeanPooling.Write(source, output);
        },
        Text = new TextDataOptions { MaxLength = 32 },
        DataFolder = Path.Combine("models", "foundation", "minilm"),
        GenerateData = (folder, source) => Generate(folder, source),
        Classes = 26,
        TargetTrain = "probe_train",
        Auxiliaries =
        [
            new("verb_supersense", "aux_verb_supersense", 15, "verb definition -> verb supersense"),
            new("pos", "aux_pos", 4, "definition -> part of speech"),
            new("hypernym_depth", "aux_hypernym_depth", 4, "noun definition -> hypernym depth quartile"),
            new("verb_example_supersense", "aux_verb_example_supersense", 15, "verb usage example -> verb supersense"),
            new("gloss_length", "aux_gloss_length", 4, "noun definition -> length quartile"),
            new("adjective_kind", "aux_adjective_kind", 3, "adjective definition -> head, satellite or relational"),
            new("adverb_or_adjective", "aux_adverb_or_adjective", 2, "definition -> adjective or adverb"),
        ],
        AuxiliaryTraining = new RoleTraining { LearningRate = 1e-4, WeightDecays = [0.01], BatchSize = 32, Freeze = Frozen },
        TargetTraining = new RoleTraining { LearningRate = 5e-5, LearningRateHigh = 1.5e-4, WeightDecays = [0, 0.01, 0.1], BatchSize = 32, Freeze = Frozen },
        RatatouilleProbeLearningRate = 1e-2,
        // Softer than the default 1e-3: on 256 definitions the same probe accuracy, a lower val loss, and one epoch of
        // LP-FT at lr 1.5e-4 ends at 56 % val against 47 % (docs/foundation-zoos.md).
        ProbeL2 = 0.1,
        Full = new ZooScale
        {
            Name = "full",
            Auxiliaries = 6,
            DiwaRuns = 6,
            AuxiliaryImages = 800,
            TargetImages = 1000,
            ProbeImages = 1000,
            EvaluationImages = 500,
            FisherImages = 100,
            AuxiliaryEpochs = 1,
            TargetEpochs = 1,
            RatatouilleProbeSteps = 10,
        },
        Mini = ZooScale.Mini with { RatatouilleProbeSteps = 1 },
    };

    /// <summary>The embeddings (word, position, token type and their LayerNorm).</summary>
    private const string Frozen = @"^embeddings\.";

    /// <summary>Runs the committed Python generator (found from the current directory or the tool's folder upwards) into <paramref name="folder"/>.</summary>
    private static void Generate(string folder, string? wordnet)
    {
        var script = new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory }
            .SelectMany(origin => Ancestors(new DirectoryInfo(origin)))
            .Select(d => Path.Combine(d.FullName, Generator))
            .FirstOrDefault(File.Exists)
            ?? throw new RecyclingException($"recycle zoo data minilm works only in a checkout of the Recycling repository: its generator {Generator} (python3, WordNet 3.0) is not shipped with the tool; the data it makes are (models/foundation/minilm)");
        var start = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { script, "--out", folder }.Concat(wordnet is null ? [] : ["--wordnet", wordnet]))
        {
            start.ArgumentList.Add(arg);
        }

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new RecyclingException("python3 did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new RecyclingException($"the minilm data generator needs python3 ({e.Message})", e);
        }

        using (process)
        {
            var stderr = process.StandardError.ReadToEndAsync();
            _ = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                var lines = stderr.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                throw new RecyclingException($"{MessageText.Path(script)} failed: {MessageText.OneLine(lines.LastOrDefault() ?? $"exit code {process.ExitCode}")}");
            }
        }
    }

    private static IEnumerable<DirectoryInfo> Ancestors(DirectoryInfo? dir)
    {
        for (; dir is not null; dir = dir.Parent)
        {
            yield return dir;
        }
    }
}
