using System.Diagnostics;

namespace OrleansPush.Bench;

/// <summary>One load run: <paramref name="Subscribers"/> connections over <paramref name="Topics"/> topics; publishing at
/// <paramref name="Rate"/> msg/s, or (null) as fast as the system delivers with at most <paramref name="InFlight"/>
/// messages published but not yet delivered to all their subscribers.</summary>
/// <param name="State">Publishes a ~2 KB JSON game state changing a few fields per message (<see cref="StateFeed"/>) on
/// topics of the <c>state</c> namespace instead of the ~100-byte timestamp payload; with <paramref name="Delta"/>,
/// subscribers ask for Fossil deltas.</param>
/// <param name="Mqtt">The subscribers are MQTT 5 clients over <c>/mqtt</c> (<see cref="MqttSubscriber"/>), not raw WebSockets.</param>
internal sealed record LoadSpec(string Scenario, int Subscribers, int Topics, PublishMode Mode, double? Rate, int InFlight, int Workers, int BatchSize = 1,
    bool State = false, bool Delta = false, bool Mqtt = false);

/// <summary>One row of results. CPU is user+system time of every process of the system under test.</summary>
internal sealed record LoadRow(
    string Scenario, string System, string Publisher, int Subscribers, int Topics, int Connected,
    double PublishedPerSec, double DeliveredPerSec, double P50, double P90, double P99, double Max,
    long Lost, long Gaps, double ServerCores, double CpuMicrosPerMessage, double LoaderCores,
    double MachineCores, double ContextSwitchesPerMessage, double WireBytesPerMessage = double.NaN);

/// <summary>Memory per idle connection, and what the system burns idle: <paramref name="EmptyCores"/> with no client at
/// all, <paramref name="HeldCores"/> while it holds the connections (keep-alives, timers).</summary>
internal sealed record IdleRow(string System, int Requested, int Connected, long RssBefore, long RssAfter, double EmptyCores, double HeldCores)
{
    public double BytesPerConnection => Connected == 0 ? double.NaN : (RssAfter - RssBefore) / (double)Connected;
}

internal sealed record StormRow(string System, int Clients, int Reconnected, int Recovered, int Complete, double Seconds, double ServerCpuSeconds);

internal sealed class Scenarios(TimeSpan warmup, TimeSpan measure)
{
    private const long MaxMessagesPerRun = 5_000_000;

