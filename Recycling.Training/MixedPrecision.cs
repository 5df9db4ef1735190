using Recycling.Onnx;
using static TorchSharp.torch;

namespace Recycling.Training;

/// <summary>
/// Training of float16 and bfloat16 initializers the standard mixed-precision way: each is a float32 master parameter
/// (float32 and float64 ones are their own masters), the graph reads the master cast to the stored type, so the
/// forward computes in the model's own types as ONNX Runtime does and autograd flows back through the cast; the
/// optimizer updates the master in float32, and the written model stores it rounded to the stored type.
/// </summary>
internal static class MixedPrecision
{
    /// <summary>The master of an initializer: float16/bfloat16 widened to float32 (and <paramref name="stored"/> disposed), else itself.</summary>
    public static Tensor Master(Tensor stored)
    {
        if (stored.dtype is not (ScalarType.Float16 or ScalarType.BFloat16))
        {
            return stored;
        }

        using (stored)
        {
            return stored.to(ScalarType.Float32);
        }
    }

    /// <summary>The ONNX element type of a floating-point tensor type.</summary>
    public static OnnxDataType OnnxType(ScalarType type) => type switch
    {
        ScalarType.Float32 => OnnxDataType.Float,
        ScalarType.Float64 => OnnxDataType.Double,
        ScalarType.Float16 => OnnxDataType.Float16,
        ScalarType.BFloat16 => OnnxDataType.BFloat16,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "not a floating-point type"),
    };

    /// <summary>The values of <paramref name="value"/> in <paramref name="type"/> as little-endian bytes; LibTorch's
    /// narrowing casts round to nearest even (float16 and bfloat16 alike).</summary>
    /// <exception cref="RecyclingException">a finite value beyond the type's range (it would be stored as infinity).</exception>
    public static byte[] Bytes(Tensor value, ScalarType type, string name)
    {
        using var cast = value.detach().to(type);
        using (var finite = cast.isfinite())
        using (var wasFinite = value.isfinite())
        {
            var overflows = wasFinite.logical_and(finite.logical_not()).sum().item<long>();
            if (overflows > 0)
            {
                throw new RecyclingException($"tensor '{name}': {overflows} trained value(s) exceed the {type} range the model stores it in and would become infinity; nothing was written (lower --lr or clip gradients)");
            }
        }

        using var cpu = cast.cpu().contiguous();
        return cpu.bytes.ToArray();
    }

    /// <summary>
    /// The relative gap accepted between ONNX Runtime on the written model and the trained program: 1e-4 when every
    /// float the graph reads is float32 or float64, else a few units of the narrowest type's rounding (2^-11 for
    /// float16, 2^-8 for bfloat16), because ONNX Runtime's CPU runs most float16 ops in float32 between inserted Casts
    /// and so rounds fewer intermediate values than the program, which rounds every op's result.
    /// </summary>
    public static double OnnxRuntimeTolerance(OnnxProgram program)
    {
        var types = program.Inputs.Select(i => i.Type).Concat(program.StoredTypes.Values).Concat(program.Buffers.Values.Select(b => b.dtype)).ToHashSet();
        return types.Contains(ScalarType.BFloat16) ? 8 * Math.Pow(2, -8)
            : types.Contains(ScalarType.Float16) ? 16 * Math.Pow(2, -11)
            : FineTuner.OnnxRuntimeTolerance;
    }
}
