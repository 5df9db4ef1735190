using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>Turns samples of a <see cref="Dataset"/> into the single float input of a model, shaped as the model declares it.</summary>
internal sealed class BatchFeeder
{
    private readonly string _input;
    private readonly long[] _sampleShape;

    private BatchFeeder(string input, long[] sampleShape)
    {
        _input = input;
        _sampleShape = sampleShape;
    }

    public static BatchFeeder For(OnnxProgram program, string modelPath, Dataset data)
    {
        if (program.Inputs.Count != 1)
        {
            throw new RecyclingException($"{modelPath}: {program.Inputs.Count} graph inputs ({string.Join(", ", program.Inputs.Select(i => i.Name))}); labelled datasets feed models with one float input");
        }

        var input = program.Inputs[0];
        if (input.Type != ScalarType.Float32)
        {
            throw new RecyclingException($"{modelPath}: input '{input.Name}' is {input.Type}; labelled datasets feed float32 inputs");
        }

        // The model's own sample shape when it is fully known and matches the data's size, else the data's.
        var declared = input.Shape.Skip(1).ToArray();
        var shape = input.Shape.Length > 1 && declared.All(d => d > 0) && declared.Aggregate(1L, (p, d) => p * d) == data.SampleSize
            ? declared
            : [.. data.SampleShape.Select(d => (long)d)];
        if (input.Shape.Length > 0 && input.Shape.Length != shape.Length + 1)
        {
            throw new RecyclingException($"{modelPath}: input '{input.Name}' has shape [{string.Join(",", input.Shape)}], samples of {data.Name} have {data.SampleSize} values of shape [{string.Join(",", data.SampleShape)}]");
        }

        return new BatchFeeder(input.Name, shape);
    }

    public Batch Batch(Dataset data, int[] indices)
    {
        var values = new float[indices.Length * data.SampleSize];
        var labels = new long[indices.Length];
        for (var k = 0; k < indices.Length; k++)
        {
            data.Sample(indices[k]).CopyTo(values.AsSpan(k * data.SampleSize, data.SampleSize));
            labels[k] = data.Labels[indices[k]];
        }

        var feeds = new Dictionary<string, Tensor> { [_input] = tensor(values, [indices.Length, .. _sampleShape]) };
        return new Batch(feeds, tensor(labels));
    }

    /// <summary>Every label must name a class of <paramref name="output"/>: checked on one sample before training.</summary>
    public void CheckLabels(OnnxProgram program, string output, Dataset train, Dataset? validation)
    {
        if (train.Count == 0)
        {
            throw new RecyclingException($"{train.Name}: no samples");
        }

        long classes;
        using (var batch = Batch(train, [0]))
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            classes = program.Forward(batch.Feeds, new OpContext(), [output])[output].numel();
        }

        foreach (var data in new[] { train, validation }.OfType<Dataset>())
        {
            if (data.Count > 0 && data.Labels.Max() >= classes)
            {
                throw new RecyclingException($"{data.Name}: labels go up to {data.Labels.Max()} but output '{output}' has {classes} classes");
            }
        }
    }
}
