using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using OrleansPush.Client;
using OrleansPush.Client.Tests;

// Bytes and CPU of Fossil deltas for a state-like topic: a ~2 KB JSON game state (GameStateFeed) in which a few fields
// change per message, as the gateway computes one delta per message (against the previous message) and a client
// applies it. Single-threaded loops after a warm-up; per operation, the median over the rounds of the wall time
// (Stopwatch) and of this thread's CPU time (/proc/thread-self/schedstat, nanoseconds on a CPU: on a shared, loaded
// machine the wall time includes waiting for a core, the CPU time does not).
//   dotnet run -c Release --project tests/FossilBench [-- messages rounds]
var messages = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1_000;
var rounds = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 15;
const int WarmupRounds = 5;
const int PassesPerRound = 40; // a round runs every message this many times: tens of ms, well above the CPU clock's tick

var feed = new GameStateFeed(seed: 2024);
var states = Enumerable.Range(0, messages + 1).Select(_ => feed.Next()).ToArray();
var deltas = new byte[messages][];
long wholeBytes = 0, deltaBytes = 0, sentBytes = 0, smaller = 0;
var sizes = new List<int>(messages);
for (var i = 0; i < messages; i++)
{
    deltas[i] = FossilDelta.Create(states[i], states[i + 1]);
    if (!FossilDelta.Apply(states[i], deltas[i]).AsSpan().SequenceEqual(states[i + 1]))
    {
        throw new InvalidOperationException($"message {i}: the delta does not rebuild the state");
    }

    wholeBytes += states[i + 1].Length;
    deltaBytes += deltas[i].Length;
    sizes.Add(deltas[i].Length);
    var isSmaller = FossilDelta.TryCreateSmaller(states[i], states[i + 1], out var sent);
    smaller += isSmaller ? 1 : 0;
    sentBytes += isSmaller ? sent!.Length : states[i + 1].Length;
}

sizes.Sort();
Console.WriteLine($"messages: {messages}, state size: mean {wholeBytes / (double)messages:0} B (min {states.Min(s => s.Length)}, max {states.Max(s => s.Length)})");
Console.WriteLine($"delta size: mean {deltaBytes / (double)messages:0.0} B, median {sizes[messages / 2]} B, p99 {sizes[(int)(messages * 0.99)]} B, max {sizes[^1]} B");
Console.WriteLine($"bytes on the wire (payload only): whole {wholeBytes}, with deltas {sentBytes} ({100.0 * sentBytes / wholeBytes:0.0}%, {smaller} of {messages} sent as deltas)");

// DESIGN.md's wire form: a msg frame carries "text" (the JSON as a string) or "delta" (each delta byte as the char
// U+0000-U+00FF), both JSON-escaped; how much escaping costs depends on the gateway's encoder.
foreach (var (encoderName, encoder) in new[] { ("relaxed", JavaScriptEncoder.UnsafeRelaxedJsonEscaping), ("default", JavaScriptEncoder.Default) })
{
    long text = 0, delta = 0;
    for (var i = 0; i < messages; i++)
    {
        text += JsonEncodedText.Encode(Encoding.UTF8.GetString(states[i + 1]), encoder).EncodedUtf8Bytes.Length + 2;
        delta += JsonEncodedText.Encode(Encoding.Latin1.GetString(deltas[i]), encoder).EncodedUtf8Bytes.Length + 2;
    }

    Console.WriteLine($"as JSON strings ({encoderName} escaping): \"text\" mean {text / (double)messages:0} B, \"delta\" mean {delta / (double)messages:0.0} B ({100.0 * delta / text:0.0}%)");
}

Measure("Create (gateway, one per message)", i => FossilDelta.Create(states[i], states[i + 1]).Length);
Measure("TryCreateSmaller (gateway)", i => FossilDelta.TryCreateSmaller(states[i], states[i + 1], out var d) ? d.Length : 0);
Measure("Apply (client)", i => FossilDelta.Apply(states[i], deltas[i]).Length);

void Measure(string name, Func<int, int> run)
{
    var perOp = new List<double>();
    var cpuPerOp = new List<double>();
    long sink = 0, allocated = 0;
    for (var round = 0; round < WarmupRounds + rounds; round++)
    {
        var cpu = ThreadCpuNanoseconds();
        var before = GC.GetAllocatedBytesForCurrentThread();
        var clock = Stopwatch.StartNew();
        for (var pass = 0; pass < PassesPerRound; pass++)
        {
            for (var i = 0; i < messages; i++)
            {
                sink += run(i);
            }
        }

        clock.Stop();
        if (round >= WarmupRounds)
        {
            var ops = (double)messages * PassesPerRound;
            perOp.Add(clock.Elapsed.TotalMicroseconds / ops);
            cpuPerOp.Add((ThreadCpuNanoseconds() - cpu) / 1000.0 / ops);
            allocated += GC.GetAllocatedBytesForCurrentThread() - before;
        }
    }

    perOp.Sort();
    cpuPerOp.Sort();
    Console.WriteLine($"{name}: median {perOp[rounds / 2]:0.00} µs/op wall (best round {perOp[0]:0.00}, worst {perOp[^1]:0.00}), " +
        $"{cpuPerOp[rounds / 2]:0.00} µs/op thread CPU, {allocated / ((double)messages * rounds * PassesPerRound):0} B allocated/op [checksum {sink % 1000}]");
}

static long ThreadCpuNanoseconds() =>
    long.Parse(File.ReadAllText("/proc/thread-self/schedstat").Split(' ')[0], CultureInfo.InvariantCulture);
