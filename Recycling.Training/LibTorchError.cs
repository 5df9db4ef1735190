using System.Runtime.InteropServices;
using Recycling.Onnx;

namespace Recycling.Training;

/// <summary>
/// LibTorch's failures as one line. TorchSharp throws them as <see cref="ExternalException"/> whose message is LibTorch's
/// first line followed by its C++ stack ("Exception raised from ... frame #0: ..."): only the first line is for users.
/// </summary>
internal static class LibTorchError
{
    public static string FirstLine(Exception e) => MessageText.OneLine(e.Message.Split('\n')[0].Trim());

    /// <summary>The failure of a fine-tuning of <paramref name="model"/> as one line naming it; null for another kind of exception.</summary>
    public static RecyclingException? InFineTuning(Exception e, string model) => e switch
    {
        ExternalException => new RecyclingException($"{MessageText.Path(model)}: LibTorch failed while fine-tuning: {FirstLine(e)}", e),
        RecyclingException { InnerException: ExternalException } => new RecyclingException($"{MessageText.Path(model)}: {e.Message}", e),
        _ => null,
    };
}
