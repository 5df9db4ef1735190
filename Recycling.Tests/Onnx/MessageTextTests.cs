using Recycling.Onnx;

namespace Recycling.Tests.Onnx;

[TestClass]
public sealed class MessageTextTests
{
    /// <summary>Counts in reports and progress lines: singular for one only ("1 target", not "1 targets"; "0 targets").</summary>
    [TestMethod]
    [DataRow(0, "target", null, "0 targets")]
    [DataRow(1, "target", null, "1 target")]
    [DataRow(3, "target", null, "3 targets")]
    [DataRow(1, "auxiliary body", "auxiliary bodies", "1 auxiliary body")]
    [DataRow(2, "auxiliary body", "auxiliary bodies", "2 auxiliary bodies")]
    [DataRow(12345, "run", null, "12345 runs")]
    public void CountsTakeTheSingularForOneOnly(int count, string noun, string? plural, string expected) =>
        Assert.AreEqual(expected, MessageText.Count(count, noun, plural));
}