    public async Task<LoadRow> RunLoadAsync(SystemUnderTest sut, LoadSpec spec)
    {
        var label = $"{sut.Name} {spec.Scenario}{(spec.Mode == PublishMode.Http ? "" : "/" + spec.Mode.ToString().ToLowerInvariant())}";
        Console.WriteLine($"  {label}: connecting {spec.Subscribers} subscribers over {spec.Topics} topic(s)");
        var stats = new LoadStats();
        var run = Guid.NewGuid().ToString("N")[..6];
        var topics = Enumerable.Range(0, spec.Topics).Select(i => $"{(spec.State ? "state:" : "")}{spec.Scenario}-{run}-{i}").ToArray();
        var (subscribers, connected, _) = await Loader.ConnectAsync(sut, stats, spec.Subscribers, i => topics[i % topics.Length], TimeSpan.FromSeconds(120),
            delta: spec.Delta, kind: spec.Mqtt ? ClientKind.Mqtt : null);
        var feed = spec.State ? new StateFeed(seed: 42) : null;
        Func<byte[]> payload = feed is null ? () => Wire.Payload(Stopwatch.GetTimestamp()) : feed.Next;
        var subsOf = new int[topics.Length];
        for (var i = 0; i < subscribers.Length; i++)
        {
            if (subscribers[i] is not null)
            {
                subsOf[i % topics.Length]++;
            }
        }

        IPublisher publisher = spec.Mode == PublishMode.Orleans
            ? await OrleansPublisher.StartAsync(sut.OrleansGatewayPort ?? throw new InvalidOperationException(sut.Name + " has no Orleans gateway"))
            : new HttpPublisher(sut, spec.BatchSize);
        long expected = 0, published = 0, next = 0;
        var window = (long)spec.InFlight * Math.Max(1, connected / topics.Length);
        using var stop = new CancellationTokenSource(warmup + measure + TimeSpan.FromSeconds(5)); // bounded even if this loop is not
        long Outstanding() => Volatile.Read(ref expected) - Volatile.Read(ref stats.Delivered) - Volatile.Read(ref stats.Gaps);

        async Task PublishOnce()
        {
            var start = Interlocked.Add(ref next, publisher.BatchSize) - publisher.BatchSize;
            var batch = new string[publisher.BatchSize];
            long deliveries = 0;
            for (var k = 0; k < batch.Length; k++)
            {
                var t = (int)((start + k) % topics.Length);
                batch[k] = topics[t];
                deliveries += subsOf[t];
            }

            Interlocked.Add(ref expected, deliveries);
            var ok = await publisher.PublishAsync(batch, payload, stop.Token);
            Interlocked.Add(ref published, ok);
            if (ok < batch.Length)
            {
                Interlocked.Add(ref expected, -deliveries * (batch.Length - ok) / batch.Length);
                await Task.Delay(10, CancellationToken.None); // an error: back off a little
            }
        }

        async Task MaxRateWorker()
        {
            while (!stop.IsCancellationRequested && Volatile.Read(ref published) < MaxMessagesPerRun)
            {
                while (Outstanding() > window && !stop.IsCancellationRequested)
                {
                    await Task.Delay(1, CancellationToken.None);
                }

                await PublishOnce();
            }
        }

        async Task FixedRateWorker(double rate)
        {
            var clock = Stopwatch.StartNew();
            var pending = new List<Task>();
            for (long i = 0; !stop.IsCancellationRequested && i < MaxMessagesPerRun; i++)
            {
                var due = TimeSpan.FromSeconds(i / rate) - clock.Elapsed;
                if (due > TimeSpan.Zero)
                {
                    await Task.Delay(due, CancellationToken.None);
                }

                pending.RemoveAll(t => t.IsCompleted);
                if (pending.Count < spec.InFlight)
                {
                    pending.Add(PublishOnce());
                }
            }

            await Task.WhenAll(pending);
        }

        var clock = Stopwatch.StartNew();
        var workers = spec.Rate is { } r
            ? [Task.Run(() => FixedRateWorker(r))]
            : Enumerable.Range(0, spec.Workers).Select(_ => Task.Run(MaxRateWorker)).ToArray();
        await Task.Delay(warmup);

        var cpu0 = sut.CpuTime();
        var loader0 = Environment.CpuUsage.TotalTime;
        var (machine0, switches0) = (ServerProcess.MachineBusy(), sut.ContextSwitches());
        var (pub0, del0, t0) = (Volatile.Read(ref published), Volatile.Read(ref stats.Delivered), clock.Elapsed);
        var bytes0 = Volatile.Read(ref stats.WireBytes);
        stats.OpenWindow();
        var (lastPub, lastDel, lastCpu, lastLoader) = (pub0, del0, cpu0, loader0);
        for (var s = 1; s <= (int)measure.TotalSeconds; s++)
        {
            await Task.Delay(TimeSpan.FromSeconds(1));
            var (p, d, c, l) = (Volatile.Read(ref published), Volatile.Read(ref stats.Delivered), sut.CpuTime(), Environment.CpuUsage.TotalTime);
            Console.WriteLine($"    {label} {s,2}s  published/s {p - lastPub,7:N0}  delivered/s {d - lastDel,9:N0}  server CPU {(c - lastCpu).TotalSeconds * 100,4:0}%  loader CPU {(l - lastLoader).TotalSeconds * 100,4:0}%  in flight {Outstanding(),7:N0}");
            (lastPub, lastDel, lastCpu, lastLoader) = (p, d, c, l);
        }

        var cpu1 = sut.CpuTime();
        var loader1 = Environment.CpuUsage.TotalTime;
        var (machine1, switches1) = (ServerProcess.MachineBusy(), sut.ContextSwitches());
        var (pub1, del1, t1) = (Volatile.Read(ref published), Volatile.Read(ref stats.Delivered), clock.Elapsed);
        var bytes1 = Volatile.Read(ref stats.WireBytes);
        stats.CloseWindow();
        await stop.CancelAsync();
        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(15));
        var drain = Stopwatch.StartNew();
        while (Outstanding() > 0 && drain.Elapsed < TimeSpan.FromSeconds(5))
        {
            await Task.Delay(50);
        }

        var lost = Math.Max(0, Outstanding());
        await Loader.CloseAllAsync(subscribers);
        await publisher.DisposeAsync();

