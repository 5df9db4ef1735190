namespace Recycling.MLNet.Data;

/// <summary>
/// Labelled samples held in memory: <see cref="Values"/> is row-major, one sample of <see cref="SampleShape"/> after
/// another, already scaled as the model expects (the zoo's uint8 images divided by 255). <see cref="Domains"/> is null
/// when the data carry no domain ids.
/// </summary>
public sealed class Dataset
{
    public Dataset(string name, float[] values, IReadOnlyList<int> sampleShape, int[] labels, int[]? domains = null)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(sampleShape);
        ArgumentNullException.ThrowIfNull(labels);
        int sampleSize = sampleShape.Aggregate(1, (a, d) => checked(a * d));
        if (sampleSize <= 0 || values.Length != (long)sampleSize * labels.Length)
        {
            throw new Onnx.RecyclingException($"{name}: {values.Length} values do not make {labels.Length} samples of shape [{string.Join(",", sampleShape)}]");
        }

        if (domains is not null && domains.Length != labels.Length)
        {
            throw new Onnx.RecyclingException($"{name}: {domains.Length} domain ids for {labels.Length} samples");
        }

        if (labels.Any(l => l < 0))
        {
            throw new Onnx.RecyclingException($"{name}: labels must be class indices 0, 1, 2...; found {labels.Min()}");
        }

        Name = name;
        Values = values;
        SampleShape = sampleShape;
        SampleSize = sampleSize;
        Labels = labels;
        Domains = domains;
    }

    /// <summary>Where the data came from (a path or split name), for messages and reports.</summary>
    public string Name { get; }

    public float[] Values { get; }

    public IReadOnlyList<int> SampleShape { get; }

    /// <summary>Values per sample (the product of <see cref="SampleShape"/>).</summary>
    public int SampleSize { get; }

    public int[] Labels { get; }

    public int[]? Domains { get; }

    public int Count => Labels.Length;

    /// <summary>Number of classes seen in the labels (largest label + 1).</summary>
    public int ClassCount => Labels.Length == 0 ? 0 : Labels.Max() + 1;

    public ReadOnlySpan<float> Sample(int index) => Values.AsSpan(index * SampleSize, SampleSize);
}
