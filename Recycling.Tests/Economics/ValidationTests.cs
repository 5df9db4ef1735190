using Recycling.MLNet.Economics;
using Recycling.Onnx;

namespace Recycling.Tests.Economics;

[TestClass]
public sealed class ValidationTests
{
    private static void AssertRejected(Action call, string parameter, string valueText)
    {
        var error = Assert.ThrowsExactly<EconomicsParameterException>(call);
        Assert.AreEqual(parameter, error.Parameter);
        Assert.IsInstanceOfType<RecyclingException>(error);
        StringAssert.StartsWith(error.Message, $"{parameter} = {valueText}: ");
    }

    [TestMethod]
    [DataRow(-0.1, "-0.1")]
    [DataRow(1.1, "1.1")]
    [DataRow(double.NaN, "NaN")]
    public void AlphaOutsideUnitIntervalIsRejected(double alpha, string text)
    {
        AssertRejected(() => RecyclingEconomics.Kickstart(4.2, alpha, 10), "alpha", text);
        AssertRejected(() => RecyclingEconomics.KickstartLimit(4.2, alpha), "alpha", text);
    }

    [TestMethod]
    [DataRow(0.0, "0")]
    [DataRow(-1.0, "-1")]
    [DataRow(double.PositiveInfinity, "Infinity")]
    public void NonPositiveGrowthIsRejected(double r, string text)
    {
        AssertRejected(() => RecyclingEconomics.GrowthOnlyAdvantage(r), "r", text);
        AssertRejected(() => RecyclingEconomics.Kickstart(r, 0.5, 10), "r", text);
        AssertRejected(() => RecyclingEconomics.Augment(r, 2, 0.5, 10), "r", text);
        AssertRejected(() => RecyclingEconomics.AugmentationBreakEven(2, r, 0.5, 10), "g", text);
    }

    [TestMethod]
    public void BetaOutsideUnitIntervalIsRejected()
    {
        AssertRejected(() => RecyclingEconomics.Augment(4.2, 2.5, 1.5, 10), "beta", "1.5");
        AssertRejected(() => RecyclingEconomics.AugmentationLimit(4.2, 2.5, -0.5), "beta", "-0.5");
    }

    [TestMethod]
    public void NegativeYearsAreRejected()
    {
        AssertRejected(() => RecyclingEconomics.GrowthOnlyAdvantage(4.2, -1), "years", "-1");
        AssertRejected(() => RecyclingEconomics.Kickstart(4.2, 0.5, 0), "years", "0");
        AssertRejected(() => RecyclingEconomics.Augment(4.2, 2.5, 0.5, -3), "years", "-3");
        AssertRejected(() => RecyclingEconomics.KickstartAlphaForBenefit(4.2, 1.2, -2), "years", "-2");
        AssertRejected(() => RecyclingEconomics.Kickstart(4.2, 0.5, RecyclingEconomics.MaxIterations + 1), "years", "1000001");
    }

    [TestMethod]
    public void OtherDomainsAreRejected()
    {
        AssertRejected(() => RecyclingEconomics.KickstartAlphaForBenefit(4.2, 0.5), "benefit", "0.5");
        AssertRejected(() => RecyclingEconomics.GrowthFromPercent(-100), "percentPerYear", "-100");
        AssertRejected(() => RecyclingEconomics.Kickstart(4.2, 0.5, 5, initialCompute: 0), "initialCompute", "0");
        AssertRejected(() => RecyclingEconomics.KickstartBenefitGrid([], [0.5], 5), "grid size", "0");
    }

    [TestMethod]
    public void MessageSaysWhatTheDomainIs()
    {
        var error = Assert.ThrowsExactly<EconomicsParameterException>(() => RecyclingEconomics.Kickstart(4.2, 1.5, 10));

        Assert.AreEqual("alpha = 1.5: a reuse efficiency must lie in [0, 1]", error.Message);
    }
}
