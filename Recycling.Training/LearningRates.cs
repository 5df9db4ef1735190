namespace Recycling.Training;

/// <summary>
/// The learning rate of each optimizer step, as PyTorch's LambdaLR gives it with transformers' warmup schedules
/// (and CosineAnnealingLR(T_max = total, eta_min = 0) without warmup): step t = 0 .. total − 1 uses lr · factor(t), with
/// W warmup steps: t / W while t &lt; W (so the first step of a warmup has lr 0, as in PyTorch), then 1 (constant),
/// (total − t) / (total − W) (linear) or ½ (1 + cos(π (t − W) / (total − W))) (cosine).
/// </summary>
internal static class LearningRates
{
    public static double Factor(LearningRateSchedule schedule, int warmup, int total, int step)
    {
        if (step < warmup)
        {
            return (double)step / warmup;
        }

        var progress = (double)(step - warmup) / Math.Max(1, total - warmup);
        return schedule switch
        {
            LearningRateSchedule.Constant => 1,
            LearningRateSchedule.Linear => Math.Max(0, 1 - progress),
            LearningRateSchedule.Cosine => 0.5 * (1 + Math.Cos(Math.PI * progress)),
            _ => throw new ArgumentOutOfRangeException(nameof(schedule)),
        };
    }
}
