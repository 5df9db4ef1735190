namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// mergekit's <c>karcher</c>: the Riemannian (Karcher) mean of the inputs' directions on the unit sphere, equal
/// weights, by at most <c>max_iter</c> gradient steps from the normalised arithmetic mean (stopping when the step's
/// norm is below <c>tol</c>), scaled by the mean of the norms. Inputs whose norm is ≤ tol are left out of the
/// direction but count in the scale. A base model, when given, is one more input (mergekit gathers it too).
/// </summary>
internal sealed class Karcher : MergeMethodDefinition
{
    private static readonly MethodParameter MaxIter = new("max_iter", 10, "most iterations") { Min = 0, Max = 100_000 };

    private static readonly MethodParameter Tol = new("tol", 1e-5, "convergence tolerance") { Min = 0 };

    public override string Name => "karcher";

    public override string Formula => "Karcher mean of the directions θᵢ/‖θᵢ‖ (base included when given), times mean ‖θᵢ‖";

    public override BaseUse Base => BaseUse.Optional;

    public override IReadOnlyList<MethodParameter> Parameters => [MaxIter, Tol];

    public override void Validate(MethodArguments arguments, bool hasBase)
    {
        base.Validate(arguments, hasBase);
        if (arguments["max_iter"] != Math.Floor(arguments["max_iter"]))
        {
            throw new RecyclingException($"karcher: max_iter must be a whole number, not {arguments.Method.Parameters[0].Format(arguments["max_iter"])}");
        }
    }

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) =>
        new Merger((int)arguments["max_iter"], arguments["tol"]);

    private sealed class Merger(int maxIter, double tol) : WholeTensorMethod
    {
        protected override void MergeTensor(TensorInfo tensor, float[][] inputs, float[]? baseline, Span<float> output)
        {
            float[][] points = baseline is null ? inputs : [.. inputs, baseline];
            int n = points.Length, length = output.Length;
            if (n == 1)
            {
                points[0].AsSpan(0, length).CopyTo(output);
                return;
            }

            double alpha = 1.0 / n;
            var norms = new double[n];
            for (int i = 0; i < n; i++)
            {
                double sum = 0;
                for (int e = 0; e < length; e++)
                {
                    sum += (double)points[i][e] * points[i][e];
                }

                norms[i] = Math.Sqrt(sum);
            }

            var valid = Enumerable.Range(0, n).Where(i => norms[i] > tol).ToArray();
            if (valid.Length == 0)
            {
                output.Clear();
                return;
            }

            double a = 1.0 / valid.Length; // equal weights renormalised over the valid inputs

            // The unit vectors pᵢ/‖pᵢ‖ are computed where used, never stored: N fp64 copies of the tensor less.
            var u = new double[length];
            foreach (int i in valid)
            {
                float[] p = points[i];
                double norm = norms[i];
                for (int e = 0; e < length; e++)
                {
                    u[e] += a * (p[e] / norm);
                }
            }

            double normU = Norm(u);
            for (int e = 0; e < length; e++)
            {
                u[e] = normU < tol ? points[valid[0]][e] / norms[valid[0]] : u[e] / normU;
            }

            var step = new double[length];
            for (int iteration = 0; iteration < maxIter; iteration++)
            {
                Array.Clear(step);
                foreach (int i in valid)
                {
                    float[] p = points[i];
                    double norm = norms[i];
                    double dot = 0;
                    for (int e = 0; e < length; e++)
                    {
                        dot += u[e] * (p[e] / norm);
                    }

                    dot = Math.Clamp(dot, -1, 1);
                    double theta = Math.Acos(dot);
                    if (theta < tol)
                    {
                        continue;
                    }

                    double f = a * theta / Math.Sin(theta);
                    for (int e = 0; e < length; e++)
                    {
                        step[e] += f * ((p[e] / norm) - (dot * u[e]));
                    }
                }

                double normStep = Norm(step);
                if (normStep < tol)
                {
                    break;
                }

                double c = Math.Cos(normStep), s = Math.Sin(normStep);
                for (int e = 0; e < length; e++)
                {
                    u[e] = c * u[e] + s * (step[e] / normStep);
                }

                double normNew = Norm(u);
                if (normNew > tol)
                {
                    for (int e = 0; e < length; e++)
                    {
                        u[e] /= normNew;
                    }
                }
            }

            double scale = norms.Sum() * alpha;
            for (int e = 0; e < length; e++)
            {
                output[e] = (float)(scale * u[e]);
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
