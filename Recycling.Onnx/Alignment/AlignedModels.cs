namespace Recycling.Onnx.Alignment;

/// <summary>
/// A set of models opened and aligned together: the inputs, the optional base and their <see cref="AlignmentPlan"/>.
/// The plan reads the models in place, so they stay open until this is disposed; when opening or aligning fails,
/// whatever was opened is closed before the exception leaves.
/// </summary>
internal sealed class AlignedModels : IDisposable
{
    private readonly List<OnnxModel> _inputs;

    private AlignedModels(List<OnnxModel> inputs, OnnxModel? baseModel, AlignmentPlan plan)
    {
        _inputs = inputs;
        Base = baseModel;
        Plan = plan;
    }

    public IReadOnlyList<OnnxModel> Inputs => _inputs;

    public OnnxModel? Base { get; }

    public AlignmentPlan Plan { get; }

    /// <summary>Opens <paramref name="inputs"/> in order, then <paramref name="baseModel"/>, and aligns them
    /// (<see cref="Aligner.Align(IReadOnlyList{OnnxModel}, OnnxModel?, HeadPolicy, bool)"/>).</summary>
    public static AlignedModels Open(IEnumerable<string> inputs, string? baseModel = null, HeadPolicy heads = HeadPolicy.Error, bool allowCuts = false)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        var opened = new List<OnnxModel>();
        OnnxModel? openedBase = null;
        try
        {
            foreach (var path in inputs)
            {
                opened.Add(OnnxModel.Open(path));
            }

            openedBase = baseModel is null ? null : OnnxModel.Open(baseModel);
            return new AlignedModels(opened, openedBase, Aligner.Align(opened, openedBase, heads, allowCuts));
        }
        catch
        {
            Close(opened, openedBase);
            throw;
        }
    }

    public void Dispose() => Close(_inputs, Base);

    private static void Close(List<OnnxModel> inputs, OnnxModel? baseModel)
    {
        inputs.ForEach(m => m.Dispose());
        baseModel?.Dispose();
    }
}
