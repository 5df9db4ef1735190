namespace Recycling.Onnx.Merging.Methods;

/// <summary>Breadcrumbs' sparsifier with TIES's sign election and disjoint sum (mergekit's <c>breadcrumbs_ties</c>).</summary>
internal sealed class BreadcrumbsTies : TaskArithmeticFamily
{
    public override string Name => "breadcrumbs_ties";

    public override string Formula => "breadcrumbs' sparsifier, then TIES's sign election and disjoint sum";

    public override Sparsification Sparsification => Sparsification.Outliers;

    public override Combine.Consensus Consensus => Combine.Consensus.Sum;

    public override bool DefaultNormalize => false;

    protected override IEnumerable<MethodParameter> ExtraParameters => [Breadcrumbs.Gamma];
}
