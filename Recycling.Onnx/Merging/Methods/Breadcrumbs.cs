namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// Model Breadcrumbs (Davari &amp; Belilovsky 2023; mergekit's <c>breadcrumbs</c>): each task vector loses its ⌊γ·n⌋
/// largest and its smallest entries, keeping ⌊d·n⌋, then task arithmetic. See docs/merge-methods.md.
/// </summary>
internal sealed class Breadcrumbs : TaskArithmeticFamily
{
    /// <summary>mergekit's <c>gamma</c>: the fraction of largest entries dropped as outliers.</summary>
    internal static readonly MethodParameter Gamma = new("gamma", 0.01, "fraction of each task vector's largest entries dropped")
    {
        PerModel = true, Min = 0, Max = 1,
    };

    public override string Name => "breadcrumbs";

    public override string Formula => "θ0 + λ Σ wᵢ·crumbs(τᵢ): drop the gamma largest and the smallest |τ|, keep density";

    public override Sparsification Sparsification => Sparsification.Outliers;

    public override Combine.Consensus Consensus => Combine.Consensus.None;

    public override bool DefaultNormalize => false;

    protected override IEnumerable<MethodParameter> ExtraParameters => [Gamma];

    /// <summary>
    /// The sparsifier over one whole task vector, the rule the streamed one (<see cref="OutlierCuts"/>, on the chunked
    /// path) must equal bit for bit; the tests' reference.
    /// </summary>
    internal static void Crumbs(Span<float> tau, int model, MethodArguments arguments)
    {
        double density = arguments.Get("density", model);
        if (density >= 1)
        {
            return;
        }

        float[] original = tau.ToArray();
        var keep = MergekitMasks.Outliers(original, density, arguments.Get("gamma", model));
        for (int e = 0; e < tau.Length; e++)
        {
            tau[e] = keep[e] ? tau[e] : 0;
        }

        Sparsify.Rescale(original, tau, density, arguments["rescale"]);
    }
}
