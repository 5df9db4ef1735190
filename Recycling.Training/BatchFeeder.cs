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
    private readonly ImagePreprocessing? _preprocessing;

    private BatchFeeder(string input, long[] sampleShape, ImagePreprocessing? preprocessing)
    {
        _input = input;
        _sampleShape = sampleShape;
        _preprocessing = preprocessing;
    }

    /// <param name="preprocessing">Applied to every sample as it is batched (the data keep their own shape).</param>
    public static BatchFeeder For(OnnxProgram program, string modelPath, Dataset data, ImagePreprocessing? preprocessing = null)
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
        var sampleShape = preprocessing?.OutputShape(data.SampleShape, data.Name) ?? [.. data.SampleShape];
        var sampleSize = sampleShape.Aggregate(1L, (p, d) => p * d);
        var shape = input.Shape.Length > 1 && declared.All(d => d > 0) && declared.Aggregate(1L, (p, d) => p * d) == sampleSize
            ? declared
            : [.. sampleShape.Select(d => (long)d)];
        if (input.Shape.Length > 0 && input.Shape.Length != shape.Length + 1)
        {
            throw new RecyclingException($"{modelPath}: input '{input.Name}' has shape [{string.Join(",", input.Shape)}], samples of {data.Name} have {sampleSize} values of shape [{string.Join(",", sampleShape)}]");
        }

        return new BatchFeeder(input.Name, shape, preprocessing);
    }

    public Batch Batch(Dataset data, int[] indices)
    {
        var size = (int)_sampleShape.Aggregate(1L, (p, d) => p * d);
        var values = new float[indices.Length * size];
        var labels = new long[indices.Length];
        for (var k = 0; k < indices.Length; k++)
        {
            if (_preprocessing is null)
            {
                data.Sample(indices[k]).CopyTo(values.AsSpan(k * size, size));
            }
            else
            {
                _preprocessing.Apply(data.Sample(indices[k]), data.SampleShape, values.AsSpan(k * size, size), data.Name);
            }

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
