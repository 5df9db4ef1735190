namespace Recycling.Onnx;

/// <summary>Base of every error the toolkit reports to a user: the message says what is wrong and where.</summary>
public class RecyclingException : Exception
{
    public RecyclingException(string message) : base(message) { }

    public RecyclingException(string message, Exception? inner) : base(message, inner) { }
}

/// <summary>A file that is not a valid ONNX model (or tensor, or external-data file): names the file and the problem.</summary>
public sealed class OnnxFormatException : RecyclingException
{
    public OnnxFormatException(string file, string problem, Exception? inner = null)
        : base($"{MessageText.Path(file)}: {problem}", inner)
    {
        File = file;
        Problem = problem;
    }

    public string File { get; }

    public string Problem { get; }
}
