using System.Text;

namespace Recycling.Onnx.Merging;

/// <summary>
/// Stable 64-bit ids for aligned parameters, used to key DARE's drop masks. The id must not change between runs,
/// processes or machines, so it is FNV-1a over the UTF-8 bytes of the parameter's canonical key (never
/// <see cref="string.GetHashCode()"/>, which is randomised per process).
/// </summary>
internal static class TensorId
{
    private const ulong OffsetBasis = 0xCBF2_9CE4_8422_2325UL;
    private const ulong Prime = 0x0000_0100_0000_01B3UL;

    public static ulong FromKey(string canonicalKey)
    {
        ArgumentNullException.ThrowIfNull(canonicalKey);
        ulong hash = OffsetBasis;
        foreach (byte b in Encoding.UTF8.GetBytes(canonicalKey))
        {
            hash = (hash ^ b) * Prime;
        }

        return hash;
    }
}
