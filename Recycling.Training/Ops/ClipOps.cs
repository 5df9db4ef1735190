
namespace Recycling.Training.Ops;

/// <summary>Clip: bounds as attributes up to opset 10, as optional inputs from 11.</summary>
internal static class ClipOps
{
    public static IEnumerable<OpSpec> Specs()
    {
        yield return new OpSpec("", "Clip", 6, a =>
        {
            double min = a.Float("min", float.MinValue), max = a.Float("max", float.MaxValue);
            return (_, i) => [i[0]!.Clamped(min, max)];
        });
        yield return new OpSpec("", "Clip", 11, _ => (_, i) =>
        {
            var x = i[0]!;
            var min = i.Length > 1 && i[1] is { } lo ? OpHelpers.Scalar(lo) : (double?)null;
            var max = i.Length > 2 && i[2] is { } hi ? OpHelpers.Scalar(hi) : (double?)null;
            return [x.Clamped(min, max)];
        }, OpSpec.ConstantFrom(1));
    }
}