        var seconds = (t1 - t0).TotalSeconds;
        var delivered = del1 - del0;
        var row = new LoadRow(spec.Scenario, sut.Name, spec.Mode switch
        {
            PublishMode.Batch => $"HTTP batch of {spec.BatchSize}",
            PublishMode.Orleans => ".NET grain client",
            _ => "HTTP",
        } + (spec.Rate is { } rate ? $" at {rate:0}/s" : ""), spec.Subscribers, spec.Topics, connected,
            (pub1 - pub0) / seconds, delivered / seconds,
            stats.PercentileMillis(0.50), stats.PercentileMillis(0.90), stats.PercentileMillis(0.99), stats.MaxMillis,
            lost, Volatile.Read(ref stats.Gaps), (cpu1 - cpu0).TotalSeconds / seconds,
            delivered == 0 ? double.NaN : (cpu1 - cpu0).TotalMicroseconds / delivered, (loader1 - loader0).TotalSeconds / seconds,
            (machine1 - machine0).TotalSeconds / seconds, delivered == 0 ? double.NaN : (switches1 - switches0) / (double)delivered,
            delivered == 0 || bytes1 == bytes0 ? double.NaN : (bytes1 - bytes0) / (double)delivered);
        Console.WriteLine($"  => {label}: {row.DeliveredPerSec:N0} delivered/s, {row.CpuMicrosPerMessage:0.00} µs CPU/msg, p99 {row.P99:0.0} ms, lost {lost}, {row.WireBytesPerMessage:0} wire bytes/msg");
        return row;
    }

    /// <summary>Memory per idle connection: the RSS of the (freshly started) system before and after
    /// <paramref name="count"/> connections, each subscribed to one shared topic; and the CPU the system uses idle, with
    /// no client (after <see cref="IdleSettle"/>, so start-up and JIT are over) and while holding the connections.</summary>
    public static async Task<IdleRow> RunIdleAsync(string system, int count)
    {
        await using var sut = await SystemUnderTest.StartAsync(system);
        await Task.Delay(IdleSettle);
        var emptyCores = await CoresAsync(sut, IdleWindow);
        var before = sut.Processes.Sum(p => p.RssBytes());
        Console.WriteLine($"  {system} idle: {emptyCores:0.000} cores with no client; connecting {count} (RSS before {before / 1048576.0:0} MiB)");
        var stats = new LoadStats();
        var (subscribers, connected, _) = await Loader.ConnectAsync(sut, stats, count, _ => "idle", TimeSpan.FromSeconds(150), parallelism: 128);
        await Task.Delay(TimeSpan.FromSeconds(5));
        var after = sut.Processes.Sum(p => p.RssBytes());
        await Task.Delay(TimeSpan.FromSeconds(5));
        var heldCores = await CoresAsync(sut, IdleWindow);
        var row = new IdleRow(system, count, connected, before, after, emptyCores, heldCores);
        Console.WriteLine($"  => {system} idle: {connected} held, RSS after {after / 1048576.0:0} MiB, {row.BytesPerConnection / 1024:0.0} KiB/connection, {heldCores:0.000} cores");
        await Loader.CloseAllAsync(subscribers);
        return row;
    }

    /// <summary>How long a freshly started system is left alone before its idle CPU is measured: long enough for start-up
    /// work and most of tiered JIT (a 4 s window 1 s after start measured start-up, not idling; an embedded gateway still
    /// compiled methods a minute after start, and idled at 0.02 cores only after about four).</summary>
    public static readonly TimeSpan IdleSettle = TimeSpan.FromSeconds(60);

    /// <summary>The idle CPU windows: spans a WebSocket keep-alive round (20 s by default) and several timer periods.</summary>
    public static readonly TimeSpan IdleWindow = TimeSpan.FromSeconds(20);

    private static async Task<double> CoresAsync(SystemUnderTest sut, TimeSpan window)
    {
        var cpu0 = sut.CpuTime();
        var wall = Stopwatch.StartNew();
        await Task.Delay(window);
        return (sut.CpuTime() - cpu0).TotalSeconds / wall.Elapsed.TotalSeconds;
    }

    /// <summary>Reconnect storm: <paramref name="count"/> clients lose their connections while 10 messages are published,
    /// then all reconnect at once with <c>since</c>; the time until every one has <c>recovered:true</c>.</summary>
    public static async Task<StormRow> RunStormAsync(SystemUnderTest sut, int count)
    {
        const int before = 20, missed = 10;
        var stats = new LoadStats();
        var topic = "storm-" + Guid.NewGuid().ToString("N")[..6];
        Console.WriteLine($"  {sut.Name} storm: connecting {count}");
        var (subscribers, connected, _) = await Loader.ConnectAsync(sut, stats, count, _ => topic, TimeSpan.FromSeconds(120));
        await using var publisher = new HttpPublisher(sut, 1);
        for (var i = 0; i < before; i++)
        {
            await publisher.PublishAsync([topic], () => Wire.Payload(Stopwatch.GetTimestamp()), CancellationToken.None);
        }

        var wait = Stopwatch.StartNew();
        while (Volatile.Read(ref stats.Delivered) < (long)before * connected && wait.Elapsed < TimeSpan.FromSeconds(15))
        {
            await Task.Delay(50);
        }

        var positions = subscribers.Select(s => s is null ? ((string, long)?)null : (s.Epoch ?? "", s.LastSeq)).ToArray();
        foreach (var s in subscribers)
        {
            s?.Abort();
        }

        await Loader.CloseAllAsync(subscribers);
        for (var i = 0; i < missed; i++)
        {
            await publisher.PublishAsync([topic], () => Wire.Payload(Stopwatch.GetTimestamp()), CancellationToken.None);
        }

        await Task.Delay(1000);
        var cpu0 = sut.CpuTime();
        var clock = Stopwatch.StartNew();
        var (again, reconnected, recovered) = await Loader.ConnectAsync(sut, stats, count, _ => topic, TimeSpan.FromSeconds(90), parallelism: 1000,
            since: i => positions[i] is { } p ? p : null);
        var seconds = clock.Elapsed.TotalSeconds;
        var cpu = (sut.CpuTime() - cpu0).TotalSeconds;
        var complete = again.Count(s => s is not null && s.LastSeq >= before + missed);
        Console.WriteLine($"  => {sut.Name} storm: {reconnected}/{count} back in {seconds:0.00} s, {recovered} recovered:true, {complete} with every missed message");
        await Loader.CloseAllAsync(again);
        return new StormRow(sut.Name, count, reconnected, recovered, complete, seconds, cpu);
    }
}
