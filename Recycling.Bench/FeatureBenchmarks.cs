using BenchmarkDotNet.Attributes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Onnx;
using Recycling.MLNet.Data;
using Recycling.MLNet.Inference;

namespace Recycling.Bench;

/// <summary>
/// Feature extraction from zoo models (a CNN and a ViT target fine-tuning, the "features" output) over the zoo's val split:
/// Recycling's batched ONNX Runtime path against ML.NET's ApplyOnnxModel, which scores one row at a time. Same model,
/// same intra-op threads (2), sessions created in setup, one pass over the same images per operation;
/// images/s = images / mean time.
/// </summary>
[MemoryDiagnoser]
public class FeatureBenchmarks
{
    private const int Threads = 2;
    private Dataset _data = null!;
    private string _model = "";
    private MLContext _ml = null!;
    private IDataView _rows = null!;
    private ITransformer _mlnet = null!;
    private OnnxScorer _scorer = null!;

    [Params("cnn_target_diwa00", "vit_target_diwa00")]
    public string Model { get; set; } = "";

    [Params(32, 256)]
    public int BatchSize { get; set; } = 32;

    public int Images => _data.Count;

    [GlobalSetup]
    public void Setup()
    {
        var zoo = ModelZoo.FindDefault() ?? ModelZoo.FindDefault(AppContext.BaseDirectory)
            ?? throw new InvalidOperationException("models/zoo.json not found from the current directory upwards: run from the repository");
        var opened = ModelZoo.Open(zoo);
        _data = opened.Split("val");
        _model = opened.Model(Model).Path;
        _ml = new MLContext(seed: 0);
        int size = _data.SampleSize;
        var rows = Enumerable.Range(0, _data.Count).Select(i => new ImageRow { Input = _data.Sample(i).ToArray() }).ToList();
        var schema = SchemaDefinition.Create(typeof(ImageRow));
        schema["input"].ColumnType = new VectorDataViewType(NumberDataViewType.Single, size);
        _rows = _ml.Data.LoadFromEnumerable(rows, schema);
        _mlnet = _ml.Transforms.ApplyOnnxModel(new OnnxOptions
        {
            ModelFile = _model,
            InputColumns = ["input"],
            OutputColumns = ["features"],
            ShapeDictionary = new Dictionary<string, int[]> { ["input"] = [1, .. _data.SampleShape] },
            IntraOpNumThreads = Threads,
            InterOpNumThreads = 1,
        }).Fit(_rows);
        _scorer = OnnxScorer.Open(_model, new ScoringOptions { Threads = Threads, BatchSize = BatchSize });
    }

    [GlobalCleanup]
    public void Cleanup() => _scorer.Dispose();

    [Benchmark(Baseline = true, Description = "ML.NET ApplyOnnxModel (row at a time)")]
    public float MlNetRowAtATime()
    {
        float sum = 0;
        foreach (var row in _mlnet.Transform(_rows).GetColumn<float[]>("features"))
        {
            sum += row[0];
        }

        return sum;
    }

    [Benchmark(Description = "Recycling OnnxScorer (batched)")]
    public float Batched()
    {
        var features = _scorer.Run(_data, "features");
        float sum = 0;
        for (int r = 0; r < features.Rows; r++)
        {
            sum += features.Row(r)[0];
        }

        return sum;
    }

    public sealed class ImageRow
    {
        [ColumnName("input")]
        public float[] Input { get; set; } = [];
    }
}
