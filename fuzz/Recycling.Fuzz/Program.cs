using System.Diagnostics;
using SharpFuzz;

namespace Recycling.Fuzz;

/// <summary>
/// The fuzzing harness, one target per reader of untrusted files: onnx (models), npy, npz, csv (CSV/TSV data) and json
/// (certificate files and zoo manifests). Without a mode it serves AFL++ through SharpFuzz (input on stdin).
/// <c>--replay PATH...</c> runs files or folders of inputs once each (seed smoke run, crash triage);
/// <c>--mutate N PATH...</c> runs N inputs mutated from the given seeds (byte flips, interesting values, inserts,
/// deletes, copies, splices; fixed random seed) where AFL++ is not at hand. Both exit non-zero on a crash.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var target = "onnx";
        if (args.Length >= 2 && args[0] == "--target")
        {
            target = args[1];
            args = args[2..];
        }

        var fuzzTarget = FuzzTarget.Create(target);
        if (fuzzTarget is null || (args.Length > 0 && args[0] is not ("--replay" or "--mutate")) || (args.Length > 0 && args[0] == "--mutate" && (args.Length < 3 || !long.TryParse(args[1], out _))))
        {
            Console.Error.WriteLine("usage: Recycling.Fuzz [--target onnx|npy|npz|csv|json]                    (under afl-fuzz, input on stdin)");
            Console.Error.WriteLine("       Recycling.Fuzz [--target T] --replay PATH...                     (files or folders of inputs)");
            Console.Error.WriteLine("       Recycling.Fuzz [--target T] --mutate EXECUTIONS SEED_PATH...     (built-in mutation fuzzing)");
            return 2;
        }

        if (args.Length == 0)
        {
            Fuzzer.OutOfProcess.Run(input => fuzzTarget.Run(input));
            return 0;
        }

        var paths = args[args[0] == "--mutate" ? 2.. : 1..];
        if (paths.FirstOrDefault(p => !File.Exists(p) && !Directory.Exists(p)) is { } missing)
        {
            Console.Error.WriteLine($"no such file or folder: {missing}");
            return 2;
        }

        var files = paths
            .SelectMany(p => Directory.Exists(p) ? Directory.EnumerateFiles(p, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal) : (IEnumerable<string>)[p])
            .ToList();
        return args[0] == "--replay" ? Replay(fuzzTarget, files) : Mutate(fuzzTarget, long.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture), files);
    }

    private static int Replay(FuzzTarget target, IReadOnlyList<string> files)
    {
        int accepted = 0, rejected = 0;
        foreach (var file in files)
        {
            try
            {
                if (target.Run(new MemoryStream(File.ReadAllBytes(file))))
                {
                    accepted++;
                }
                else
                {
                    rejected++;
                }
            }
            catch (Exception e)
            {
                Console.Error.WriteLine($"crash on {file}: {e}");
                return 1;
            }
        }

        Console.WriteLine($"{accepted + rejected} inputs: {accepted} read, {rejected} rejected with {target.Expected}, 0 crashes");
        return 0;
    }

    private static int Mutate(FuzzTarget target, long executions, IReadOnlyList<string> seedFiles)
    {
        var seeds = seedFiles.Select(File.ReadAllBytes).Where(s => s.Length > 0).ToList();
        if (seeds.Count == 0)
        {
            Console.Error.WriteLine("no seeds");
            return 2;
        }

        var random = new Random(20261130);
        var findings = Directory.CreateTempSubdirectory("recycling-fuzz-findings-").FullName;
        int accepted = 0, rejected = 0, crashes = 0;
        var slowest = TimeSpan.Zero;
        var clock = Stopwatch.StartNew();
        for (long i = 0; i < executions; i++)
        {
            var input = Mutator.Mutate(seeds[random.Next(seeds.Count)], seeds, random);
            var one = Stopwatch.StartNew();
            try
            {
                if (target.Run(new MemoryStream(input)))
                {
                    accepted++;
                }
                else
                {
                    rejected++;
                }
            }
            catch (Exception e)
            {
                var file = Path.Combine(findings, $"crash-{crashes++:D4}");
                File.WriteAllBytes(file, input);
                Console.Error.WriteLine($"crash ({file}): {e.GetType().Name}: {e.Message.Split('\n')[0]}");
            }

            slowest = one.Elapsed > slowest ? one.Elapsed : slowest;
        }

        Console.WriteLine($"{target.Name}: {executions} executions in {clock.Elapsed.TotalSeconds:F0} s: {accepted} read, {rejected} rejected with {target.Expected}, {crashes} crashes (slowest input {slowest.TotalMilliseconds:F0} ms)");
        if (crashes == 0)
        {
            Directory.Delete(findings);
        }

        return crashes == 0 ? 0 : 1;
    }
}

/// <summary>Byte-level mutations in the style of AFL's havoc stage.</summary>
internal static class Mutator
{
    private static readonly byte[] Interesting = [0, 1, 0x7F, 0x80, 0xFF, (byte)'"', (byte)',', (byte)'\t', (byte)'\n', (byte)'-', (byte)'9', (byte)'.', (byte)'e', (byte)'[', (byte)'{', (byte)'}', (byte)'(', (byte)')', (byte)':', (byte)'n'];

    public static byte[] Mutate(byte[] seed, IReadOnlyList<byte[]> all, Random random)
    {
        var data = new List<byte>(seed);
        int rounds = 1 << random.Next(4);
        for (int r = 0; r < rounds; r++)
        {
            int at = data.Count == 0 ? 0 : random.Next(data.Count);
            switch (random.Next(7))
            {
                case 0 when data.Count > 0:
                    data[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1 when data.Count > 0:
                    data[at] = Interesting[random.Next(Interesting.Length)];
                    break;
                case 2:
                    data.InsertRange(at, Enumerable.Range(0, 1 + random.Next(8)).Select(_ => random.Next(3) == 0 ? (byte)random.Next(256) : Interesting[random.Next(Interesting.Length)]));
                    break;
                case 3 when data.Count > 1:
                    data.RemoveRange(at, Math.Min(1 + random.Next(16), data.Count - at));
                    break;
                case 4 when data.Count > 1:
                    int from = random.Next(data.Count);
                    data.InsertRange(at, data.GetRange(from, Math.Min(1 + random.Next(32), data.Count - from)));
                    break;
                case 5:
                    var other = all[random.Next(all.Count)];
                    int start = random.Next(other.Length);
                    data.InsertRange(at, other.Skip(start).Take(1 + random.Next(64)));
                    break;
                case 6 when data.Count > 4:
                    // A little-endian integer field set to an edge value (sizes, offsets, dimensions).
                    int pos = Math.Min(at, data.Count - 4);
                    var edge = BitConverter.GetBytes(random.Next(4) switch { 0 => int.MaxValue, 1 => -1, 2 => 0, _ => random.Next() });
                    for (int k = 0; k < 4; k++)
                    {
                        data[pos + k] = edge[k];
                    }

                    break;
            }
        }

        return [.. data];
    }
}
