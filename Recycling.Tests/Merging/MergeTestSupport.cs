using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Recycling.Onnx;
using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

/// <summary>A tensor in a pinned buffer of raw dtype bytes, with its exact values decoded independently (by .NET's Half).</summary>
internal sealed unsafe class TestTensor
{
    private TestTensor(byte[] bytes, OnnxDataType type, float[] values)
    {
        Bytes = bytes;
        Type = type;
        Values = values;
    }

    public byte[] Bytes { get; }

    public OnnxDataType Type { get; }

    /// <summary>The exact element values (every float16/bfloat16 value is a float).</summary>
    public float[] Values { get; }

    public int Length => Values.Length;

    public TensorSource Source =>
        new(Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(Bytes)), Length, Type);

    public static TestTensor Create(ReadOnlySpan<float> values, OnnxDataType type)
    {
        int size = TensorSource.ElementSize(type);
        byte[] bytes = GC.AllocateArray<byte>(values.Length * size, pinned: true);
        var exact = new float[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            switch (type)
            {
                case OnnxDataType.Float:
                    MemoryMarshal.Write(bytes.AsSpan(i * 4), values[i]);
                    exact[i] = values[i];
                    break;
                case OnnxDataType.Float16:
                    Half half = (Half)values[i];
                    MemoryMarshal.Write(bytes.AsSpan(i * 2), half);
                    exact[i] = (float)half;
                    break;
                default:
                    // Truncation is a fine way to make test data; the values are whatever the bytes say.
                    ushort bits = (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16);
                    MemoryMarshal.Write(bytes.AsSpan(i * 2), bits);
                    exact[i] = BitConverter.UInt32BitsToSingle((uint)bits << 16);
                    break;
            }
        }

        return new TestTensor(bytes, type, exact);
    }

    /// <summary>Elements [<paramref name="start"/>, start + <paramref name="count"/>) of the tensor.</summary>
    public TensorSource Slice(long start, int count) =>
        new((byte*)Source.Data + (start * TensorSource.ElementSize(Type)), count, Type);

    public static TensorSource[] Sources(IEnumerable<TestTensor> tensors) => tensors.Select(t => t.Source).ToArray();
}

internal static class TestData
{
    public static readonly OnnxDataType[] Types = [OnnxDataType.Float, OnnxDataType.Float16, OnnxDataType.BFloat16];

    /// <summary>Lengths around the vector widths and block/chunk boundaries (block 1024, test chunk 4096).</summary>
    public static readonly int[] Lengths = [0, 1, 15, 17, 1029, 9000];

    public static float[] Normal(Random random, int length, double scale, double mean = 0)
    {
        var values = new float[length];
        for (int i = 0; i < length; i++)
        {
            double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();
            values[i] = (float)(mean + scale * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }

        return values;
    }

    /// <summary>A base and N fine-tunings of it (base + small task vectors), stored in <paramref name="type"/>.</summary>
    public static (TestTensor Base, TestTensor[] Models) FineTunings(int seed, int n, int length, OnnxDataType type,
        double taskScale = 0.02)
    {
        var random = new Random(seed);
        float[] theta0 = Normal(random, length, 0.5);
        var models = new TestTensor[n];
        for (int k = 0; k < n; k++)
        {
            float[] tau = Normal(random, length, taskScale);
            models[k] = TestTensor.Create(theta0.Zip(tau, (b, t) => b + t).ToArray(), type);
        }

        return (TestTensor.Create(theta0, type), models);
    }

    public static void AssertClose(double expected, float actual, double tolerance, string what)
    {
        if (double.IsNaN(expected))
        {
            Assert.IsTrue(float.IsNaN(actual), $"{what}: expected NaN, got {actual}");
            return;
        }

        Assert.IsTrue(Math.Abs(expected - actual) <= tolerance,
            $"{what}: expected {expected:R}, got {actual:R} (|diff| {Math.Abs(expected - actual):E3} > tolerance {tolerance:E3})");
    }
}

/// <summary>
/// Every kernel implementation the machine can run: each CPU SIMD path single-threaded, the widest path on 4 threads
/// with 4096-element chunks (so multi-chunk parallel code runs on small tensors), and the ILGPU kernels on ILGPU's CPU
/// accelerator.
/// </summary>
internal static class KernelCases
{
    public const string Ilgpu = "ilgpu-cpu";
    private static readonly Lock IlgpuGate = new();
    private static IlgpuMergeKernels? s_ilgpu;

    public static IEnumerable<string> Names =>
        SimdPaths.Available.Select(p => $"cpu-{p}").Append($"cpu-{SimdPaths.Available[^1]}-4threads").Append(Ilgpu);

    public static IEnumerable<object[]> NamesAndTypes =>
        from name in Names from type in TestData.Types select new object[] { name, type };

    public static IEnumerable<object[]> NamesOnly => Names.Select(n => new object[] { n });

    public static IEnumerable<object[]> CpuPathsOnly => Names.Where(n => n != Ilgpu).Select(n => new object[] { n });

    /// <summary>Runs <paramref name="test"/> with the named kernels (the shared ILGPU instance is used by one test at a time).</summary>
    public static void Use(string name, Action<IMergeKernels> test)
    {
        if (name == Ilgpu)
        {
            lock (IlgpuGate)
            {
                s_ilgpu ??= IlgpuMergeKernels.CreateCpuAccelerator(chunkElements: 4096);
                test(s_ilgpu);
            }

            return;
        }

        string[] parts = name.Split('-');
        SimdPath path = Enum.Parse<SimdPath>(parts[1]);
        using var kernels = parts.Length == 3
            ? new CpuMergeKernels(path, threads: 4, chunkElements: 4096)
            : new CpuMergeKernels(path, threads: 1);
        test(kernels);
    }
}
