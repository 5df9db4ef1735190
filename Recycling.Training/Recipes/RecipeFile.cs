using System.Globalization;
using Recycling.MLNet.Data;
using Recycling.MLNet.Soups;
using Recycling.Onnx;
using Recycling.Onnx.Merging;
using Recycling.Training.Ops;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Recycling.Training.Recipes;

/// <summary>The recipes a recipe file can name (<c>recipe:</c>).</summary>
internal enum RecipeKind
{
    Fuse,
    Ratatouille,
    ColdFusion,
    LearnedSoup,
    Lofi,
    Merge,
}

/// <summary>How a learned soup's mixing weights are trained (<c>learned_soup:</c>).</summary>
internal sealed record LearnedSoupSettings(int Epochs, double LearningRate, bool ByLayer, int BatchSize);

/// <summary>
/// A recipe file (<c>recycle recipe run FILE.yml</c>): one YAML schema for every recipe. <c>recipe:</c> names the
/// recipe; <c>base</c>, <c>auxiliaries</c>, <c>models</c> name ONNX files and <c>data:</c> (<c>train</c>, <c>val</c>,
/// <c>test</c>) data, all relative to the file (a file name may hold * and ? wildcards); <c>finetune:</c> holds the
/// target fine-tuning shared by every run, <c>seeds</c> a count or a list; <c>baselines</c>, <c>soups</c>,
/// <c>learned_soup:</c> are per recipe; <c>merge:</c> IS a mergekit merge config (<see cref="MergeConfig"/>, read by
/// its own parser). Keys a recipe does not use are refused, not ignored. Every error names the file, the line and
/// the key. Each recipe maps to its options record in one method (<see cref="ToFusing"/>, <see cref="ToLofi"/>, ...).
/// </summary>
internal sealed class RecipeFile
{
    /// <summary>Recipe files are small; a larger file is refused rather than parsed.</summary>
    public const int MaxBytes = 1 << 20;

    private static readonly Dictionary<string, RecipeKind> Kinds = new(StringComparer.Ordinal)
    {
        ["fuse"] = RecipeKind.Fuse,
        ["ratatouille"] = RecipeKind.Ratatouille,
        ["cold_fusion"] = RecipeKind.ColdFusion,
        ["learned_soup"] = RecipeKind.LearnedSoup,
        ["lofi"] = RecipeKind.Lofi,
        ["merge"] = RecipeKind.Merge,
    };

    /// <summary>The top-level keys each recipe takes (recipe: included), in the order the help lists them.</summary>
    private static readonly Dictionary<RecipeKind, string[]> KeysOf = new()
    {
        [RecipeKind.Fuse] = ["recipe", "base", "auxiliaries", "data", "finetune", "seeds", "parallel", "baselines"],
        [RecipeKind.Lofi] = ["recipe", "base", "data", "finetune", "seeds", "parallel", "soups"],
        [RecipeKind.LearnedSoup] = ["recipe", "models", "data", "learned_soup", "seeds"],
        [RecipeKind.Merge] = ["recipe", "merge", "data"],
        [RecipeKind.Ratatouille] = ["recipe", "base", "auxiliaries", "data", "finetune", "seeds", "parallel", "soups", "ratatouille"],
        [RecipeKind.ColdFusion] = ["recipe", "base", "contributors", "data", "rounds", "finetune", "target_finetune", "seeds", "parallel"],
    };

    private static readonly string[] AllKeys = ["recipe", "base", "auxiliaries", "models", "contributors", "data", "rounds", "finetune", "target_finetune", "seeds", "parallel", "baselines", "soups", "learned_soup", "ratatouille", "merge"];

    /// <summary>ColD fusion's defaults (the contributors' budget per round), from its options record.</summary>
    private static readonly ColdFusionOptions ColdFusionDefaults = new() { Base = "", Contributors = [], TargetTrain = "", TargetValidation = "", Folder = "" };

    private RecipeFile(string path, RecipeKind kind)
    {
        Path = path;
        Kind = kind;
    }

    /// <summary>The recipe file (as given).</summary>
    public string Path { get; }

    public RecipeKind Kind { get; }

    /// <summary>The recipe's name as written in <c>recipe:</c>.</summary>
    public string Name => Kinds.First(k => k.Value == Kind).Key;

    /// <summary>Full path of <c>base</c> (fuse: the baseline; lofi: the start of every run).</summary>
    public string? Base { get; private set; }

