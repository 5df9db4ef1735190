using Recycling.Onnx.Merging;

namespace Recycling.Tests.Merging;

[TestClass]
public sealed class DareMaskTests
{
    public static IEnumerable<object[]> Paths()
    {
        yield return ["scalar"];
        if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)
        {
            yield return ["vector256"];
        }

        if (System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated)
        {
            yield return ["vector512"];
        }
    }

    [TestMethod]
    [DynamicData(nameof(Paths))]
    public void EverySimdPathDrawsTheScalarMaskElementByElement(string path)
    {
        var mask = new DareMask(seed: 7, tensorId: 0xABCDEF, dropRate: 0.9);
        foreach (var (model, start, length) in new[] { (0, 0L, 1000), (1, 3L, 37), (3, (1L << 33) + 5, 1024), (2, 17L, 15) })
        {
            var key = mask.KeyFor(model);
            var row = new float[length];
            var done = path switch
            {
                "vector512" => DareMask.FillScales512(key, start, mask.DropThreshold, mask.Scale, row),
                "vector256" => DareMask.FillScales256(key, start, mask.DropThreshold, mask.Scale, row),
                _ => 0,
            };
            DareMask.FillScalesScalar(key, start + done, mask.DropThreshold, mask.Scale, row.AsSpan(done));
            var kept = 0;
            for (var j = 0; j < length; j++)
            {
                var expected = DareMask.Keeps(key, start + j, mask.DropThreshold) ? mask.Scale : 0f;
                Assert.AreEqual(expected, row[j], $"{path}: model {model}, element {start + j}");
                kept += row[j] != 0 ? 1 : 0;
            }

            if (length >= 1000)
            {
                Assert.IsTrue(kept is > 50 and < 160, $"{kept} of {length} kept at p = 0.9"); // binomial(1000, 0.1): mean 100, sd 9.5
            }
        }
    }
}
