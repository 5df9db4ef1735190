using Recycling.Onnx;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>Where LibTorch trains: the values of <c>--device</c>, with the meanings <c>recycle merge</c> gives them.</summary>
public enum TrainingDevice
{
    Cpu,

    /// <summary>The first CUDA device; an error when LibTorch has none (the TorchSharp-cpu build, or no usable GPU).</summary>
    Cuda,

    /// <summary>CUDA when LibTorch has it, else the CPU with a one-line notice.</summary>
    Auto,
}

/// <summary>Turns a <see cref="TrainingDevice"/> into LibTorch's device, before any work is done.</summary>
internal static class TrainingDevices
{
    /// <summary>LibTorch's device for <paramref name="device"/> (<see cref="Choose"/>).</summary>
    public static Device Resolve(TrainingDevice device, Action<string>? notice = null) =>
        Choose(device, notice) == TrainingDevice.Cuda ? CUDA : CPU;

    /// <summary>
    /// <see cref="TrainingDevice.Cpu"/> or <see cref="TrainingDevice.Cuda"/>: cuda without CUDA is a
    /// <see cref="RecyclingException"/>; auto without it gives <paramref name="notice"/> one line (default: standard error).
    /// </summary>
    public static TrainingDevice Choose(TrainingDevice device, Action<string>? notice = null)
    {
        if (device == TrainingDevice.Cpu)
        {
            return device;
        }

        if (!Enum.IsDefined(device))
        {
            throw new RecyclingException($"device {(int)device}: use cpu, cuda or auto");
        }

        var failure = CudaFailure();
        if (failure is null)
        {
            return TrainingDevice.Cuda;
        }

        if (device == TrainingDevice.Cuda)
        {
            throw new RecyclingException($"--device cuda: CUDA is not usable here ({failure}); --device auto runs on the CPU instead");
        }

        (notice ?? (m => Console.Error.WriteLine(m)))($"notice: CUDA is not usable here ({failure}); training on the CPU");
        return TrainingDevice.Cpu;
    }

    /// <summary>Why LibTorch cannot train on CUDA here; null when it can.</summary>
    private static string? CudaFailure()
    {
        try
        {
            return cuda.is_available() ? null : "LibTorch reports no CUDA device: this build references TorchSharp-cpu, or no NVIDIA GPU and driver are present";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException or NotSupportedException or System.Runtime.InteropServices.ExternalException)
        {
            return $"LibTorch could not be asked: {LibTorchError.FirstLine(e)}";
        }
    }
}
