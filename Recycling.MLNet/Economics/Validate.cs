namespace Recycling.MLNet.Economics;

/// <summary>The domains of the economics parameters, each checked with a message a user can act on.</summary>
internal static class Validate
{
    public static void Finite(string name, double value)
    {
        if (!double.IsFinite(value))
        {
            throw new EconomicsParameterException(name, value, "must be a finite number");
        }
    }

    public static void Positive(string name, double value)
    {
        Finite(name, value);
        if (value <= 0)
        {
            throw new EconomicsParameterException(name, value, "must be greater than 0");
        }
    }

    public static void GrowthRate(string name, double value)
    {
        Finite(name, value);
        if (value <= 0)
        {
            throw new EconomicsParameterException(name, value,
                "a yearly growth factor must be greater than 0 (1 = no growth, 4.2 = 4.2x a year)");
        }
    }

    public static void Fraction(string name, double value)
    {
        Finite(name, value);
        if (value is < 0 or > 1)
        {
            throw new EconomicsParameterException(name, value, "a reuse efficiency must lie in [0, 1]");
        }
    }

    public static void Years(int years)
    {
        if (years is < 0 or > RecyclingEconomics.MaxIterations)
        {
            throw new EconomicsParameterException("years", years,
                $"the number of years must lie in [0, {RecyclingEconomics.MaxIterations}]");
        }
    }

    public static void Iterations(int iterations)
    {
        if (iterations is < 1 or > RecyclingEconomics.MaxIterations)
        {
            throw new EconomicsParameterException("years", iterations,
                $"the number of yearly iterations must lie in [1, {RecyclingEconomics.MaxIterations}]");
        }
    }
}
