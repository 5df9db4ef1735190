using Recycling.Onnx.Merging.Methods;

namespace Recycling.Onnx.Merging;

/// <summary>
/// Merges one aligned parameter at a time with a <see cref="MergeOptions"/> method on an <see cref="IMergeKernels"/>:
/// the façade over the registry method's <see cref="ITensorMethod"/> (Merging/Methods/).
/// <para>How the streaming engine calls it:</para>
/// <code>
/// using IMergeKernels kernels = MergeKernels.Create(options.Device);
/// var merger = new TensorMerger(options, inputCount, kernels);
/// for (int pass = 0; merger.NeedsPrepass(pass); pass++)           // none for linear methods, 1 for Fisher, 2 to 4 for global TIES
/// {
///     foreach (var p in floatParameters)                          // any order; concurrent calls are fine
///         merger.Prepass(pass, TensorId.FromKey(p.CanonicalKey), p.Inputs, p.Base, p.Fishers);
///     merger.CompletePrepass(pass);
/// }
/// foreach (var p in floatParameters)
///     merger.Merge(TensorId.FromKey(p.CanonicalKey), p.Inputs, p.Base, p.Fishers, fp32Output);
/// ElementCodec.Encode(fp32Output, outputType, outputBytes);
/// </code>
/// <para>
/// Inputs are <see cref="TensorSource"/>s over the memory-mapped files (one per model, same element count, any mix of
/// float32/float16/bfloat16); the base is required when <see cref="MergeOptions.RequiresBase"/>; Fisher tensors, one per
/// model, when <see cref="MergeOptions.RequiresFisher"/> (otherwise pass an empty span). The tensor id keys DARE's
/// masks, so it must be stable across runs and identical in the prepass and the merge: derive it from the aligned
/// parameter's canonical key with <see cref="TensorId.FromKey"/>. Tied or duplicated tensors that alignment treats as
/// one parameter must be merged once (one id) and the result written to every copy, so DARE and TIES stay consistent.
/// Prepass covers exactly the tensors later merged: TIES's global top-k is taken over them.
/// <c>Prepass</c> and <c>Merge</c> may be called from several threads at once (tensors in parallel);
/// results do not depend on the order tensors arrive in.
/// </para>
/// <para>
/// Decisions (docs/merge-methods.md): the task-arithmetic family follows mergekit's code (TIES divides by Σ wᵢ·maskᵢ,
/// an exact-zero sign sum elects +); the paper's global TIES trim keeps the paper's code, whose exact-tie fallback
/// sign is the majority elected sign of the tensor. Fisher merging normalises cᵢ by the L2
/// norm of model i's Fisher over the WHOLE model, as Matena &amp; Raffel's code does (<c>_l2_norm_of_fisher</c> sums
/// squares over every variable), computed from the raw Fisher; then every Fisher entry (not only the first model's,
/// their <c>favor_target_model</c> default) is floored at <see cref="MergeOptions.FisherFloor"/>.
/// </para>
/// <para>
/// Non-finite inputs (the engine reports them unless the user allows them): averages, task arithmetic and DARE carry a
/// NaN/Inf to exactly the elements it touches; TIES always keeps a NaN entry (largest magnitude) and outputs NaN for its
/// element; a NaN Fisher entry counts as the floor; SLERP and model stock derive per-tensor coefficients from dot
/// products, so one NaN makes the whole tensor NaN.
/// </para>
/// </summary>
internal sealed class TensorMerger
{
    private readonly MergeOptions _options;
    private readonly MergeMethodDefinition _definition;
    private readonly ITensorMethod _method;
    private readonly int _inputCount;