    public IReadOnlyList<string> Auxiliaries { get; private set; } = [];

    /// <summary>A learned soup's ingredients.</summary>
    public IReadOnlyList<string> Models { get; private set; } = [];

    public string? Train { get; private set; }

    public string? Validation { get; private set; }

    public IReadOnlyList<string> Tests { get; private set; } = [];

    public TargetTraining Training { get; private set; } = new();

    public IReadOnlyList<int> Seeds { get; private set; } = [0, 1, 2];

    public int? Parallelism { get; private set; }

    /// <summary>Fuse: fine-tune the best-probed auxiliary too (<c>baselines: [base, intertraining]</c>).</summary>
    public bool Intertraining { get; private set; } = true;

    /// <summary>Lo-fi: the uniform soup of every run.</summary>
    public bool UniformSoup { get; private set; } = true;

    /// <summary>Lo-fi: the greedy soup's rule (<c>greedy</c>: &gt;, <c>greedy_ties</c>: ≥), null for none.</summary>
    public GreedyRule? GreedySoup { get; private set; } = GreedyRule.Strict;

    public LearnedSoupSettings LearnedSoup { get; private set; } = new(LearnedSoupOptions.DefaultEpochs, LearnedSoupOptions.DefaultLearningRate, false, 64);

    /// <summary>Ratatouille's settings beyond the shared budget (<c>ratatouille:</c>; the soups' rule comes from <c>soups:</c>).</summary>
    public RatatouilleOptions RatatouilleSettings { get; private set; } = new() { Base = "", Auxiliaries = [], Train = "", Validation = "", Folder = "" };

    /// <summary>ColD fusion's contributors (each with its own task data and, optionally, its own budget).</summary>
    public IReadOnlyList<ColdFusionContributor> Contributors { get; private set; } = [];

    /// <summary>ColD fusion's rounds.</summary>
    public int Rounds { get; private set; } = ColdFusionDefaults.Rounds;

    /// <summary>ColD fusion: also fine-tune each round's shared model on the target with this budget (null: the probe only).</summary>
    public TargetTraining? TargetFinetune { get; private set; }

    /// <summary>The merge recipe's mergekit config.</summary>
    public MergeConfig? Merge { get; private set; }

    /// <summary>What was accepted but has no effect (the merge config's notes), one line each.</summary>
    public IReadOnlyList<string> Notes => Merge?.Notes ?? [];

