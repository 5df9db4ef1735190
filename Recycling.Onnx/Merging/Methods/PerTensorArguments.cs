using System.Collections.Concurrent;

namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// A method whose parameters depend on the tensor's name (mergekit's parameter conditionals, <see cref="MergeConfig"/>):
/// each distinct set of values gets its own run of the method, created on first use. Methods that need prepasses over
/// the whole model (global TIES trim, Fisher) gather statistics for one set of values, so they are refused here.
/// </summary>
internal sealed class PerTensorArguments : ITensorMethod
{
    private readonly MergeMethodDefinition _method;
    private readonly Func<string, MethodArguments> _arguments;
    private readonly IMergeKernels _kernels;
    private readonly bool _hasBase;
    private readonly ConcurrentDictionary<string, ITensorMethod> _runs = new(StringComparer.Ordinal);

    public PerTensorArguments(MergeMethodDefinition method, Func<string, MethodArguments> arguments, IMergeKernels kernels, bool hasBase)
    {
        (_method, _arguments, _kernels, _hasBase) = (method, arguments, kernels, hasBase);
        if (Run("").NeedsPrepass(0))
        {
            throw new RecyclingException($"{method.Name}: per-tensor parameter filters cannot be combined with a pass over the whole model (trim: global, Fisher); use one value per parameter");
        }
    }

    public bool NeedsPrepass(int pass) => false;

    public void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks) =>
        throw new InvalidOperationException("per-tensor arguments take no prepass");

    public void CompletePrepass(int pass)
    {
    }

    public void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink) =>
        Run(tensor.Name).Merge(tensor, chunks, buffer, sink);

    private ITensorMethod Run(string tensorName)
    {
        var arguments = _arguments(tensorName);
        return _runs.GetOrAdd(arguments.Describe(), _ =>
        {
            try
            {
                _method.Validate(arguments, _hasBase);
            }
            catch (RecyclingException e)
            {
                throw new RecyclingException($"tensor {MessageText.Path(tensorName)}: {e.Message}");
            }

            return _method.Create(arguments, _kernels);
        });
    }
}
