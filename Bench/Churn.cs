using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;

namespace OrleansPush.Bench;

/// <summary>What the churn scenario does (see <see cref="Churn"/>).</summary>
/// <param name="Minutes">How long topics are created.</param>
/// <param name="TopicsPerSecond">New topics a second (the target; the report says what was reached).</param>
/// <param name="PublishesPerTopic">Messages published to each new topic.</param>
/// <param name="ConnectionsPerSecond">New connections a second, each subscribed to one of the newest topics for
/// <paramref name="Hold"/>, then closed.</param>
/// <param name="MemoryTopics">Topics created (one ~200-byte message each) to measure memory per live topic.</param>
/// <param name="GcDumps">Where the GC dumps taken at the start, memory, idle and end samples are kept (named after the
/// phase), to compare what the heap holds with <c>dotnet-gcdump report</c>; null: they are deleted.</param>
internal sealed record ChurnSpec(double Minutes, int TopicsPerSecond, int PublishesPerTopic, int ConnectionsPerSecond, TimeSpan Hold, int MemoryTopics,
    TimeSpan ExpiryWait, string Label, string? GcDumps)
{
    /// <summary>How long the memory topics' message stays in history (namespace <c>churnm</c>; declared before
    /// <see cref="ServerArgs"/>, which reads it).</summary>
    public static readonly TimeSpan MemoryHistoryTtl = TimeSpan.FromMinutes(3);

    /// <summary>Lifetimes of the churn's namespace and grains: short, so that the run sees them expire.</summary>
    public static readonly string[] ServerArgs =
    [
        "--OrleansPush:Topics:Namespaces:churn:HistoryTtl=00:00:15", "--OrleansPush:Topics:Namespaces:churn:PositionTtl=00:00:15",
        "--OrleansPush:Topics:Namespaces:churn:Wildcards=true", "--OrleansPush:Routing:Lease=00:00:10", "--OrleansPush:Silo:IdleGrainTimeout=00:00:30",
        // The memory topics' namespace: their history outlives their grains, so a live topic is measured with its grain
        // active and once it idled out.
        $"--OrleansPush:Topics:Namespaces:churnm:HistoryTtl={MemoryHistoryTtl}", "--OrleansPush:Topics:Namespaces:churnm:PositionTtl=00:00:15",
        "--OrleansPush:Topics:Namespaces:churnm:Wildcards=true",
    ];

}

/// <summary>One sample of the system under test.</summary>
/// <param name="Committed">What the GC holds committed (after the last GC): RSS beyond it is not the managed heap.</param>
/// <param name="Live">Bytes of the objects alive in the GC dump taken at this sample (no free space or fragmentation,
/// unlike <paramref name="Heap"/>), or -1 when none was taken.</param>
internal sealed record ChurnSample(double Seconds, string Phase, long Rss, long Heap, long Committed, int Activations, int Handles, double Cores, long Topics, long Connections,
    long Live = -1);

/// <summary>
/// The churn scenario (issue 16): on the embedded node, topics are created continuously, each published to a few times,
/// some subscribed for a few seconds by connections that come and go; then nothing more is created and the run waits for
/// it all to expire. Samples RSS, managed heap (after the last GC), grain activations, open handles and CPU over time, and
/// writes them with plots and the end-against-start figures to <c>results/&lt;date&gt;-churn[-label].md</c>.
/// </summary>
internal static class Churn
{
    private static readonly MediaTypeHeaderValue _json = new("application/json");
    private static readonly string _payload = "{\"v\":\"" + new string('x', 190) + "\"}"; // ~200 bytes, as in the issue

