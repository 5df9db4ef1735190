namespace Recycling.Onnx.Merging.Methods;

/// <summary>Breadcrumbs' sparsifier with TIES's sign election and disjoint sum (mergekit's <c>breadcrumbs_ties</c>).</summary>
internal sealed class BreadcrumbsTies : TaskArithmeticFamily
{
    public override string Name => "breadcrumbs_ties";

    public override string Formula => "breadcrumbs' sparsifier, then TIES's sign election and disjoint sum";

    public override Sparsification Sparsification => Sparsification.Custom;

    public override Combine.Consensus Consensus => Combine.Consensus.Sum;

    public override bool DefaultNormalize => false;

    protected override IEnumerable<MethodParameter> ExtraParameters => [Breadcrumbs.Gamma];

    public override void SparsifyTensor(Span<float> tau, TensorInfo tensor, int model, MethodArguments arguments, DareMask random) =>
        Breadcrumbs.Crumbs(tau, model, arguments);
}
