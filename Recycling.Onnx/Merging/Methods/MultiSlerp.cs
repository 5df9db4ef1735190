namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// mergekit's <c>multislerp</c> (barycentric interpolation on the hypersphere): each input (or task vector, with a
/// base) is projected to the unit sphere, the weighted mean direction is taken, the inputs are mapped to its tangent
/// space, averaged there with the weights, mapped back by the exponential map, and scaled by Σ wᵢ‖vᵢ‖ (weights
/// normalised to sum 1 unless <c>normalize_weights</c> is false). One tensor at a time, as one vector.
/// </summary>
internal sealed class MultiSlerp : MergeMethodDefinition
{
    private static readonly MethodParameter NormalizeWeights = new("normalize_weights", 1, "divide the weights by their sum")
    {
        Kind = ParameterKind.Boolean,
    };

    private static readonly MethodParameter Eps = new("eps", 1e-8, "added to norms against division by zero") { Min = 0 };

    public override string Name => "multislerp";

    public override string Formula => "spherical barycentre of the θᵢ (or τᵢ from a base) with weights wᵢ, scaled by Σ wᵢ‖θᵢ‖";

    public override BaseUse Base => BaseUse.Optional;

    public override IReadOnlyList<MethodParameter> Parameters => [CommonParameters.Weight, NormalizeWeights, Eps];

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels)
    {
        double[] w = arguments.PerModel("weight");
        if (arguments.Flag("normalize_weights"))
        {
            double sum = w.Sum();
            w = [.. w.Select(x => x / sum)];
        }

        return new Merger(w, arguments["eps"]);
    }

    public override void Validate(MethodArguments arguments, bool hasBase)
    {
        base.Validate(arguments, hasBase);
        if (arguments.Flag("normalize_weights") && arguments.InputCount > 1 && arguments.PerModel("weight").Sum() == 0)
        {
            throw new RecyclingException("multislerp: the weights sum to 0 and cannot be normalised (set normalize_weights: false or change them)");
        }
    }

    private sealed class Merger(double[] weights, double eps) : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            int n = inputs.Length, length = output.Length;
            if (n == 1)
            {
                inputs[0].AsSpan(0, length).CopyTo(output);
                return;
            }

            var v = new double[n][];
            var norms = new double[n];
            for (int i = 0; i < n; i++)
            {
                v[i] = new double[length];
                for (int e = 0; e < length; e++)
                {
                    v[i][e] = inputs[i][e] - (baseline is null ? 0 : (double)baseline[e]);
                    norms[i] += v[i][e] * v[i][e];
                }

                norms[i] = Math.Sqrt(norms[i]);
            }

            // Unit vectors and their weighted mean direction.
            var mean = new double[length];
            for (int i = 0; i < n; i++)
            {
                for (int e = 0; e < length; e++)
                {
                    v[i][e] /= norms[i] + eps;
                    mean[e] += weights[i] * v[i][e];
                }
            }

            double meanNorm = Norm(mean);
            if (meanNorm < eps)
            {
                throw new RecyclingException($"multislerp: tensor '{tensor.Name}': the weighted directions cancel out (antipodal inputs); change the weights");
            }

            for (int e = 0; e < length; e++)
            {
                mean[e] /= meanNorm;
            }

            // Tangent vectors at the mean, averaged with the weights, mapped back to the sphere.
            var tangent = new double[length];
            for (int i = 0; i < n; i++)
            {
                double dot = 0;
                for (int e = 0; e < length; e++)
                {
                    dot += v[i][e] * mean[e];
                }

                for (int e = 0; e < length; e++)
                {
                    tangent[e] += weights[i] * (v[i][e] - dot * mean[e]);
                }
            }

            double tangentNorm = Norm(tangent) + eps;
            double scale = 0;
            for (int i = 0; i < n; i++)
            {
                scale += norms[i] * weights[i];
            }

            double c = Math.Cos(tangentNorm), s = Math.Sin(tangentNorm) / tangentNorm;
            for (int e = 0; e < length; e++)
            {
                output[e] = (float)((mean[e] * c + tangent[e] * s) * scale + (baseline is null ? 0 : baseline[e]));
            }
        }

        private static double Norm(double[] x)
        {
            double sum = 0;
            foreach (double value in x)
            {
                sum += value * value;
            }

            return Math.Sqrt(sum);
        }
    }
}