    /// <param name="hasBase">Whether a base model will be given (it changes what SLERP interpolates).</param>
    public TensorMerger(MergeOptions options, int inputCount, IMergeKernels kernels, bool hasBase = false)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(kernels);
        options.Validate(inputCount, hasBase);
        _options = options;
        _inputCount = inputCount;
        var arguments = options.Arguments(inputCount);
        _definition = arguments.Method;
        _method = _definition.Create(arguments, kernels);
    }

    /// <summary>The registry method that merges.</summary>
    public MergeMethodDefinition Method => _definition;

    /// <summary>
    /// Whether full pass <paramref name="pass"/> over all tensors is needed before <c>Merge</c> (asked in order,
    /// after the previous pass's <see cref="CompletePrepass"/>). Fisher: pass 0 measures the Fisher norms. Global TIES:
    /// pass 0 samples ~1/64 of the task vectors, pass 1 counts them (reads everything), and passes 2 and 3 run only for
    /// models whose threshold fell outside the window the sample predicted (see <see cref="MagnitudeThreshold"/>).
    /// </summary>
    public bool NeedsPrepass(int pass) => _method.NeedsPrepass(pass);

    /// <summary>Per model, the global TIES threshold as an fp32 |τ| value (after the prepasses).</summary>
    public IReadOnlyList<float>? GlobalThresholds => (_method as TaskArithmeticMerge)?.GlobalThresholds;

    /// <summary>Per model, the full counting passes its global TIES threshold took (1 when the sample's estimate held).</summary>
    public IReadOnlyList<int>? CountingPasses => (_method as TaskArithmeticMerge)?.CountingPasses;

    /// <summary>Per model, ‖Fᵢ‖₂ over the whole model (after the Fisher prepass).</summary>
    public IReadOnlyList<double>? FisherNorms => (_method as Fisher.Run)?.Norms;

    /// <summary>Notes of the method for the summary (after the prepasses).</summary>
    public IReadOnlyList<string> Notes => _method.Notes;

    public void Prepass(int pass, ulong tensorId, ReadOnlySpan<TensorSource> inputs, TensorSource? baseline,
        ReadOnlySpan<TensorSource> fishers) =>
        Prepass(pass, TensorInfo.Flat(tensorId, inputs[0].Length), new WholeTensors(inputs.ToArray(), baseline, fishers.ToArray()));

    /// <summary>One tensor's share of prepass <paramref name="pass"/>, read chunk by chunk.</summary>
    public void Prepass(int pass, ulong tensorId, ITensorChunks chunks) => Prepass(pass, TensorInfo.Flat(tensorId, chunks.Length), chunks);

    public void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks)
    {
        CheckShape(chunks.Inputs, chunks.Base, chunks.Fishers);
        _method.Prepass(pass, tensor, chunks);
    }

    public void CompletePrepass(int pass) => _method.CompletePrepass(pass);

    /// <summary>Merges one tensor into <paramref name="output"/> (fp32, same element count as the inputs).</summary>
    public void Merge(ulong tensorId, ReadOnlySpan<TensorSource> inputs, TensorSource? baseline,
        ReadOnlySpan<TensorSource> fishers, Span<float> output)
    {
        if (output.Length != inputs[0].Length)
        {
            throw new ArgumentException($"output holds {output.Length} elements, inputs {inputs[0].Length}.", nameof(output));
        }

        var sink = new InPlace();
        Merge(TensorInfo.Flat(tensorId, output.Length), new WholeTensors(inputs.ToArray(), baseline, fishers.ToArray()), output, sink);
        sink.Apply(output);
    }

    /// <summary>As <see cref="Merge(TensorInfo, ITensorChunks, Span{float}, ITensorSink)"/> for a tensor known by id only.</summary>
    public void Merge(ulong tensorId, ITensorChunks chunks, Span<float> buffer, ITensorSink sink) =>
        Merge(TensorInfo.Flat(tensorId, chunks.Length), chunks, buffer, sink);

    /// <summary>
    /// Merges one tensor read chunk by chunk: each chunk is merged into <paramref name="buffer"/> (room for
    /// <see cref="ITensorChunks.ChunkElements"/> values) and handed to <paramref name="sink"/> in order. Per-tensor
    /// coefficients (SLERP, model stock, per-tensor TIES trim) take their own passes over the chunks first; a TIES tensor
    /// under the global trim whose elected-sign majority is negative gets its exact-tie elements through
    /// <see cref="ITensorSink.Patch"/> at the end. Results equal a merge of the whole tensor at once.
    /// </summary>
    public void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, ITensorSink sink)
    {
        CheckShape(chunks.Inputs, chunks.Base, chunks.Fishers);
        _method.Merge(tensor, chunks, buffer, sink);
    }

    /// <summary>Receives a merged tensor chunk by chunk.</summary>
    internal interface ITensorSink
    {
        /// <summary>Merged values of elements [offset, offset + values.Length).</summary>
        void Write(long offset, ReadOnlySpan<float> values);

        /// <summary>Replaces the value of an element already written (TIES exact ties, once the majority is known).</summary>
        void Patch(long index, float value);
    }

    /// <summary>For a whole tensor merged straight into its output span: patches are applied at the end.</summary>
    private sealed class InPlace : ITensorSink
    {
        private readonly List<(long Index, float Value)> _patches = [];

        public void Write(long offset, ReadOnlySpan<float> values)
        {
        }

        public void Patch(long index, float value) => _patches.Add((index, value));

        public void Apply(Span<float> output)
        {
            foreach (var (index, value) in _patches)
            {
                output[(int)index] = value;
            }
        }
    }

    private void CheckShape(ReadOnlySpan<TensorSource> inputs, TensorSource? baseline, ReadOnlySpan<TensorSource> fishers)
    {
        if (inputs.Length != _inputCount)
        {
            throw new ArgumentException($"{inputs.Length} inputs given to a merge of {_inputCount} models.", nameof(inputs));
        }

        if (_definition.Base == BaseUse.Required && baseline is null)
        {
            throw new RecyclingException($"{_options.Describe()} needs the base model (--base).");
        }

        if (_definition.NeedsFisher && fishers.Length != _inputCount)
        {
            throw new RecyclingException($"Fisher merging needs one Fisher tensor per model; {fishers.Length} given.");
        }
    }
}
