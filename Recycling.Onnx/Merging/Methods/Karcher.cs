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

    /// <summary>
    /// Streamed: the mean direction u is never stored. Each of its elements is recomputed from the inputs' elements
    /// by replaying the iterations so far (their scalars: dot products, step weights, norms) exactly as the
    /// whole-tensor rule updates it, so every sum (the norms, then per iteration the dot products, the step's norm and
    /// the new u's norm, fp64 in index order) and the output equal that rule's bit for bit at any chunk size. Memory:
    /// a few scalars per iteration; time: 2 + 3 passes per iteration, the k-th replaying k iterations per element.
    /// </summary>
    private sealed class Merger(int maxIter, double tol) : StreamedMethod
    {
        protected override void MergeTensor(TensorInfo tensor, ChunkPasses passes, Span<float> buffer, TensorMerger.ITensorSink sink)
        {
            int n = passes.Models + (passes.HasBase ? 1 : 0);
            if (n == 1)
            {
                passes.Write(buffer, sink, (_, inputs, _, output) => inputs[0].AsSpan(0, output.Length).CopyTo(output));
                return;
            }

            double alpha = 1.0 / n;
            var norms = new double[n];
            passes.Read((_, count, inputs, baseline) =>
            {
                float[][] points = Points(inputs, baseline);
                for (int i = 0; i < n; i++)
                {
                    for (int e = 0; e < count; e++)
                    {
                        norms[i] += (double)points[i][e] * points[i][e];
                    }
                }
            });
            for (int i = 0; i < n; i++)
            {
                norms[i] = Math.Sqrt(norms[i]);
            }

            var valid = Enumerable.Range(0, n).Where(i => norms[i] > tol).ToArray();
            if (valid.Length == 0)
            {
                passes.Write(buffer, sink, (_, _, _, output) => output.Clear());
                return;
            }

            var mean = new MeanDirection(norms, valid, tol);
            mean.NormU = Math.Sqrt(Sum(passes, (points, e) => Square(mean.Raw(points, e))));
            for (int iteration = 0; iteration < maxIter; iteration++)
            {
                var dots = new double[n];
                passes.Read((_, count, inputs, baseline) =>
                {
                    float[][] points = Points(inputs, baseline);
                    for (int e = 0; e < count; e++)
                    {
                        double u = mean.At(points, e);
                        foreach (int i in valid)
                        {
                            dots[i] += u * (points[i][e] / norms[i]);
                        }
                    }
                });

                var next = new Iteration(n);
                foreach (int i in valid)
                {
                    double dot = Math.Clamp(dots[i], -1, 1);
                    double theta = Math.Acos(dot);
                    next.Dots[i] = dot;
                    next.Skipped[i] = theta < tol;
                    next.Weights[i] = mean.A * theta / Math.Sin(theta);
                }

                next.NormStep = Math.Sqrt(Sum(passes, (points, e) => Square(mean.Step(points, e, mean.At(points, e), next))));
                if (next.NormStep < tol)
                {
                    break;
                }

                next.Cos = Math.Cos(next.NormStep);
                next.Sin = Math.Sin(next.NormStep);
                next.NormNew = Math.Sqrt(Sum(passes, (points, e) => Square(mean.Advance(points, e, mean.At(points, e), next))));
                mean.Iterations.Add(next);
            }

            double scale = norms.Sum() * alpha;
            passes.Write(buffer, sink, (_, inputs, baseline, output) =>
            {
                float[][] points = Points(inputs, baseline);
                for (int e = 0; e < output.Length; e++)
                {
                    output[e] = (float)(scale * mean.At(points, e));
                }
            });
        }

        private static double Square(double x) => x * x;

        /// <summary>Σₑ term(e) over the tensor, fp64, in index order.</summary>
        private static double Sum(ChunkPasses passes, Func<float[][], int, double> term)
        {
            double sum = 0;
            passes.Read((_, count, inputs, baseline) =>
            {
                float[][] points = Points(inputs, baseline);
                for (int e = 0; e < count; e++)
                {
                    sum += term(points, e);
                }
            });
            return sum;
        }

        /// <summary>The points whose mean is taken: the models, then the base when given (as mergekit gathers it).</summary>
        private static float[][] Points(float[][] inputs, float[]? baseline) => baseline is null ? inputs : [.. inputs, baseline];

        /// <summary>One iteration's scalars: the clamped dot products, the step weights, the points skipped (θ &lt; tol), the norms.</summary>
        private sealed class Iteration(int n)
        {
            public double[] Dots { get; } = new double[n];

            public double[] Weights { get; } = new double[n];

            public bool[] Skipped { get; } = new bool[n];

            public double NormStep { get; set; }

            public double Cos { get; set; }

            public double Sin { get; set; }

            public double NormNew { get; set; }
        }

        /// <summary>The mean direction u as the completed iterations define it, element by element.</summary>
        private sealed class MeanDirection(double[] norms, int[] valid, double tol)
        {
            /// <summary>Equal weights renormalised over the valid inputs.</summary>
            public double A { get; } = 1.0 / valid.Length;

            public double NormU { get; set; }

            public List<Iteration> Iterations { get; } = [];

            /// <summary>Element e of the normalised arithmetic mean before its normalisation.</summary>
            public double Raw(float[][] points, int e)
            {
                double u = 0;
                foreach (int i in valid)
                {
                    u += A * (points[i][e] / norms[i]);
                }

                return u;
            }

            /// <summary>Element e of u after the completed iterations.</summary>
            public double At(float[][] points, int e)
            {
                double u = NormU < tol ? points[valid[0]][e] / norms[valid[0]] : Raw(points, e) / NormU;
                foreach (var iteration in Iterations)
                {
                    u = Advance(points, e, u, iteration);
                    if (iteration.NormNew > tol)
                    {
                        u /= iteration.NormNew;
                    }
                }

                return u;
            }

            /// <summary>Element e of the step Σ fᵢ (pᵢ/‖pᵢ‖ − dotᵢ u) from u's element <paramref name="u"/>.</summary>
            public double Step(float[][] points, int e, double u, Iteration iteration)
            {
                double step = 0;
                foreach (int i in valid)
                {
                    if (!iteration.Skipped[i])
                    {
                        step += iteration.Weights[i] * ((points[i][e] / norms[i]) - (iteration.Dots[i] * u));
                    }
                }

                return step;
            }

            /// <summary>Element e of cos‖s‖ u + sin‖s‖ s/‖s‖ (before normalising) from u's element <paramref name="u"/>.</summary>
            public double Advance(float[][] points, int e, double u, Iteration iteration) =>
                iteration.Cos * u + iteration.Sin * (Step(points, e, u, iteration) / iteration.NormStep);
        }
    }
}
