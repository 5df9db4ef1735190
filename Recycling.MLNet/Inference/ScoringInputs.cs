using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Recycling.MLNet.Data;
using Recycling.Onnx;

namespace Recycling.MLNet.Inference;

/// <summary>
/// What a scored model is fed from a <see cref="Dataset"/>, by name: its one float input (samples reshaped to the
/// declared sample shape), or, for a text model whose inputs are all integers, each token input
/// (input_ids, attention_mask, token_type_ids, as the model declares them) from <see cref="TokenizedText"/> rows, in
/// the declared element type, padded to the longest sample of the batch (or to a declared sequence length).
/// </summary>
internal sealed class ScoringInputs
{
    private readonly string _model;
    private readonly string _floatInput;
    private readonly long[] _floatShape;
    private readonly (string Name, int Row, TensorElementType Type, long Sequence)[] _tokens;

    private ScoringInputs(string model, string floatInput, long[] floatShape, (string, int, TensorElementType, long)[] tokens)
    {
        _model = model;
        _floatInput = floatInput;
        _floatShape = floatShape;
        _tokens = tokens;
    }

    /// <summary>The input reported as the model's (the float input, or input_ids).</summary>
    public string PrimaryName => _tokens.Length > 0 ? _tokens.First(t => t.Row == TokenizedText.Ids).Name : _floatInput;

    public bool FeedsTokens => _tokens.Length > 0;

    public static ScoringInputs For(IReadOnlyDictionary<string, NodeMetadata> inputs, string model)
    {
        static bool IsInteger(NodeMetadata m) => m.ElementDataType is TensorElementType.Int64 or TensorElementType.Int32;
        if (inputs.Count > 0 && inputs.Values.All(IsInteger))
        {
            var tokens = new List<(string, int, TensorElementType, long)>();
            foreach (var (name, meta) in inputs)
            {
                var row = TokenizedText.RowOf(name) ?? throw new RecyclingException(
                    $"{MessageText.Path(model)}: input '{MessageText.OneLine(name)}' ({meta.ElementDataType}) cannot be fed from text data, which feeds input_ids, attention_mask and token_type_ids");
                if (meta.Dimensions.Length != 2)
                {
                    throw new RecyclingException($"{MessageText.Path(model)}: input '{name}' has shape [{string.Join(",", meta.Dimensions)}]; text data feed [batch, sequence]");
                }

                tokens.Add((name, row, meta.ElementDataType, Math.Max(meta.Dimensions[1], 0)));
            }

            if (!tokens.Any(t => t.Item2 == TokenizedText.Ids))
            {
                throw new RecyclingException($"{MessageText.Path(model)}: no input 'input_ids' (inputs {string.Join(", ", inputs.Keys)}); text data feed token ids there");
            }

            return new ScoringInputs(model, "", [], [.. tokens]);
        }

        if (inputs.Count != 1)
        {
            throw new RecyclingException($"{MessageText.Path(model)}: the model has {inputs.Count} inputs ({string.Join(", ", inputs.Select(i => $"{i.Key} {i.Value.ElementDataType}"))}); scoring feeds one float input, or the integer token inputs of a text model");
        }

        var (input, metadata) = inputs.First();
        if (metadata.ElementDataType != TensorElementType.Float)
        {
            throw new RecyclingException($"{MessageText.Path(model)}: input '{input}' is {metadata.ElementDataType}; scoring feeds float32 inputs");
        }

        return new ScoringInputs(model, input, [.. metadata.Dimensions.Select(d => (long)d)], []);
    }