    public static async Task<string> RunAsync(string outDir, ChurnSpec spec)
    {
        SystemUnderTest.ExtraArgs = ChurnSpec.ServerArgs;
        var load = new[] { File.ReadAllText("/proc/loadavg").Trim() };
        await using var sut = await SystemUnderTest.StartAsync("orleanspush");
        await using var orleans = await OrleansPublisher.StartAsync(sut.OrleansGatewayPort!.Value);
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 16 }) { Timeout = TimeSpan.FromSeconds(60) };
        var server = sut.Processes[0];
        var endpoint = sut.Endpoints[0];
        var samples = new List<ChurnSample>();
        var clock = Stopwatch.StartNew();
        var lastCpu = server.CpuTime();
        var lastAt = clock.Elapsed;
        long topics = 0, connections = 0;
        var run = Guid.NewGuid().ToString("N")[..6];

        async Task<ChurnSample> SampleAsync(string phase)
        {
            var liveBytes = -1L;
            if (phase is "start" or "memory" or "end" or "idle")
            {
                // A server at rest collects nothing: the heap after the last GC, and the RSS, would show an old peak.
                liveBytes = await ForceGcAsync(server.Pid, spec.GcDumps is null ? null : Path.Combine(spec.GcDumps, $"{phase}.gcdump"));
            }

            var cpu = server.CpuTime();
            var at = clock.Elapsed;
            var cores = (cpu - lastCpu).TotalSeconds / Math.Max(0.001, (at - lastAt).TotalSeconds);
            (lastCpu, lastAt) = (cpu, at);
            var stats = await orleans.Client.GetGrain<IManagementGrain>(0).GetSimpleGrainStatistics();
            var (heap, committed) = await HeapAsync(http, endpoint);
            var sample = new ChurnSample(at.TotalSeconds, phase, server.RssBytes(), heap, committed,
                stats.Where(s => s.GrainType.StartsWith("OrleansPush.Grains.", StringComparison.Ordinal)).Sum(s => s.ActivationCount),
                Directory.GetFiles($"/proc/{server.Pid}/fd").Length, cores, Interlocked.Read(ref topics), Interlocked.Read(ref connections), liveBytes);
            samples.Add(sample);
            Console.WriteLine($"  churn {sample.Seconds,6:F0} s {phase,-8} rss {sample.Rss / 1048576.0,7:F1} MiB heap {sample.Heap / 1048576.0,7:F1} MiB committed {sample.Committed / 1048576.0,7:F1} MiB " +
                $"activations {sample.Activations,7} handles {sample.Handles,5} cores {cores,4:F2} topics {sample.Topics}");
            return sample;
        }

        // Settle: compiled code, pools and the first grains are there before the start is taken.
        await PublishTopicsAsync(http, endpoint, Enumerable.Range(0, 500).Select(i => $"churn:w-{run}-{i}").ToArray(), 1);
        await WaitExpiredAsync(SampleAsync, spec.ExpiryWait, null);
        var start = await SampleAsync("start");

        // Memory per live topic: that many topics with one message each, measured while their grains are active and
        // again once they idled out (their history still live).
        var memory = Stopwatch.StartNew();
        await PublishTopicsAsync(http, endpoint, Enumerable.Range(0, spec.MemoryTopics).Select(i => $"churnm:m-{run}-{i}").ToArray(), 1);
        var live = await SampleAsync("memory");
        var memorySeconds = memory.Elapsed.TotalSeconds;
        await WaitExpiredAsync(SampleAsync, spec.ExpiryWait, start);
        var rested = await SampleAsync("idle");
        var memoryForgotten = Stopwatch.StartNew();

        // The churn itself, sampled every 5 s (30 s in runs of an hour or more).
        var every = TimeSpan.FromSeconds(spec.Minutes >= 60 ? 30 : 5);
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(spec.Minutes));
        var cpuBefore = server.CpuTime();
        var loaderCpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        var churnClock = Stopwatch.StartNew();
        var creating = Task.Run(() => CreateAsync(http, endpoint, run, spec, () => Interlocked.Increment(ref connections), n => Interlocked.Add(ref topics, n), stop.Token));
        while (!creating.IsCompleted)
        {
            await Task.WhenAny(creating, Task.Delay(every));
            await SampleAsync("churn");
        }

        await creating;
        var churnSeconds = churnClock.Elapsed.TotalSeconds;
        var churnCpu = (server.CpuTime() - cpuBefore).TotalSeconds;
        var loaderCpu = (Process.GetCurrentProcess().TotalProcessorTime - loaderCpuBefore).TotalSeconds;
        var churned = samples.Where(s => s.Phase == "churn").ToList();

        // Nothing more is created: everything expires.
        var expiry = Stopwatch.StartNew();
        await WaitExpiredAsync(SampleAsync, spec.ExpiryWait, start);
        var expirySeconds = expiry.Elapsed.TotalSeconds;

        // The store forgets a topic HistoryTtl + PositionTtl after its last publish, at its next sweep (a quarter of that);
        // the silo's cached grain locations lapse LocationCacheTtl (1 min) after their last use, at the next sweep (one
        // more TTL at most); and the server gives freed memory back once it has been quiet for one of its 30 s checks
        // (IdleMemoryTrim): all within 150 s of the last publish.
        // The memory topics go HistoryTtl + PositionTtl after they were published, at the store's next sweep.
        var forgotten = Max(TimeSpan.FromSeconds(150) - expiry.Elapsed, ChurnSpec.MemoryHistoryTtl + TimeSpan.FromSeconds(15 + 10) - memoryForgotten.Elapsed);
        var waitEnd = Stopwatch.StartNew();
        while (waitEnd.Elapsed < forgotten)
        {
            await Task.Delay(Min(TimeSpan.FromSeconds(5), forgotten - waitEnd.Elapsed));
            await SampleAsync("expiry");
        }

        var end = await SampleAsync("end");
        load = [load[0], File.ReadAllText("/proc/loadavg").Trim()];

        var md = Markdown(spec, samples, start, live, memorySeconds, rested, end, churnSeconds, churnCpu, loaderCpu, churned, expirySeconds, Interlocked.Read(ref topics), Interlocked.Read(ref connections), load);
        Directory.CreateDirectory(outDir);
        var file = Path.Combine(outDir, $"{DateTime.Now:yyyy-MM-dd}-churn{(spec.Label.Length > 0 ? "-" + spec.Label : "")}.md");
        File.WriteAllText(file, md);
        Console.WriteLine($"wrote {file}");
        return md;
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    /// <summary>dotnet-gcdump (<c>dotnet tool install -g dotnet-gcdump</c>), or null when it is not installed.</summary>
    private static readonly string? GcTool = new[] { Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".dotnet", "tools", "dotnet-gcdump") }
        .Concat((Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "dotnet-gcdump"))).FirstOrDefault(File.Exists);

    /// <summary>Forces a full, compacting collection in the server (collecting a GC dump does), then waits a little for
    /// the freed memory to be given back. The dump is kept at <paramref name="keep"/> when that is given. Returns the
    /// bytes of the objects alive in the dump (its report's first line), or -1 without the tool.</summary>
    private static async Task<long> ForceGcAsync(int pid, string? keep)
    {
        if (GcTool is null)
        {
            return -1;
        }

        var dump = Path.Combine(Path.GetTempPath(), $"churn-{pid}.gcdump");
        await RunGcToolAsync("collect", "-p", pid.ToString(CultureInfo.InvariantCulture), "-o", dump);
        var report = await RunGcToolAsync("report", dump);
        var first = report.Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault(l => l.Contains("GC Heap bytes", StringComparison.Ordinal));
        var live = first is null ? -1 : long.Parse(first.Trim().Split(' ')[0], NumberStyles.AllowThousands, CultureInfo.InvariantCulture);
        if (keep is null)
        {
            File.Delete(dump);
        }
        else
        {
            Directory.CreateDirectory(Path.GetDirectoryName(keep)!);
            File.Move(dump, keep, overwrite: true);
        }

        await Task.Delay(TimeSpan.FromSeconds(5));
        return live;
    }

    /// <summary>Runs dotnet-gcdump with <paramref name="args"/> (at most two minutes) and returns what it printed.</summary>
    private static async Task<string> RunGcToolAsync(params string[] args)
    {
        using var tool = Process.Start(new ProcessStartInfo(GcTool!, args)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var output = tool.StandardOutput.ReadToEndAsync(timeout.Token);
        await Task.WhenAll(output, tool.StandardError.ReadToEndAsync(timeout.Token), tool.WaitForExitAsync(timeout.Token));
        return await output;
    }

    /// <summary>Samples until activations are back to within 1 % of the start (or, without a start, until they stop
    /// falling), bounded by <paramref name="wait"/>.</summary>
    private static async Task<ChurnSample> WaitExpiredAsync(Func<string, Task<ChurnSample>> sample, TimeSpan wait, ChurnSample? start)
    {
        var deadline = DateTime.UtcNow + wait;
        var previous = int.MaxValue;
        while (true)
        {
            await Task.Delay(TimeSpan.FromSeconds(5));
            var now = await sample("expiry");
            var done = start is null ? now.Activations >= previous && now.Activations <= 16 : now.Activations <= start.Activations + Math.Max(1, start.Activations / 100);
            if (done || DateTime.UtcNow >= deadline)
            {
                return now;
            }

            previous = now.Activations;
        }
    }

    /// <summary>Creates topics at the spec's rate (each published to a few times, 500 items a request) and opens
    /// connections that subscribe to one of the newest topics and close after a while, until stopped.</summary>
    private static async Task CreateAsync(HttpClient http, string endpoint, string run, ChurnSpec spec, Action connected, Action<long> created, CancellationToken stop)
    {
        var holding = new List<Task>();
        long next = 0;
        var tick = Stopwatch.StartNew();
        var second = 0;
        while (!stop.IsCancellationRequested)
        {
            var names = Enumerable.Range(0, spec.TopicsPerSecond).Select(_ => $"churn:c-{run}-{next++}").ToArray();
            for (var c = 0; c < spec.ConnectionsPerSecond; c++)
            {
                var topic = names[Random.Shared.Next(names.Length)];
                holding.Add(HoldAsync(endpoint, topic, spec.Hold, connected));
            }

            // The publishes of this second: behind schedule, the next second starts at once (the rate reached is reported).
            await PublishTopicsAsync(http, endpoint, names, spec.PublishesPerTopic);
            created(names.Length);
            holding.RemoveAll(t => t.IsCompleted);
            second++;
            var due = TimeSpan.FromSeconds(second) - tick.Elapsed;
            if (due > TimeSpan.Zero)
            {
                try
                {
                    await Task.Delay(due, stop);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }

        await Task.WhenAll(holding);
    }

    private static async Task HoldAsync(string endpoint, string topic, TimeSpan hold, Action connected)
    {
        var subscriber = new RawSubscriber(new LoadStats(), Loader.Invoker(0));
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await subscriber.ConnectAsync(endpoint, topic, null, 0, timeout.Token);
            connected();
            await Task.Delay(hold);
        }
        catch (Exception e) when (e is OperationCanceledException or System.Net.WebSockets.WebSocketException or InvalidOperationException or HttpRequestException)
        {
            // counted as not connected
        }
        finally
        {
            await subscriber.DisposeAsync();
        }
    }

    /// <summary>Publishes <paramref name="times"/> messages to each topic, 500 items a request, 8 requests at a time.</summary>
    private static async Task PublishTopicsAsync(HttpClient http, string endpoint, string[] topics, int times)
    {
        var items = topics.SelectMany(t => Enumerable.Repeat(t, times)).ToArray();
        await Parallel.ForEachAsync(items.Chunk(500), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (chunk, ct) =>
        {
            var body = new StringBuilder("[");
            foreach (var topic in chunk)
            {
                body.Append(body.Length > 1 ? "," : "").Append("{\"topic\":\"").Append(topic).Append("\",\"data\":").Append(_payload).Append('}');
            }

            using var content = new StringContent(body.Append(']').ToString(), Encoding.UTF8);
            content.Headers.ContentType = _json;
            using var response = await http.PostAsync(endpoint + "/api/publish", content, ct);
            response.EnsureSuccessStatusCode();
        });
    }

    /// <summary>The managed heap after the last collection (the sum over generations of the gateway's
    /// <c>dotnet_gc_last_collection_heap_size_bytes</c>) and what the GC had committed then.</summary>
    private static async Task<(long Heap, long Committed)> HeapAsync(HttpClient http, string endpoint)
    {
        var lines = (await http.GetStringAsync(endpoint + "/metrics")).Split('\n');
        long Sum(string metric) => (long)lines.Where(l => l.StartsWith(metric, StringComparison.Ordinal))
            .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture));
        return (Sum("dotnet_gc_last_collection_heap_size_bytes"), Sum("dotnet_gc_last_collection_memory_committed_size_bytes"));
    }

    /// <summary>Server CPU (µs) per topic created over the given churn samples: each sample's cores times the time since
    /// the sample before it, over the topics created in that time.</summary>
    private static double CpuPerTopic(List<ChurnSample> all, IEnumerable<ChurnSample> some)
    {
        double cpu = 0, created = 0;
        foreach (var s in some)
        {
            var before = all[all.IndexOf(s) - 1];
            cpu += s.Cores * (s.Seconds - before.Seconds);
            created += s.Topics - before.Topics;
        }

        return cpu * 1e6 / Math.Max(1, created);
    }

    private static string Markdown(ChurnSpec spec, List<ChurnSample> samples, ChurnSample start, ChurnSample live, double memorySeconds, ChurnSample rested,
        ChurnSample end, double churnSeconds, double churnCpu, double loaderCpu, List<ChurnSample> churned, double expirySeconds, long topics, long connections, string[] load)
    {
        static string MiB(long b) => (b / 1048576.0).ToString("F1", CultureInfo.InvariantCulture);
        var md = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        md.AppendLine(inv, $"# OrleansPush churn, {DateTime.Now:yyyy-MM-dd HH:mm}{(spec.Label.Length > 0 ? " (" + spec.Label + ")" : "")}");
        md.AppendLine();
        md.AppendLine(inv, $"Embedded node (one process), {Environment.ProcessorCount} cores shared with other work: load average at start `{load[0]}`, at end `{load[^1]}`. " +
            $"Namespace `churn`: HistoryTtl 15 s, PositionTtl 15 s, wildcards on; the memory topics in `churnm`: HistoryTtl 3 min, PositionTtl 15 s, wildcards on; Routing:Lease 10 s; Silo:IdleGrainTimeout 30 s. " +
            $"Heap and RSS marked *after a full GC* were taken after `dotnet-gcdump collect` forced one in the server {(GcTool is null ? "(dotnet-gcdump was not installed: no forced GC in this run)" : "")}. " +
            $"Asked: {spec.TopicsPerSecond:N0} new topics/s for {spec.Minutes:0.#} min, {spec.PublishesPerTopic} messages (~200 bytes) each, " +
            $"{spec.ConnectionsPerSecond} connections/s each subscribed to one new topic for {spec.Hold.TotalSeconds:0} s.");
        md.AppendLine();
        md.AppendLine("## Figures");
        md.AppendLine();
        md.AppendLine("| figure | value |");
        md.AppendLine("|---|---|");
        md.AppendLine(inv, $"| topics created | {topics:N0} in {churnSeconds:F0} s ({topics / churnSeconds:N0}/s) |");
        md.AppendLine(inv, $"| connections opened and closed | {connections:N0} |");
        md.AppendLine(inv, $"| CPU per created topic ({spec.PublishesPerTopic} publishes) | {churnCpu * 1e6 / Math.Max(1, topics):N0} µs ({churnCpu / churnSeconds:F2} cores) |");
        md.AppendLine(inv, $"| loader CPU during the churn (this process: publishing, connections, sampling) | {loaderCpu * 1e6 / Math.Max(1, topics):N0} µs per topic ({loaderCpu / churnSeconds:F2} cores) |");
        if (churned.Count >= 3)
        {
            var third = Math.Max(1, churned.Count / 3);
            md.AppendLine(inv, $"| CPU, first third of the churn against the last | {churned.Take(third).Average(s => s.Cores):F2} → {churned.TakeLast(third).Average(s => s.Cores):F2} cores |");
            var (first, last) = (CpuPerTopic(samples, churned.Take(third)), CpuPerTopic(samples, churned.TakeLast(third)));
            md.AppendLine(inv, $"| CPU per created topic, first third of the churn against the last | {first:N0} → {last:N0} µs ({(last - first) / first:+0%;-0%}) |");
        }

        md.AppendLine(inv, $"| memory per live topic, one message in history (managed heap after a full GC, grains active) | {(live.Heap - start.Heap) / (double)spec.MemoryTopics:N0} bytes |");
        if (start.Live >= 0 && live.Live >= 0 && rested.Live >= 0)
        {
            md.AppendLine(inv, $"| memory per live topic, one message in history (objects alive in the GC dumps; no free space), grains active → once they idled out | {(live.Live - start.Live) / (double)spec.MemoryTopics:N0} → {(rested.Live - start.Live) / (double)spec.MemoryTopics:N0} bytes |");
        }

        md.AppendLine(inv, $"| memory per live topic, one message in history (RSS) | {(live.Rss - start.Rss) / (double)spec.MemoryTopics:N0} bytes ({spec.MemoryTopics:N0} topics, created in {memorySeconds:F0} s) |");
        md.AppendLine(inv, $"| RSS start → peak → end | {MiB(start.Rss)} → {MiB(samples.Max(s => s.Rss))} → {MiB(end.Rss)} MiB (target: end within max(20 %, 100 MiB) of start: {(end.Rss - start.Rss <= Math.Max(start.Rss / 5, 100L << 20) ? "met" : "not met")}) |");
        md.AppendLine(inv, $"| managed heap start → peak → end | {MiB(start.Heap)} → {MiB(samples.Max(s => s.Heap))} → {MiB(end.Heap)} MiB |");
        if (start.Live >= 0 && end.Live >= 0)
        {
            md.AppendLine(inv, $"| objects alive in the GC dumps, start → end | {MiB(start.Live)} → {MiB(end.Live)} MiB |");
        }

        md.AppendLine(inv, $"| committed by the GC start → peak → end | {MiB(start.Committed)} → {MiB(samples.Max(s => s.Committed))} → {MiB(end.Committed)} MiB |");
        md.AppendLine(inv, $"| grain activations start → peak → end | {start.Activations:N0} → {samples.Max(s => s.Activations):N0} → {end.Activations:N0} (target: within 1 %: {(end.Activations <= start.Activations + Math.Max(1, start.Activations / 100) ? "met" : "not met")}) |");
        md.AppendLine(inv, $"| open handles start → peak → end | {start.Handles} → {samples.Max(s => s.Handles)} → {end.Handles} |");
        md.AppendLine(inv, $"| memory per live topic, one message in history, once its grain idled out (managed heap after a full GC) | {(rested.Heap - start.Heap) / (double)spec.MemoryTopics:N0} bytes (RSS {MiB(rested.Rss)} MiB, heap {MiB(rested.Heap)} MiB, activations {rested.Activations}) |");
        md.AppendLine(inv, $"| expiry after the churn stopped | {expirySeconds:F0} s |");
        md.AppendLine();
        md.AppendLine("## Over time");
        md.AppendLine();
        md.AppendLine("Phases: `expiry` waits, `start`, `memory` (after creating the memory topics), `idle` (their grains deactivated, their history still live), `churn`, `expiry` again, `end`. Samples `start`, `memory`, `idle` and `end` follow a forced full GC. Each plot: time left to right, one column per sample.");
        md.AppendLine();
        Plot(md, "RSS (MiB)", samples, s => s.Rss / 1048576.0);
        Plot(md, "managed heap after the last GC (MiB)", samples, s => s.Heap / 1048576.0);
        Plot(md, "grain activations", samples, s => s.Activations);
        Plot(md, "open handles", samples, s => s.Handles);
        Plot(md, "CPU (cores)", samples, s => s.Cores);
        md.AppendLine("| s | phase | RSS MiB | heap MiB | GC committed MiB | activations | handles | cores | topics created | connections |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var s in samples)
        {
            md.AppendLine(inv, $"| {s.Seconds:F0} | {s.Phase} | {MiB(s.Rss)} | {MiB(s.Heap)} | {MiB(s.Committed)} | {s.Activations} | {s.Handles} | {s.Cores:F2} | {s.Topics} | {s.Connections} |");
        }

        return md.ToString();
    }

    /// <summary>An ASCII plot, 12 rows high, one column per sample (every nth sample past 100).</summary>
    private static void Plot(StringBuilder md, string title, List<ChurnSample> samples, Func<ChurnSample, double> value)
    {
        const int rows = 12;
        var step = Math.Max(1, (samples.Count + 99) / 100);
        var values = samples.Where((_, i) => i % step == 0).Select(value).ToArray();
        var max = Math.Max(values.Max(), 1e-9);
        md.AppendLine(CultureInfo.InvariantCulture, $"{title}, 0 to {max:G4}:");
        md.AppendLine("```");
        for (var r = rows; r >= 1; r--)
        {
            var line = new StringBuilder(r == rows ? $"{max,9:G4} |" : r == 1 ? $"{0,9} |" : "          |");
            foreach (var v in values)
            {
                line.Append(v / max * rows >= r - 0.5 ? '#' : ' ');
            }

            md.AppendLine(line.ToString().TrimEnd());
        }

        md.AppendLine("          +" + new string('-', values.Length));
        md.AppendLine("```");
        md.AppendLine();
    }
}
