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

    /// <summary>
    /// Streamed: four passes of sums (the norms ‖vᵢ‖, the mean direction's norm, its dot products with the unit
    /// vectors, the tangent's norm), each element recomputed from the inputs as the whole-tensor rule computes it and
    /// summed in index order, then a pass for the output: the whole-tensor rule's result at any chunk size.
    /// </summary>
    private sealed class Merger(double[] weights, double eps) : StreamedMethod
    {
        protected override void MergeTensor(TensorInfo tensor, ChunkPasses passes, Span<float> buffer, TensorMerger.ITensorSink sink)
        {
            int n = passes.Models;
            if (n == 1)
            {
                passes.Write(buffer, sink, (_, inputs, _, output) => inputs[0].AsSpan(0, output.Length).CopyTo(output));
                return;
            }

            var norms = new double[n];
            passes.Read((_, count, inputs, baseline) =>
            {
                for (int i = 0; i < n; i++)
                {
                    for (int e = 0; e < count; e++)
                    {
                        double v = Vector(inputs, baseline, i, e);
                        norms[i] += v * v;
                    }
                }
            });
            for (int i = 0; i < n; i++)
            {
                norms[i] = Math.Sqrt(norms[i]);
            }

            double meanNorm = 0;
            passes.Read((_, count, inputs, baseline) =>
            {
                for (int e = 0; e < count; e++)
                {
                    double m = Mean(inputs, baseline, norms, e);
                    meanNorm += m * m;
                }
            });
            meanNorm = Math.Sqrt(meanNorm);
            if (meanNorm < eps)
            {
                throw new RecyclingException($"multislerp: tensor '{tensor.Name}': the weighted directions cancel out (antipodal inputs); change the weights");
            }

            var dots = new double[n];
            passes.Read((_, count, inputs, baseline) =>
            {
                for (int i = 0; i < n; i++)
                {
                    for (int e = 0; e < count; e++)
                    {
                        dots[i] += (Vector(inputs, baseline, i, e) / (norms[i] + eps)) * (Mean(inputs, baseline, norms, e) / meanNorm);
                    }
                }
            });

            double tangentNorm = 0;
            passes.Read((_, count, inputs, baseline) =>
            {
                for (int e = 0; e < count; e++)
                {
                    double t = Tangent(inputs, baseline, norms, meanNorm, dots, e);
                    tangentNorm += t * t;
                }
            });
            tangentNorm = Math.Sqrt(tangentNorm) + eps;

            double scale = 0;
            for (int i = 0; i < n; i++)
            {
                scale += norms[i] * weights[i];
            }

            double c = Math.Cos(tangentNorm), s = Math.Sin(tangentNorm) / tangentNorm;
            passes.Write(buffer, sink, (_, inputs, baseline, output) =>
            {
                for (int e = 0; e < output.Length; e++)
                {
                    double mean = Mean(inputs, baseline, norms, e) / meanNorm;
                    double tangent = Tangent(inputs, baseline, norms, meanNorm, dots, e);
                    output[e] = (float)((mean * c + tangent * s) * scale + (baseline is null ? 0 : baseline[e]));
                }
            });
        }

        private static double Vector(float[][] inputs, float[]? baseline, int i, int e) =>
            inputs[i][e] - (baseline is null ? 0 : (double)baseline[e]);

        /// <summary>Element e of Σ wᵢ vᵢ/(‖vᵢ‖ + eps), summed in model order.</summary>
        private double Mean(float[][] inputs, float[]? baseline, double[] norms, int e)
        {
            double mean = 0;
            for (int i = 0; i < inputs.Length; i++)
            {
                mean += weights[i] * (Vector(inputs, baseline, i, e) / (norms[i] + eps));
            }

            return mean;
        }

        /// <summary>Element e of Σ wᵢ (v̂ᵢ − (v̂ᵢ·m̂) m̂), m̂ the unit mean direction, summed in model order.</summary>
        private double Tangent(float[][] inputs, float[]? baseline, double[] norms, double meanNorm, double[] dots, int e)
        {
            double mean = Mean(inputs, baseline, norms, e) / meanNorm, tangent = 0;
            for (int i = 0; i < inputs.Length; i++)
            {
                tangent += weights[i] * ((Vector(inputs, baseline, i, e) / (norms[i] + eps)) - (dots[i] * mean));
            }

            return tangent;
        }
    }
}
