namespace Recycling.Onnx.Merging;

/// <summary>Picks the <see cref="IMergeKernels"/> implementation for a <see cref="MergeDevice"/>.</summary>
internal static class MergeKernels
{
    /// <summary>
    /// cpu: SIMD kernels at <see cref="SimdPaths.Default"/>; cuda: ILGPU on the first NVIDIA GPU, or a
    /// <see cref="RecyclingException"/> saying why none is usable; auto: cuda when usable, else cpu.
    /// </summary>
    public static IMergeKernels Create(MergeDevice device) => device switch
    {
        MergeDevice.Cpu => new CpuMergeKernels(),
        MergeDevice.Cuda => IlgpuMergeKernels.CreateCuda(),
        _ => (IMergeKernels?)IlgpuMergeKernels.TryCreateCuda(IlgpuMergeKernels.CudaChunkElements, out _) ?? new CpuMergeKernels(),
    };
}