    /// <summary>The shape each sample of <paramref name="data"/> is fed with (float inputs); checks text data for a text model.</summary>
    public long[] SampleShape(Dataset data)
    {
        if (FeedsTokens)
        {
            if (!TokenizedText.Holds(data))
            {
                throw new RecyclingException(
                    $"{MessageText.Path(_model)}: a text model (inputs {string.Join(", ", _tokens.Select(t => t.Name))}) needs text data (a .csv, .tsv or .jsonl file tokenised with its vocabulary), not {MessageText.Path(data.Name)} with samples of [{string.Join(",", data.SampleShape)}]");
            }

            var sequence = _tokens.Max(t => t.Sequence);
            if (sequence > 0)
            {
                for (var i = 0; i < data.Count; i++)
                {
                    if (TokenizedText.Length(data, i) > sequence)
                    {
                        throw new RecyclingException($"{MessageText.Path(data.Name)}: sample {i} has {TokenizedText.Length(data, i)} tokens; {MessageText.Path(_model)} takes sequences of {sequence} (use --max-length {sequence})");
                    }
                }
            }

            return [];
        }

        var modelSample = _floatShape.Skip(1).ToArray();
        if (modelSample.All(d => d > 0))
        {
            long size = modelSample.Aggregate(1L, (a, d) => Math.Min(a * Math.Min(d, 1L << 31), 1L << 31)); // saturates: no overflow
            if (size != data.SampleSize)
            {
                throw new RecyclingException(
                    $"{_model}: input '{_floatInput}' takes samples of [{string.Join(",", modelSample)}] ({size} values); {data.Name} has samples of [{string.Join(",", data.SampleShape)}] ({data.SampleSize} values){(TokenizedText.Holds(data) ? "" : "; --resize HxW, --channels N and --normalize preprocess images")}");
            }

            return modelSample;
        }

        if (modelSample.Length != data.SampleShape.Count)
        {
            throw new RecyclingException(
                $"{_model}: input '{_floatInput}' has shape [{string.Join(",", _floatShape)}]; {data.Name} has samples of [{string.Join(",", data.SampleShape)}]");
        }

        return [.. data.SampleShape.Select(d => (long)d)];
    }

    /// <summary>Tokens fed per sample for rows [start, start + count): the longest of them, or the declared sequence length.</summary>
    public int TokenLength(Dataset data, int start, int count)
    {
        var sequence = _tokens.Max(t => t.Sequence);
        return sequence > 0 ? (int)sequence : Enumerable.Range(start, count).Select(i => TokenizedText.Length(data, i)).DefaultIfEmpty(1).Max();
    }

    /// <summary>
    /// The inputs for samples [start, start + count) of <paramref name="data"/> as a batch of <paramref name="fed"/> ≥ count
    /// rows; the rows after count repeat the first sample (a fixed batch's padding, whose results are dropped).
    /// </summary>
    /// <param name="tokenLength">Tokens per text sample (<see cref="TokenLength"/> unless the caller must match another run).</param>
    public (string[] Names, OrtValue[] Values) Feed(Dataset data, long[] sampleShape, int start, int count, int fed, int? tokenLength = null)
    {
        if (!FeedsTokens)
        {
            var values = new float[(long)fed * data.SampleSize];
            data.Values.AsSpan(start * data.SampleSize, count * data.SampleSize).CopyTo(values);
            return ([_floatInput], [OrtValue.CreateTensorValueFromMemory(values, [fed, .. sampleShape])]);
        }

        var length = tokenLength ?? TokenLength(data, start, count);
        var width = data.SampleShape[1];
        var names = new string[_tokens.Length];
        var tensors = new OrtValue[_tokens.Length];
        for (var k = 0; k < _tokens.Length; k++)
        {
            var (name, row, type, _) = _tokens[k];
            var ids = new long[(long)fed * length];
            for (var r = 0; r < fed; r++)
            {
                var source = data.Sample(start + (r < count ? r : 0)).Slice(row * width, width);
                var target = ids.AsSpan(r * length, length);
                for (var t = 0; t < Math.Min(length, width); t++)
                {
                    target[t] = (long)source[t];
                }
            }

            names[k] = name;
            tensors[k] = type == TensorElementType.Int64
                ? OrtValue.CreateTensorValueFromMemory(ids, [fed, length])
                : OrtValue.CreateTensorValueFromMemory(ids.Select(v => (int)v).ToArray(), [fed, length]);
        }

        return (names, tensors);
    }
}
