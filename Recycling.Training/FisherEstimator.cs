using Recycling.Training.Ops;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recycling.Training;

/// <summary>Which label the Fisher's log-likelihood gradient uses.</summary>
public enum FisherLabels
{
    /// <summary>y drawn from the model's own predictive distribution (the true Fisher; one draw per sample).</summary>
    Sampled,

    /// <summary>The dataset's label (the empirical Fisher).</summary>
    True,
}

/// <summary>
/// The diagonal Fisher: mean over samples of the squared per-sample gradient of log p(y|x) with respect to every
/// parameter, in eval mode (samples do not interact), accumulated in float64. Keyed by initializer name, the layout
/// `recycle merge --method fisher` reads.
/// </summary>
internal static class FisherEstimator
{
    public static Dictionary<string, float[]> Compute(OnnxProgram program, string output, IReadOnlyList<Batch> samples, FisherLabels labels, int seed)
    {
        var parameters = program.Parameters.ToList();

        // The squares accumulate in float64 tensors: reading each gradient element through a managed accessor cost
        // more than the forward and backward passes together on models with millions of parameters.
        var sums = parameters.ToDictionary(p => p.Key, p => zeros(p.Value.shape, ScalarType.Float64, device: p.Value.device));
        var random = new Random(seed);
        try
        {
            foreach (var sample in samples)
            {
                if (sample.Labels.shape[0] != 1)
                {
                    throw new ArgumentException("the Fisher needs one sample per batch", nameof(samples));
                }

                using var scope = NewDisposeScope();
                foreach (var (_, parameter) in parameters)
                {
                    parameter.grad?.zero_();
                }

                var logits = program.Forward(sample.Feeds, new OpContext(), [output])[output].reshape(1, -1);
                if (logits.dtype is ScalarType.Float16 or ScalarType.BFloat16)
                {
                    logits = logits.to(ScalarType.Float32); // log-probabilities in float32, as the training loss
                }

                var logProbabilities = F.log_softmax(logits, 1);
                var y = labels == FisherLabels.True ? sample.Labels.item<long>() : Draw(logProbabilities, random);
                logProbabilities[0, y].backward();
                foreach (var (name, parameter) in parameters)
                {
                    if (parameter.grad is { } gradient)
                    {
                        var wide = gradient.to(ScalarType.Float64);
                        sums[name].PlusInPlace(wide.Squared());
                    }
                }
            }

            foreach (var (_, parameter) in parameters)
            {
                parameter.grad?.zero_();
            }

            return sums.ToDictionary(p => p.Key, p =>
            {
                using var mean = p.Value.Over((long)samples.Count).to(ScalarType.Float32).cpu().contiguous();
                return mean.data<float>().ToArray();
            });
        }
        finally
        {
            foreach (var sum in sums.Values)
            {
                sum.Dispose();
            }
        }
    }

    /// <summary>A class drawn from softmax(logits) with a seeded .NET generator (reproducible across platforms).</summary>
    private static long Draw(Tensor logProbabilities, Random random)
    {
        using var probabilities = logProbabilities.detach().exp().to(ScalarType.Float64).cpu().contiguous();
        var p = probabilities.data<double>().ToArray();
        var u = random.NextDouble() * p.Sum();
        for (var k = 0; k < p.Length; k++)
        {
            u -= p[k];
            if (u < 0)
            {
                return k;
            }
        }

        return p.Length - 1;
    }
}