    public static RecipeFile Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string text;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: recipe file not found");
            }

            if (info.Length > MaxBytes)
            {
                throw new RecyclingException($"{MessageText.Path(path)}: {info.Length} bytes is too large for a recipe file (at most {MaxBytes})");
            }

            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: cannot read the recipe file: {e.Message}");
        }

        return Parse(text, path);
    }

    /// <summary>Parses recipe <paramref name="text"/>; <paramref name="path"/> names it in errors and anchors relative paths.</summary>
    public static RecipeFile Parse(string text, string path)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(path);
        if (text.Length > MaxBytes)
        {
            throw new RecyclingException($"{MessageText.Path(path)}: {text.Length} characters is too large for a recipe file (at most {MaxBytes})");
        }

        MergeConfig.CheckNesting(text, path);
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            throw new RecyclingException(string.Create(CultureInfo.InvariantCulture, $"{MessageText.Path(path)}:{e.Start.Line}: not valid YAML: {(e.InnerException?.Message ?? e.Message).ReplaceLineEndings(" ")}"));
        }

        if (stream.Documents.Count != 1)
        {
            throw new RecyclingException(stream.Documents.Count == 0
                ? $"{MessageText.Path(path)}: the recipe file is empty (recipe: fuse | learned_soup | lofi | merge, ...)"
                : $"{MessageText.Path(path)}: a recipe file is one YAML document, not {stream.Documents.Count}");
        }

        var reader = new Reader(path);
        var root = stream.Documents[0].RootNode as YamlMappingNode
            ?? throw reader.Error(stream.Documents[0].RootNode, "recipe", "a recipe file is a mapping (recipe:, base:, data:, ...)");
        return reader.Read(root);
    }

    /// <summary>The fuse recipe's options, its runs and report under <paramref name="folder"/>.</summary>
    public FusingOptions ToFusing(string folder) => new(Inputs(folder), Base!, Auxiliaries) { Intertraining = Intertraining };

    public LofiOptions ToLofi(string folder) => new(Inputs(folder), start: Base!) { Uniform = UniformSoup, Greedy = GreedySoup };

    /// <summary>The learned soup of one seed (the seed orders the batches), trained on <paramref name="validation"/> (data.val).</summary>
    public LearnedSoupOptions ToLearnedSoup(Dataset validation, string output, int seed) => new()
    {
        Models = Models,
        Validation = validation,
        Output = output,
        ByLayer = LearnedSoup.ByLayer,
        Epochs = LearnedSoup.Epochs,
        LearningRate = LearnedSoup.LearningRate,
        BatchSize = LearnedSoup.BatchSize,
        Seed = seed,
    };

    public MergeRequest ToMerge(string output) => Merge!.Request(output);

    /// <summary>Ratatouille's options (its DiWA baseline included).</summary>
    public RatatouilleOptions ToRatatouille(string folder) => Inputs(folder).Into(RatatouilleSettings with { Base = Base!, Auxiliaries = Auxiliaries });

    /// <summary>What the target-training recipes (fuse, lofi, ratatouille) share: data, budget, seeds, their folder.</summary>
    private RecipeInputs Inputs(string folder) => new()
    {
        Train = Train!,
        Validation = Validation!,
        Tests = Tests,
        Folder = folder,
        Training = Training,
        Seeds = Seeds,
        Parallelism = Parallelism,
    };

    /// <summary>ColD fusion's options: data: is the held-out target, finetune: the contributors' budget per round.</summary>
    public ColdFusionOptions ToColdFusion(string folder) => new()
    {
        Base = Base!,
        Contributors = Contributors,
        Rounds = Rounds,
        TargetTrain = Train!,
        TargetValidation = Validation!,
        TargetTests = Tests,
        Folder = folder,
        Training = Training,
        TargetFinetune = TargetFinetune,
        Seeds = Seeds,
        Parallelism = Parallelism,
    };

    /// <summary>The data every result of the recipe is scored on, by role (val, test0, ...; no train).</summary>
    public IReadOnlyDictionary<string, string> ScoredData()
    {
        var data = new Dictionary<string, string>(StringComparer.Ordinal);
        if (Validation is not null)
        {
            data["val"] = Validation;
        }

        for (var i = 0; i < Tests.Count; i++)
        {
            data[$"test{i}"] = Tests[i];
        }

        return data;
    }

    /// <summary>What the recipe will do, one line each (for `recipe check`).</summary>
    public IReadOnlyList<string> Plan()
    {
        var lines = new List<string>();
        var runs = Kind switch
        {
            RecipeKind.Fuse => Seeds.Count * (Intertraining ? 3 : 2),
            RecipeKind.Lofi => Seeds.Count,
            RecipeKind.Ratatouille => Seeds.Count * Ratatouille.Counts(Auxiliaries.Count, RatatouilleSettings.Runs).FineTunings,
            RecipeKind.ColdFusion => Seeds.Count * ((Rounds * Contributors.Count) + (TargetFinetune is null ? 0 : Rounds + 1)),
            _ => 0,
        };
        var f = Training;
        var budget = string.Create(CultureInfo.InvariantCulture, $"{f.Optimizer} lr {f.LearningRate:G4}, {f.Epochs} epoch(s){(f.MaxSteps is { } m ? $" (at most {m} steps)" : "")}, batch {f.BatchSize}, BatchNorm {f.BatchNorm.ToString().ToLowerInvariant()}{(f.AverageEpochs is { } a ? $", average of the last {a} epochs" : "")}");
        switch (Kind)
        {
            case RecipeKind.Fuse:
                lines.Add($"fuse: the bodies of {Auxiliaries.Count} auxiliaries averaged, fine-tuned with a new head; baselines: base{(Intertraining ? ", intertraining (best-probed auxiliary)" : "")}");
                break;
            case RecipeKind.Lofi:
                lines.Add($"lofi: {MessageText.Count(Seeds.Count, "run")} from {System.IO.Path.GetFileName(Base)} averaged once at the end ({string.Join(", ", new[] { UniformSoup ? "uniform" : null, GreedySoup is { } g ? (g == GreedyRule.Strict ? "greedy (>)" : "greedy (>=)") : null }.OfType<string>())})");
                break;
            case RecipeKind.LearnedSoup:
                lines.Add(string.Create(CultureInfo.InvariantCulture, $"learned_soup: {Models.Count} ingredients, α {(LearnedSoup.ByLayer ? "per layer" : "per model")}, {LearnedSoup.Epochs} epoch(s), lr {LearnedSoup.LearningRate:G4}, {Seeds.Count} seed(s); compared with the uniform and greedy (>) soups"));
                break;
            case RecipeKind.Ratatouille:
                var (perMethod, bodies, _) = Ratatouille.Counts(Auxiliaries.Count, RatatouilleSettings.Runs);
                var starts = bodies == Auxiliaries.Count ? $"the {bodies} auxiliary {(bodies == 1 ? "body" : "bodies")}{(perMethod > bodies + 1 ? " (the starts cycle)" : "")}" : $"the first {bodies} of the {Auxiliaries.Count} auxiliary bodies";
                lines.Add($"ratatouille: a shared probe head from {System.IO.Path.GetFileName(Base)}; {perMethod} target runs per method and seed, ratatouille's from the base and {starts}, DiWA's from the base; uniform and greedy ({(RatatouilleSettings.Rule == GreedyRule.Strict ? ">" : ">=")}) soups");
                break;
            case RecipeKind.ColdFusion:
                lines.Add($"cold_fusion: {Rounds} round(s) of {MessageText.Count(Contributors.Count, "contributor")} ({string.Join(", ", Contributors.Select(c => c.Name))}) from {System.IO.Path.GetFileName(Base)}, bodies averaged each round; the target scored by a linear probe{(TargetFinetune is null ? "" : " and a fine-tuning")} per round");
                break;
            case RecipeKind.Merge:
                lines.Add($"merge: {Merge!.Method.Name} of {Merge.Models.Count} models{(Merge.BaseModel is { } b ? $" on base {System.IO.Path.GetFileName(b)}" : "")}");
                break;
        }

        if (runs > 0)
        {
            lines.Add($"{runs} fine-tunings ({Seeds.Count} seed(s): {string.Join(", ", Seeds)}): {budget}");
        }

        if (Train is not null)
        {
            lines.Add($"train: {Train}");
        }

        foreach (var (role, data) in ScoredData())
        {
            lines.Add($"{role}: {data}");
        }

        return lines;
    }

    private sealed class Reader(string path)
    {
        private readonly string _directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path)) ?? ".";

        public RecyclingException Error(YamlNode node, string key, string message) =>
            new(string.Create(CultureInfo.InvariantCulture, $"{MessageText.Path(path)}:{node.Start.Line}: {key}: {message}"));

        public RecipeFile Read(YamlMappingNode root)
        {
            var entries = new Dictionary<string, (YamlNode Key, YamlNode Value)>(StringComparer.Ordinal);
            foreach (var (keyNode, value) in root.Children)
            {
                var key = Text(keyNode, "key");
                if (!AllKeys.Contains(key))
                {
                    throw Error(keyNode, key, $"unknown key; a recipe file has {string.Join(", ", AllKeys)}");
                }

                entries[key] = (keyNode, value);
            }

            if (!entries.TryGetValue("recipe", out var recipeEntry))
            {
                throw Error(root, "recipe", "missing: name the recipe (fuse, learned_soup, lofi, merge)");
            }

            var name = Text(recipeEntry.Value, "recipe");
            if (!Kinds.TryGetValue(name, out var kind))
            {
                throw Error(recipeEntry.Value, "recipe", $"{MessageText.Path(name)} is not a recipe (fuse, ratatouille, cold_fusion, lofi, learned_soup, merge)");
            }

            if (!KeysOf.TryGetValue(kind, out var allowed))
            {
                throw Error(recipeEntry.Value, "recipe", $"{name} recipes are not available yet in this version (fuse, lofi, learned_soup, merge and cold_fusion are)");
            }

            foreach (var (key, entry) in entries.Where(e => !allowed.Contains(e.Key)))
            {
                throw Error(entry.Key, key, $"a {name} recipe does not use {key} (it takes {string.Join(", ", allowed.Skip(1))})");
            }

            var recipe = new RecipeFile(path, kind);
            YamlNode? Value(string key) => entries.TryGetValue(key, out var e) ? e.Value : null;
            YamlNode Required(string key) => Value(key) ?? throw Error(root, key, $"missing: a {name} recipe needs {key}");
            switch (kind)
            {
                case RecipeKind.Fuse or RecipeKind.Ratatouille:
                    recipe.Base = Model(Required("base"), "base");
                    recipe.Auxiliaries = ModelList(Required("auxiliaries"), "auxiliaries", atLeast: 2);
                    break;
                case RecipeKind.Lofi:
                    recipe.Base = Model(Required("base"), "base");
                    break;
                case RecipeKind.ColdFusion:
                    recipe.Base = Model(Required("base"), "base");
                    recipe.Training = ColdFusionDefaults.Training;
                    recipe.Seeds = ColdFusionDefaults.Seeds;
                    break;
                case RecipeKind.LearnedSoup:
                    recipe.Models = ModelList(Required("models"), "models", atLeast: 2);
                    break;
                case RecipeKind.Merge:
                    recipe.Merge = Required("merge") is YamlMappingNode merge
                        ? MergeConfig.FromNode(merge, path)
                        : throw Error(Required("merge"), "merge", "a mergekit merge config (merge_method:, models:, ...)");
                    break;
            }

            var needsTrain = kind is RecipeKind.Fuse or RecipeKind.Ratatouille or RecipeKind.Lofi or RecipeKind.ColdFusion;
            if (entries.TryGetValue("data", out var data))
            {
                ReadData(recipe, data.Key, data.Value, needsTrain, needsVal: kind != RecipeKind.Merge);
            }
            else if (kind != RecipeKind.Merge)
            {
                throw Error(root, "data", $"missing: a {name} recipe needs data: with {(needsTrain ? "train and val" : "val")}");
            }

            if (Value("finetune") is { } finetune)
            {
                recipe.Training = ReadTraining(finetune, "finetune", recipe.Training);
            }

            if (kind == RecipeKind.ColdFusion)
            {
                recipe.Contributors = ReadContributors(Required("contributors"), recipe.Training);
            }

            if (Value("target_finetune") is { } targetFinetune)
            {
                recipe.TargetFinetune = ReadTraining(targetFinetune, "target_finetune", new TargetTraining());
            }

            if (Value("rounds") is { } rounds)
            {
                recipe.Rounds = Int(rounds, "rounds", 1);
            }

            if (Value("seeds") is { } seeds)
            {
                recipe.Seeds = ReadSeeds(seeds, atLeast: kind == RecipeKind.Lofi ? 2 : 1);
            }
            else if (kind == RecipeKind.LearnedSoup)
            {
                recipe.Seeds = [0];
            }

            if (Value("parallel") is { } parallel)
            {
                recipe.Parallelism = Int(parallel, "parallel", 1);
            }

            if (Value("baselines") is { } baselines)
            {
                var names = Names(baselines, "baselines", ["base", "intertraining"]);
                if (!names.Contains("base"))
                {
                    throw Error(baselines, "baselines", "fuse always fine-tunes the base under the same budget (its baseline): list base");
                }

                recipe.Intertraining = names.Contains("intertraining");
            }

            if (Value("soups") is { } soups)
            {
                var names = Names(soups, "soups", ["uniform", "greedy", "greedy_ties"]);
                if (names.Contains("greedy") && names.Contains("greedy_ties"))
                {
                    throw Error(soups, "soups", "one greedy rule: greedy (>, model soups) or greedy_ties (>=, DiWA)");
                }

                recipe.UniformSoup = names.Contains("uniform");
                recipe.GreedySoup = names.Contains("greedy") ? GreedyRule.Strict : names.Contains("greedy_ties") ? GreedyRule.AllowTies : null;
                if (kind == RecipeKind.Ratatouille)
                {
                    if (!recipe.UniformSoup || recipe.GreedySoup is null)
                    {
                        throw Error(soups, "soups", "ratatouille always reports the uniform and a greedy soup: list uniform and greedy or greedy_ties (the rule)");
                    }

                    recipe.RatatouilleSettings = recipe.RatatouilleSettings with { Rule = recipe.GreedySoup.Value };
                }
            }

            if (Value("ratatouille") is { } ratatouille)
            {
                recipe.RatatouilleSettings = ReadRatatouille(ratatouille, recipe.RatatouilleSettings);
            }

            if (Value("learned_soup") is { } learned)
            {
                recipe.LearnedSoup = ReadLearnedSoup(learned, recipe.LearnedSoup);
            }

            return recipe;
        }

        /// <summary>data: under <paramref name="keyNode"/> (the line a missing entry is reported at).</summary>
        private void ReadData(RecipeFile recipe, YamlNode keyNode, YamlNode node, bool needsTrain, bool needsVal)
        {
            var mapping = Mapping(node, "data", "a mapping with train, val and test");
            YamlNode? train = null, val = null;
            foreach (var (entry, value) in mapping.Children)
            {
                var key = Text(entry, "data key");
                switch (key)
                {
                    case "train": train = value; recipe.Train = Data(value, "data.train"); break;
                    case "val": val = value; recipe.Validation = Data(value, "data.val"); break;
                    case "test": recipe.Tests = [.. Items(value, "data.test").Select(n => Data(n, "data.test"))]; break;
                    default: throw Error(entry, $"data.{key}", "unknown key; data has train, val and test (one set or a list)");
                }
            }

            if (train is not null && !needsTrain)
            {
                throw Error(train, "data.train", $"a {recipe.Name} recipe trains nothing on data.train ({(recipe.Kind == RecipeKind.LearnedSoup ? "a learned soup trains its weights on data.val" : "give val and test to score the merge")})");
            }

            if (needsTrain && train is null)
            {
                throw Error(keyNode, "data.train", $"missing: a {recipe.Name} recipe fine-tunes on data.train");
            }

            if (needsVal && val is null)
            {
                throw Error(keyNode, "data.val", $"missing: a {recipe.Name} recipe {(needsTrain ? "selects and reports" : "trains its weights")} on data.val");
            }
        }

        /// <summary>Fine-tuning settings under <paramref name="name"/> (finetune, target_finetune, contributors[i].finetune) over <paramref name="training"/>.</summary>
        private TargetTraining ReadTraining(YamlNode node, string name, TargetTraining training)
        {
            foreach (var (keyNode, value) in Mapping(node, name, "a mapping of fine-tuning settings").Children)
            {
                var key = Text(keyNode, $"{name} key");
                var where = $"{name}.{key}";
                training = key switch
                {
                    "epochs" => training with { Epochs = Int(value, where, 1) },
                    "lr" => training with { LearningRate = Positive(value, where) },
                    "weight_decay" => training with { WeightDecay = Number(value, where, 0) },
                    "batch_size" => training with { BatchSize = Int(value, where, 1) },
                    "optimizer" => training with { Optimizer = Choice(value, where, new Dictionary<string, OptimizerKind> { ["sgd"] = OptimizerKind.Sgd, ["adam"] = OptimizerKind.Adam, ["adamw"] = OptimizerKind.AdamW }) },
                    "batchnorm" => training with { BatchNorm = Choice(value, where, new Dictionary<string, BatchNormMode> { ["train"] = BatchNormMode.Train, ["frozen"] = BatchNormMode.Frozen }) },
                    "at" => training with { FeatureAt = Text(value, where) },
                    "average_epochs" => training with { AverageEpochs = Int(value, where, 1) },
                    "max_steps" => training with { MaxSteps = Int(value, where, 1) },
                    _ => throw Error(keyNode, where, $"unknown key; {name} has epochs, lr, optimizer, weight_decay, batch_size, batchnorm, at, average_epochs, max_steps"),
                };
            }

            return training;
        }

        /// <summary>contributors: a list of mappings with name, train, optional val and finetune (its keys over the recipe's finetune:); names unique.</summary>
        private List<ColdFusionContributor> ReadContributors(YamlNode node, TargetTraining shared)
        {
            var contributors = new List<ColdFusionContributor>();
            var list = node as YamlSequenceNode ?? throw Error(node, "contributors", "a list of contributors (- name: TASK, train: DATA, val: DATA)");
            for (var i = 0; i < list.Children.Count; i++)
            {
                var where = $"contributors[{i}]";
                var entry = Mapping(list.Children[i], where, "a contributor: a mapping with name, train, and optionally val and finetune");
                string? name = null, train = null, val = null;
                TargetTraining? training = null;
                foreach (var (keyNode, value) in entry.Children)
                {
                    var key = Text(keyNode, $"{where} key");
                    switch (key)
                    {
                        case "name": name = Text(value, $"{where}.name"); break;
                        case "train": train = Data(value, $"{where}.train"); break;
                        case "val": val = Data(value, $"{where}.val"); break;
                        case "finetune": training = ReadTraining(value, $"{where}.finetune", shared); break;
                        default: throw Error(keyNode, $"{where}.{key}", "unknown key; a contributor has name, train, val, finetune");
                    }
                }

                if (name is null || train is null)
                {
                    throw Error(entry, where, $"missing: a contributor needs {(name is null ? "name" : "train")}");
                }

                if (contributors.Any(c => c.Name == name))
                {
                    throw Error(entry, $"{where}.name", $"{MessageText.Path(name)} names two contributors");
                }

                contributors.Add(new ColdFusionContributor { Name = name, Train = train, Validation = val, Training = training });
            }

            return contributors.Count >= 2 ? contributors : throw Error(node, "contributors", $"at least 2 contributors (got {contributors.Count})");
        }

        private RatatouilleOptions ReadRatatouille(YamlNode node, RatatouilleOptions settings)
        {
            foreach (var (keyNode, value) in Mapping(node, "ratatouille", "a mapping with runs, lr_spread, weight_decays, probe_steps, probe_lr, probe_batch_size").Children)
            {
                var key = Text(keyNode, "ratatouille key");
                var where = $"ratatouille.{key}";
                settings = key switch
                {
                    "runs" => settings with { Runs = Int(value, where, 2) },
                    "lr_spread" => settings with { LearningRateSpread = Number(value, where, 1) },
                    "weight_decays" => settings with { WeightDecays = [.. Items(value, where).Select(n => Number(n, where, 0))] },
                    "probe_steps" => settings with { ProbeSteps = Int(value, where, 0) },
                    "probe_lr" => settings with { ProbeLearningRate = Positive(value, where) },
                    "probe_batch_size" => settings with { ProbeBatchSize = Int(value, where, 1) },
                    _ => throw Error(keyNode, where, "unknown key; ratatouille has runs, lr_spread, weight_decays, probe_steps, probe_lr, probe_batch_size"),
                };
            }

            return settings;
        }

        private LearnedSoupSettings ReadLearnedSoup(YamlNode node, LearnedSoupSettings settings)
        {
            foreach (var (keyNode, value) in Mapping(node, "learned_soup", "a mapping with epochs, lr, by_layer, batch_size").Children)
            {
                var key = Text(keyNode, "learned_soup key");
                var where = $"learned_soup.{key}";
                settings = key switch
                {
                    "epochs" => settings with { Epochs = Int(value, where, 1) },
                    "lr" => settings with { LearningRate = Positive(value, where) },
                    "by_layer" => settings with { ByLayer = Choice(value, where, new Dictionary<string, bool> { ["true"] = true, ["false"] = false }) },
                    "batch_size" => settings with { BatchSize = Int(value, where, 1) },
                    _ => throw Error(keyNode, where, "unknown key; learned_soup has epochs, lr, by_layer, batch_size"),
                };
            }

            return settings;
        }

        private List<int> ReadSeeds(YamlNode node, int atLeast)
        {
            List<int> seeds = node is YamlScalarNode
                ? [.. Enumerable.Range(0, Int(node, "seeds", atLeast))]
                : [.. Items(node, "seeds").Select(n => Int(n, "seeds", 0))];
            if (seeds.Count < atLeast)
            {
                throw Error(node, "seeds", $"at least {atLeast} seeds (a count N for 0..N-1, or a list)");
            }

            if (seeds.Distinct().Count() != seeds.Count)
            {
                throw Error(node, "seeds", "a seed is listed twice (the same seed is the same run)");
            }

            return seeds;
        }

        private List<string> Names(YamlNode node, string key, string[] allowed)
        {
            var names = new List<string>();
            foreach (var item in Items(node, key))
            {
                var name = Text(item, key);
                if (!allowed.Contains(name))
                {
                    throw Error(item, key, $"{MessageText.Path(name)} is not one of {string.Join(", ", allowed)}");
                }

                names.Add(name);
            }

            return names;
        }

        private string Model(YamlNode node, string key)
        {
            var models = Resolve(node, key);
            return models.Count == 1 ? models[0] : throw Error(node, key, $"one model, but the pattern matches {models.Count}");
        }

        private List<string> ModelList(YamlNode node, string key, int atLeast)
        {
            var models = Items(node, key).SelectMany(item => Resolve(item, key)).ToList();
            if (models.Count < atLeast)
            {
                throw Error(node, key, $"at least {atLeast} models (got {models.Count})");
            }

            if (models.Distinct().Count() != models.Count)
            {
                throw Error(node, key, "a model is listed twice");
            }

            return models;
        }

        /// <summary>The ONNX files a path (relative to the recipe file; * and ? allowed in its file name) names.</summary>
        private List<string> Resolve(YamlNode node, string key)
        {
            var reference = Text(node, key);
            var full = FullPath(node, key, reference);
            var name = System.IO.Path.GetFileName(full);
            if (name.Contains('*', StringComparison.Ordinal) || name.Contains('?', StringComparison.Ordinal))
            {
                var folder = System.IO.Path.GetDirectoryName(full)!;
                var matches = Directory.Exists(folder) ? Directory.GetFiles(folder, name).Order(StringComparer.Ordinal).ToList() : [];
                return matches.Count > 0 ? matches : throw Error(node, key, $"{MessageText.Path(reference)} matches no file (paths are relative to the recipe file)");
            }

            if (Directory.Exists(full))
            {
                throw Error(node, key, $"{MessageText.Path(reference)} is a folder: give the .onnx file");
            }

            return File.Exists(full) ? [full] : throw Error(node, key, $"{MessageText.Path(reference)} not found (paths are relative to the recipe file)");
        }

        private string Data(YamlNode node, string key)
        {
            var reference = Text(node, key);
            var full = FullPath(node, key, reference);
            return DatasetLoader.Files(full).Any(File.Exists)
                ? full
                : throw Error(node, key, $"{MessageText.Path(reference)}: no data found (a split prefix such as data/val with data/val_images.npy[.gz], an .npz, or a .csv file; paths are relative to the recipe file)");
        }

        private string FullPath(YamlNode node, string key, string reference)
        {
            if (reference.Length == 0)
            {
                throw Error(node, key, "a path is empty");
            }

            try
            {
                return System.IO.Path.GetFullPath(System.IO.Path.Combine(_directory, reference));
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
            {
                throw Error(node, key, $"{MessageText.Path(reference)} is not a valid path");
            }
        }

        /// <summary>A list's items, or one scalar as a list of one.</summary>
        private IReadOnlyList<YamlNode> Items(YamlNode node, string key) => node switch
        {
            YamlSequenceNode { Children.Count: > 0 } sequence => [.. sequence.Children],
            YamlScalarNode scalar when !IsNull(scalar) => [scalar],
            _ => throw Error(node, key, "a value or a non-empty list of values"),
        };

        private YamlMappingNode Mapping(YamlNode node, string key, string what) =>
            node as YamlMappingNode ?? throw Error(node, key, what);

        private int Int(YamlNode node, string key, int min)
        {
            var text = Text(node, key);
            if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value))
            {
                throw Error(node, key, $"{MessageText.Path(text)} is not a whole number");
            }

            return value >= min ? value : throw Error(node, key, string.Create(CultureInfo.InvariantCulture, $"{value} is below the minimum {min}"));
        }

        private double Number(YamlNode node, string key, double min)
        {
            var text = Text(node, key);
            if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || !double.IsFinite(value))
            {
                throw Error(node, key, $"{MessageText.Path(text)} is not a number");
            }

            return value >= min ? value : throw Error(node, key, string.Create(CultureInfo.InvariantCulture, $"{text} is below the minimum {min}"));
        }

        private double Positive(YamlNode node, string key)
        {
            var value = Number(node, key, 0);
            return value > 0 ? value : throw Error(node, key, "must be above 0");
        }

        private T Choice<T>(YamlNode node, string key, Dictionary<string, T> choices)
        {
            var text = Text(node, key);
            return choices.TryGetValue(text.ToLowerInvariant(), out var value) ? value : throw Error(node, key, $"{MessageText.Path(text)} is not one of {string.Join(", ", choices.Keys)}");
        }

        private string Text(YamlNode node, string key) =>
            node is YamlScalarNode { Value: { } value } scalar && !IsNull(scalar)
                ? value
                : throw Error(node, key, node is YamlScalarNode ? "a value is missing" : "a single value is expected here");

        private static bool IsNull(YamlScalarNode scalar) =>
            scalar.Style == ScalarStyle.Plain && scalar.Value is null or "" or "~" or "null" or "Null" or "NULL";
    }
}
