using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

/// <summary>
/// Whole pinned tensors (any element type) handed out at most <paramref name="chunk"/> elements at a time, as the
/// engine's ParameterChunks does; the base, when there is one, is present before the first Load, as the engine's is.
/// </summary>
internal sealed class ChunkedTestTensors(TestTensor[] inputs, TestTensor? baseline, int chunk) : ITensorChunks
{
    private readonly TensorSource[] _current = [.. inputs.Select(t => t.Slice(0, 0))];
    private TensorSource? _base = baseline?.Slice(0, 0);

    public long Length => inputs[0].Length;

    public int ChunkElements => chunk;

    public ReadOnlySpan<TensorSource> Inputs => _current;

    public TensorSource? Base => _base;

    public ReadOnlySpan<TensorSource> Fishers => default;

    public void Load(long offset, int count, ulong? sampleOf = null)
    {
        Assert.IsTrue(count <= chunk && offset >= 0 && offset + count <= Length, $"Load({offset}, {count}) with chunks of {chunk}");
        for (int i = 0; i < inputs.Length; i++)
        {
            _current[i] = inputs[i].Slice(offset, count);
        }

        _base = baseline?.Slice(offset, count);
    }
}

/// <summary>A merged tensor collected in memory; chunks must arrive in order, each element once.</summary>
internal sealed class OrderedSink(int length) : TensorMerger.ITensorSink
{
    public float[] Values { get; } = new float[length];

    public long Written { get; private set; }

    public void Write(long offset, ReadOnlySpan<float> values)
    {
        Assert.AreEqual(Written, offset, "chunks written in order");
        values.CopyTo(Values.AsSpan((int)offset));
        Written += values.Length;
    }

    public void Patch(long index, float value) => Values[index] = value;
}

internal static class FloatBits
{
    /// <summary>
    /// The first element whose bits differ, or −1. With <paramref name="anyNaN"/> a NaN equals any NaN (IEEE leaves which
    /// NaN operand's payload and sign an operation returns to the hardware, and the JIT may swap a product's operands).
    /// </summary>
    public static int FirstDifference(float[] expected, float[] actual, bool anyNaN)
    {
        Assert.AreEqual(expected.Length, actual.Length);
        for (int e = 0; e < expected.Length; e++)
        {
            if (BitConverter.SingleToUInt32Bits(expected[e]) != BitConverter.SingleToUInt32Bits(actual[e])
                && !(anyNaN && float.IsNaN(expected[e]) && float.IsNaN(actual[e])))
            {
                Console.WriteLine($"element {e}: expected {expected[e]:R}, got {actual[e]:R}");
                return e;
            }
        }

        return -1;
    }
}
