using System.Text.Json;
using Recycling.MLNet.Data;
using Recycling.MLNet.Evaluation;
using Recycling.MLNet.Inference;
using Recycling.Onnx;

namespace Recycling.MLNet.Certificates;

/// <summary>
/// A data set used as a test certificate: the model must reach <see cref="MinAccuracy"/> on it, and must not lose more
/// than <see cref="MaxForgetting"/> points against any ingredient (the models it was merged from).
/// </summary>
public sealed record Certificate(string Name, string Data, double? MinAccuracy, double? MaxForgetting, string? LabelColumn = null);

/// <summary>The forgetting of the certified model against one ingredient on one certificate: ingredient accuracy − model accuracy.</summary>
public sealed record ForgettingCheck(string Ingredient, double IngredientAccuracy, double Forgetting, bool Passed);

public sealed record CertificateResult(Certificate Certificate, int Samples, double Accuracy, IReadOnlyList<ForgettingCheck> Forgetting, IReadOnlyList<string> Failures)
{
    public bool Passed => Failures.Count == 0;
}

/// <summary>A certificate file: certificates and (optionally) the ingredients forgetting is measured against.</summary>
public sealed record CertificateSet(IReadOnlyList<Certificate> Certificates, IReadOnlyList<string> Ingredients)
{
    /// <summary>
    /// Reads a JSON file such as
    /// {"ingredients": ["ft1.onnx", "ft2.onnx"], "certificates": [{"name": "in-domain", "data": "data/val", "minAccuracy": 85, "maxForgetting": 1.0}]};
    /// relative paths are resolved against the file's folder.
    /// </summary>
    public static CertificateSet Load(string path)
    {
        var full = Path.GetFullPath(path);
        if (!File.Exists(full))
        {
            throw new RecyclingException($"{full}: no such certificate file");
        }

        var folder = Path.GetDirectoryName(full)!;
        string Resolve(string p) => Path.IsPathRooted(p) ? p : Path.GetFullPath(Path.Combine(folder, p));
        try
        {
            Recycling.Onnx.IO.InputFile.RequireRegular(full);
            using var document = JsonDocument.Parse(File.ReadAllBytes(full));
            var root = document.RootElement;
            var ingredients = root.TryGetProperty("ingredients", out var list) ? list.EnumerateArray().Select(e => Resolve(e.GetString()!)).ToList() : [];
            var certificates = root.GetProperty("certificates").EnumerateArray().Select(c => new Certificate(
                c.GetProperty("name").GetString()!,
                Resolve(c.GetProperty("data").GetString()!),
                c.TryGetProperty("minAccuracy", out var min) ? min.GetDouble() : null,
                c.TryGetProperty("maxForgetting", out var max) ? max.GetDouble() : null,
                c.TryGetProperty("labelColumn", out var label) ? label.GetString() : null)).ToList();
            if (certificates.Count == 0)
            {
                throw new RecyclingException($"{full}: no certificates listed");
            }

            if (certificates.Any(c => c.MaxForgetting is not null) && ingredients.Count == 0)
            {
                throw new RecyclingException($"{full}: maxForgetting needs the ingredients the model was merged from (\"ingredients\": [...])");
            }

            return new CertificateSet(certificates, ingredients);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new RecyclingException($"{full}: not a certificate file ({e.Message}); expected {{\"ingredients\": [...], \"certificates\": [{{\"name\", \"data\", \"minAccuracy\", \"maxForgetting\"}}]}}", e);
        }
    }
}

/// <summary>Runs a model (and its ingredients) on each certificate data set and checks the thresholds.</summary>
public static class Certifier
{
    public static IReadOnlyList<CertificateResult> Run(string model, CertificateSet set, ScoringOptions? scoring = null, string output = "logits")
    {
        ArgumentNullException.ThrowIfNull(set);
        using var scorer = OnnxScorer.Open(model, scoring);
        var ingredients = set.Ingredients.Select(i => OnnxScorer.Open(i, scoring)).ToList();
        try
        {
            var results = new List<CertificateResult>();
            foreach (var certificate in set.Certificates)
            {
                var data = DatasetLoader.Load(certificate.Data, new TextColumns { Label = certificate.LabelColumn });
                var accuracy = ClassificationMetrics.FromLogits(scorer.Run(data, output), data).Accuracy;
                var failures = new List<string>();
                if (certificate.MinAccuracy is { } min && accuracy < min)
                {
                    failures.Add($"accuracy {accuracy:F2} < minimum {min:F2}");
                }

                var forgetting = new List<ForgettingCheck>();
                if (certificate.MaxForgetting is { } max)
                {
                    foreach (var ingredient in ingredients)
                    {
                        var own = ClassificationMetrics.FromLogits(ingredient.Run(data, output), data).Accuracy;
                        bool ok = own - accuracy <= max;
                        forgetting.Add(new ForgettingCheck(Path.GetFileName(ingredient.Name), own, own - accuracy, ok));
                        if (!ok)
                        {
                            failures.Add($"forgets {own - accuracy:F2} points against {Path.GetFileName(ingredient.Name)} (maximum {max:F2})");
                        }
                    }
                }

                results.Add(new CertificateResult(certificate, data.Count, accuracy, forgetting, failures));
            }

            return results;
        }
        finally
        {
            ingredients.ForEach(i => i.Dispose());
        }
    }
}
