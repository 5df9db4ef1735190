namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// DELLA (Deep et al. 2024; mergekit's <c>della</c>): MAGPRUNE keeps each task-vector entry with a probability that
/// grows with its magnitude rank, from d − ε to d + ε, drawn from our counter-based masks; the kept entries are
/// rescaled (mergekit: to the L1 norm; <c>rescale: inverse</c>: each by 1/pₑ, as the paper), then TIES's sign
/// election and disjoint mean. See docs/merge-methods.md.
/// </summary>
internal sealed class Della : TaskArithmeticFamily
{
    /// <summary>mergekit's <c>epsilon</c>: the spread of keep probabilities around the density.</summary>
    internal static readonly MethodParameter Epsilon = new("epsilon", 0.15, "keep probabilities spread over density ± epsilon by magnitude rank")
    {
        PerModel = true, Min = 0, Max = 1,
    };

    public override string Name => "della";

    public override string Formula => "TIES over MAGPRUNE(τᵢ): keep with probability density ± epsilon by magnitude rank, rescale";

    public override Sparsification Sparsification => Sparsification.Magprune;

    public override Combine.Consensus Consensus => Combine.Consensus.Sum;

    public override bool DefaultNormalize => true;

    public override double DefaultRescale => RescaleModes.L1;

    protected override IEnumerable<MethodParameter> ExtraParameters => [Epsilon];

    public override void Validate(MethodArguments arguments, bool hasBase)
    {
        base.Validate(arguments, hasBase);
        Check(arguments);
    }

    /// <summary>mergekit refuses probabilities outside (0, 1): density ± epsilon must stay inside for 0 &lt; density &lt; 1.</summary>
    internal static void Check(MethodArguments arguments)
    {
        for (int i = 0; i < arguments.InputCount; i++)
        {
            double d = arguments.Get("density", i), e = arguments.Get("epsilon", i);
            if (d > 0 && d < 1 && !(d - e > 0 && d + e < 1))
            {
                throw new RecyclingException(FormattableString.Invariant(
                    $"{arguments.Method.Name}, model {i + 1}: density ± epsilon must stay inside (0, 1), not {d} ± {e}"));
            }
        }
    }

    /// <summary>
    /// MAGPRUNE over one whole task vector, the rule the streamed one (<see cref="FiberPrune"/>, fiber block by fiber
    /// block) must equal bit for bit; the tests' reference.
    /// </summary>
    internal static void Magprune(Span<float> tau, TensorInfo tensor, int model, MethodArguments arguments, DareMask random)
    {
        double density = arguments.Get("density", model);
        if (density >= 1)
        {
            return;
        }

        float[] original = tau.ToArray();
        var probabilities = new double[tau.Length];
        var keep = MergekitMasks.Della(original, tensor.Shape, density, arguments.Get("epsilon", model), random.KeyFor(model), probabilities);
        bool inverse = arguments["rescale"] == RescaleModes.Inverse;
        for (int e = 0; e < tau.Length; e++)
        {
            tau[e] = !keep[e] ? 0 : inverse ? (float)(tau[e] / probabilities[e]) : tau[e];
        }

        if (!inverse)
        {
            Sparsify.Rescale(original, tau, density, arguments["rescale"]);
        }
    }
}
