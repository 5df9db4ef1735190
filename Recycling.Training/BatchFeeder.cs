using Recycling.MLNet.Data;
using Recycling.Onnx;
using Recycling.Training.Ops;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>
/// Turns samples of a <see cref="Dataset"/> into a model's inputs on the program's device, fed by name: the single float input of a model,
/// shaped as the model declares it, or the token inputs of a text model (input_ids, attention_mask, token_type_ids,
/// from <see cref="TextDataset"/>'s samples, cut to the longest sample of the batch).
/// </summary>
internal sealed class BatchFeeder
{
    private readonly string _input;
    private readonly long[] _sampleShape;
    private readonly ImagePreprocessing? _preprocessing;
    private readonly IReadOnlyList<(string Name, int Row, ScalarType Type)> _tokenInputs;
    private readonly Device _device;

    private BatchFeeder(string input, long[] sampleShape, ImagePreprocessing? preprocessing, IReadOnlyList<(string Name, int Row, ScalarType Type)> tokenInputs, Device device)
    {
        _device = device;
        _input = input;
        _sampleShape = sampleShape;
        _preprocessing = preprocessing;
        _tokenInputs = tokenInputs;
    }

    /// <summary>The element type of the float input (samples, read as float32, are cast to it: rounded to nearest even when narrower).</summary>
    public ScalarType InputType { get; private init; } = ScalarType.Float32;

    /// <summary>Whether this feeds token inputs (from text data).</summary>
    public bool FeedsTokens => _tokenInputs.Count > 0;

    /// <summary>A text model: one that takes integer inputs (token ids).</summary>
    public static bool TakesTokens(OnnxProgram program) => program.Inputs.Any(i => i.Type is ScalarType.Int64 or ScalarType.Int32);

    /// <param name="preprocessing">Applied to every sample as it is batched (the data keep their own shape).</param>
    public static BatchFeeder For(OnnxProgram program, string modelPath, Dataset data, ImagePreprocessing? preprocessing = null)
    {
        if (TakesTokens(program))
        {
            return preprocessing is null ? ForTokens(program, modelPath, data)
                : throw new RecyclingException($"{modelPath}: a text model (inputs {string.Join(", ", program.Inputs.Select(i => i.Name))}); image preprocessing (--resize, --channels, --normalize) does not apply");
        }

        if (program.Inputs.Count != 1)
        {
            throw new RecyclingException($"{modelPath}: {program.Inputs.Count} graph inputs ({string.Join(", ", program.Inputs.Select(i => i.Name))}); labelled numeric data feed one float input, so '{program.Inputs[1].Name}' cannot be fed");
        }

        var input = program.Inputs[0];
        if (input.Type is not (ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16))
        {
            throw new RecyclingException($"{modelPath}: input '{input.Name}' is {input.Type}; labelled datasets feed float inputs (float32, float64, float16, bfloat16)");
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

        return new BatchFeeder(input.Name, shape, preprocessing, [], program.Device) { InputType = input.Type };
    }

    private static BatchFeeder ForTokens(OnnxProgram program, string modelPath, Dataset data)
    {
        if (!TokenizedText.Holds(data))
        {
            throw new RecyclingException($"{modelPath}: a text model (inputs {string.Join(", ", program.Inputs.Select(i => i.Name))}) needs text data, not {data.Name}");
        }

        var fed = new List<(string, int, ScalarType)>();
        foreach (var input in program.Inputs)
        {
            var row = TokenizedText.RowOf(input.Name) ?? -1;
            if (row < 0 || input.Type is not (ScalarType.Int64 or ScalarType.Int32))
            {
                throw new RecyclingException($"{modelPath}: input '{input.Name}' ({input.Type}, shape [{string.Join(",", input.Shape)}]) cannot be fed from text data, which feeds int64 input_ids, attention_mask and token_type_ids");
            }

            if (input.Shape.Length != 2)
            {
                throw new RecyclingException($"{modelPath}: input '{input.Name}' has shape [{string.Join(",", input.Shape)}]; text data feed [batch, sequence]");
            }

            fed.Add((input.Name, row, input.Type));
        }

        if (!fed.Any(f => f.Item2 == TextDataset.Ids))
        {
            throw new RecyclingException($"{modelPath}: no input 'input_ids' (inputs {string.Join(", ", program.Inputs.Select(i => i.Name))}); text data feed token ids there");
        }

        return new BatchFeeder("", [], null, fed, program.Device);
    }

    public Batch Batch(Dataset data, int[] indices)
    {
        if (_tokenInputs.Count > 0)
        {
            return TokenBatch(data, indices);
        }

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

        var feed = tensor(values, [indices.Length, .. _sampleShape], device: _device);
        if (InputType != ScalarType.Float32)
        {
            using var single = feed;
            feed = single.to(InputType);
        }

        var feeds = new Dictionary<string, Tensor> { [_input] = feed };
        return new Batch(feeds, tensor(labels, device: _device));
    }

    private Batch TokenBatch(Dataset data, int[] indices)
    {
        var width = data.SampleShape[1];
        var length = indices.Select(i => TokenizedText.Length(data, i)).DefaultIfEmpty(1).Max();

        var labels = new long[indices.Length];
        var feeds = new Dictionary<string, Tensor>();
        foreach (var (name, row, type) in _tokenInputs)
        {
            var values = new long[indices.Length * length];
            for (var k = 0; k < indices.Length; k++)
            {
                var source = data.Sample(indices[k]).Slice((row * width) + 0, length);
                for (var t = 0; t < length; t++)
                {
                    values[(k * length) + t] = (long)source[t];
                }

                labels[k] = data.Labels[indices[k]];
            }

            var feed = tensor(values, [indices.Length, length], device: _device);
            if (type != ScalarType.Int64)
            {
                using var wide = feed;
                feed = wide.to(type);
            }

            feeds[name] = feed;
        }

        return new Batch(feeds, tensor(labels, device: _device));
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
