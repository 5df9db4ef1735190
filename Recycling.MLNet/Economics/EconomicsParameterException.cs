using Recycling.Onnx;

namespace Recycling.MLNet.Economics;

/// <summary>A parameter of an economics model outside its domain: names the parameter, the value and the rule.</summary>
public sealed class EconomicsParameterException : RecyclingException
{
    public EconomicsParameterException(string parameter, double value, string rule)
        : base($"{parameter} = {Format(value)}: {rule}")
    {
        Parameter = parameter;
        Value = value;
    }

    public string Parameter { get; }

    public double Value { get; }

    private static string Format(double value) =>
        value.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
}
