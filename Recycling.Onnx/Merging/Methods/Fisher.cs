namespace Recycling.Onnx.Merging.Methods;

/// <summary>
/// Fisher merging (Matena &amp; Raffel 2022), ours (mergekit has none): θ = Σ cᵢFᵢθᵢ / Σ cᵢFᵢ with diagonal Fisher
/// tensors, cᵢ = wᵢ / ‖Fᵢ‖₂ over the WHOLE model (their code's <c>_l2_norm_of_fisher</c>), every entry floored at
/// fisher_floor (theirs floors only the first model's).
/// </summary>
internal sealed class Fisher : MergeMethodDefinition
{
    private static readonly MethodParameter Floor = new("fisher_floor", 1e-6, "Fisher entries are floored at this value") { Min = 0, MinExclusive = true };

    public override string Name => "fisher";

    public override string Origin => "ours";

    public override string Formula => "θ = Σ wᵢFᵢθᵢ / Σ wᵢFᵢ, diagonal Fisher Fᵢ (--fisher) normalised by its L2 norm over the model";

    public override IReadOnlyList<MethodParameter> Parameters => [CommonParameters.Weight with { Min = 0 }, Floor];

    public override bool NeedsFisher => true;

    public override void Validate(MethodArguments arguments, bool hasBase)
    {
        base.Validate(arguments, hasBase);
        if (arguments.PerModel("weight").All(w => w == 0))
        {
            throw new RecyclingException("weights are all zero; at least one must be positive.");
        }
    }

    internal override ITensorMethod Create(MethodArguments arguments, IMergeKernels kernels) => new Run(arguments, kernels);

    internal sealed class Run(MethodArguments arguments, IMergeKernels kernels) : ITensorMethod
    {
        private readonly Dictionary<ulong, double[]> _squares = [];
        private readonly Lock _lock = new();
        private readonly float[] _weights = Linear.Normalised(arguments.PerModel("weight"));

        public double[]? Norms { get; private set; }

        public bool NeedsPrepass(int pass) => pass == 0;

        /// <summary>Pass 0: this tensor's share of ‖Fᵢ‖₂².</summary>
        public void Prepass(int pass, TensorInfo tensor, ITensorChunks chunks)
        {
            int n = chunks.Inputs.Length;
            double[] squares = new double[n];
            TensorChunks.ForEach(chunks, null, _ =>
            {
                Span<double> cell = stackalloc double[1];
                for (int k = 0; k < n; k++)
                {
                    kernels.Gram(chunks.Fishers.Slice(k, 1), null, cell);
                    squares[k] += cell[0];
                }
            });

            lock (_lock)
            {
                if (!_squares.TryAdd(tensor.Id, squares))
                {
                    throw new RecyclingException($"tensor id {tensor.Id:X16} was given twice in the Fisher prepass.");
                }
            }
        }

        public void CompletePrepass(int pass)
        {
            // Summed in tensor-id order so the norms do not depend on the order tensors arrived in.
            var norms = new double[arguments.InputCount];
            foreach (ulong id in _squares.Keys.Order())
            {
                for (int k = 0; k < norms.Length; k++)
                {
                    norms[k] += _squares[id][k];
                }
            }

            for (int k = 0; k < norms.Length; k++)
            {
                norms[k] = Math.Sqrt(norms[k]);
                if (!(norms[k] > 0) || !double.IsFinite(norms[k]))
                {
                    throw new RecyclingException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                        $"the Fisher tensors of model {k + 1} have L2 norm {norms[k]}: they must be finite and not all zero."));
                }
            }

            Norms = norms;
        }

        public void Merge(TensorInfo tensor, ITensorChunks chunks, Span<float> buffer, TensorMerger.ITensorSink sink)
        {
            if (Norms is null)
            {
                throw new InvalidOperationException("Fisher merging needs its prepass before Merge.");
            }

            float[] coefficients = [.. _weights.Select((w, k) => (float)(w / Norms[k]))];
            for (long offset = 0; offset < chunks.Length; offset += chunks.ChunkElements)
            {
                int count = (int)Math.Min(chunks.ChunkElements, chunks.Length - offset);
                chunks.Load(offset, count);
                kernels.Fisher(chunks.Inputs, chunks.Fishers, coefficients, (float)arguments["fisher_floor"], buffer[..count]);
                sink.Write(offset, buffer[..count]);
            }
        }
    }
}
