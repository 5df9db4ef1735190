using System.Runtime.InteropServices;
using Recycling.Training;
using static TorchSharp.torch;

namespace Recycling.Tests.Training;

/// <summary>
/// The trainer keeps LibTorch's freed CPU memory in glibc's heap (<see cref="NativeHeap"/>): a training step's
/// activations, allocated and freed every step, then reuse mapped pages instead of faulting fresh ones in. Counted
/// with this thread's own minor page faults (getrusage RUSAGE_THREAD), so other tests' threads do not count.
/// </summary>
[TestClass]
public sealed partial class NativeHeapTests
{
    [TestMethod]
    public void ActivationSizedTensorsReuseTheirPagesStepAfterStep()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Inconclusive("glibc's mallopt is Linux's");
        }

        NativeHeap.KeepFreedMemory();
        const int Steps = 40;

        // Four 1.6 MB activations (the zoo CNN's first layer at batch 32) alive together, written, then freed: about
        // 1,600 pages a step if the heap handed them back; a handful once they are kept.
        long[] shape = [32, 16, 28, 28];
        void Step()
        {
            using var scope = NewDisposeScope();
            for (var k = 0; k < 4; k++)
            {
                ones(shape);
            }
        }

        Step();
        var before = ThreadMinorFaults();
        for (var s = 0; s < Steps; s++)
        {
            Step();
        }

        var perStep = (ThreadMinorFaults() - before) / (double)Steps;
        Assert.IsLessThan(400, perStep, $"{perStep:F0} page faults per step: the freed activations went back to the kernel");
    }

    private static long ThreadMinorFaults()
    {
        var usage = new long[18];
        Assert.AreEqual(0, GetRusage(1, usage), "getrusage(RUSAGE_THREAD)");

        // struct rusage: ru_utime and ru_stime (two timevals, 4 longs), then ru_maxrss, ru_ixrss, ru_idrss, ru_isrss, ru_minflt.
        return usage[8];
    }

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int GetRusage(int who, [Out] long[] usage);
}
