using System.Collections.Concurrent;
using System.Diagnostics;
using OrleansPush.Client;

namespace OrleansPush.Cluster.Tests;

/// <summary>A subscriber on the .NET client library: what it received per topic, and how long its reconnects took.</summary>
public sealed class Subscriber : IAsyncDisposable
{
    private readonly Dictionary<string, List<long>> _received = new(StringComparer.Ordinal);
    private readonly List<TimeSpan> _reconnects = [];
    private readonly List<RecoveryFailure> _failures = [];
    private readonly Stopwatch _down = new();

    private Subscriber(string name, PushClient client)
    {
        Name = name;
        Client = client;
        client.StateChanged += state =>
        {
            lock (_reconnects)
            {
                if (state == PushConnectionState.Reconnecting && !_down.IsRunning)
                {
                    _down.Restart();
                }
                else if (state == PushConnectionState.Connected && _down.IsRunning)
                {
                    _reconnects.Add(_down.Elapsed);
                    _down.Reset();
                }
            }
        };
        client.RecoveryFailed += failure =>
        {
            lock (_failures)
            {
                _failures.Add(failure);
            }
        };
    }

    public string Name { get; }

    public PushClient Client { get; }

    public IReadOnlyList<TimeSpan> Reconnects
    {
        get
        {
            lock (_reconnects)
            {
                return [.. _reconnects];
            }
        }
    }

    public IReadOnlyList<RecoveryFailure> RecoveryFailures
    {
        get
        {
            lock (_failures)
            {
                return [.. _failures];
            }
        }
    }

    /// <summary>Connects to <paramref name="urls"/>[0] (the others are its fallbacks) and subscribes to every topic.</summary>
    public static async Task<Subscriber> StartAsync(string name, IReadOnlyList<Uri> urls, IEnumerable<string> topics)
    {
        var client = new PushClient(new PushClientOptions
        {
            Url = urls[0],
            FallbackUrls = [.. urls.Skip(1)],
            ReconnectBaseDelay = TimeSpan.FromMilliseconds(200),
            ReconnectMaxDelay = TimeSpan.FromSeconds(2),
        });
        var subscriber = new Subscriber(name, client);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await client.StartAsync(cts.Token);
        foreach (var topic in topics)
        {
            lock (subscriber._received)
            {
                subscriber._received[topic] = [];
            }

            await client.SubscribeAsync(topic, m =>
            {
                lock (subscriber._received)
                {
                    subscriber._received[m.Topic].Add(m.Seq);
                }
            }, cts.Token);
        }

        return subscriber;
    }

    public long[] Received(string topic)
    {
        lock (_received)
        {
            return [.. _received[topic]];
        }
    }

    /// <summary>Waits until every topic has reached its published head (bounded).</summary>
    public async Task WaitForAsync(IReadOnlyDictionary<string, long> heads, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (heads.Any(h => Received(h.Key).LastOrDefault() < h.Value) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
        }
    }

    public ValueTask DisposeAsync() => Client.DisposeAsync();
}

/// <summary>Subscribers that go away together.</summary>
public sealed class SubscriberGroup : List<Subscriber>, IAsyncDisposable
{
    public async ValueTask DisposeAsync()
    {
        foreach (var subscriber in this)
        {
            await subscriber.DisposeAsync();
        }
    }
}

/// <summary>
/// A backend publishing rounds (one message to every topic per round) through the .NET publisher, with an idempotency
/// key per message. A publish that fails is retried with its key until it is acknowledged, or, with
/// <see cref="GiveUpOnUnavailable"/>, recorded as refused with a clear error. Bounded in rounds and time.
/// </summary>
public sealed class PublishLoop(IReadOnlyList<Uri> gateways, IReadOnlyList<string> topics)
{
    private readonly ConcurrentDictionary<string, ConcurrentBag<long>> _acknowledged = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<(DateTime At, string Topic)> _acks = new();
    private readonly ConcurrentQueue<string> _refusals = new();
    private readonly ConcurrentQueue<string> _unexpected = new();
    private readonly HttpClient[] _http = [.. gateways.Select(g => new HttpClient { BaseAddress = g, Timeout = TimeSpan.FromSeconds(30) })];
    private readonly Dictionary<string, int> _done = new(StringComparer.Ordinal);
    private int _preferred;

    /// <summary>Record a publish answered <c>unavailable</c> and move on (the Redis test), instead of retrying it.</summary>
    public bool GiveUpOnUnavailable { get; init; }

    public TimeSpan Pause { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Messages every topic has had published (the slowest topic's count).</summary>
    public int Rounds { get; private set; }

    /// <summary>The longest any acknowledged publish took, from its first attempt (retries included).</summary>
    public TimeSpan LongestPublish { get; private set; }

    /// <summary>Publishes that got an error other than a clear <c>unavailable</c>.</summary>
    public IReadOnlyCollection<string> Unexpected => _unexpected;

    public IReadOnlyCollection<string> Refusals => _refusals;

    public long[] Acknowledged(string topic) => _acknowledged.TryGetValue(topic, out var seqs) ? [.. seqs.Order()] : [];

    public Dictionary<string, long> Heads() => topics.ToDictionary(t => t, t => Acknowledged(t).DefaultIfEmpty(0).Max());

    /// <summary>When each topic was first acknowledged after <paramref name="since"/>; missing topics never were.</summary>
    public Dictionary<string, DateTime> FirstAcknowledgedAfter(DateTime since)
    {
        var first = new Dictionary<string, DateTime>(StringComparer.Ordinal);
        foreach (var (at, topic) in _acks)
        {
            if (at >= since && (!first.TryGetValue(topic, out var seen) || at < seen))
            {
                first[topic] = at;
            }
        }

        return first;
    }

    /// <summary>Publishes until <paramref name="stop"/> is cancelled or every topic reached <paramref name="maxRounds"/>
    /// messages. Each topic has a loop of its own (one message at a time, as a backend that keeps per-topic order does),
    /// so a topic whose grain is moving does not hold up the others.</summary>
    public async Task RunAsync(int maxRounds, CancellationToken stop)
    {
        await Task.WhenAll(topics.Select(async topic =>
        {
            int start;
            lock (_done)
            {
                start = _done.GetValueOrDefault(topic);
            }

            for (var round = start; round < maxRounds && !stop.IsCancellationRequested; round++)
            {
                await PublishAsync(topic, round);
                lock (_done)
                {
                    _done[topic] = round + 1;
                    Rounds = _done.Count == topics.Count ? _done.Values.Min() : 0;
                }

                try
                {
                    await Task.Delay(Pause, stop);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }));
    }

    private async Task PublishAsync(string topic, int round)
    {
        var key = $"{topic}-{round}";
        var started = Stopwatch.StartNew();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        while (true)
        {
            // The preferred gateway first; after a failure, the next one (a gateway that is down or draining).
            var index = Volatile.Read(ref _preferred) % _http.Length;
            var publisher = new PushPublisher(_http[index], new PushPublisherOptions { MaxAttempts = 2, RetryBaseDelay = TimeSpan.FromMilliseconds(100) });
            try
            {
                var position = await publisher.PublishAsync(topic, new { round }, key);
                _acknowledged.GetOrAdd(topic, _ => []).Add(position.Seq);
                _acks.Enqueue((DateTime.UtcNow, topic));
                lock (_done)
                {
                    LongestPublish = started.Elapsed > LongestPublish ? started.Elapsed : LongestPublish;
                }

                return;
            }
            catch (PushException ex) when (ex.Code == "unavailable")
            {
                Interlocked.CompareExchange(ref _preferred, index + 1, index);
                if (GiveUpOnUnavailable)
                {
                    _refusals.Enqueue($"{key}: {ex.Message}");
                    return;
                }
            }
            catch (Exception ex)
            {
                _unexpected.Enqueue($"{key}: {ex.GetType().Name}: {ex.Message}");
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                _unexpected.Enqueue($"{key}: still unavailable after 90 s");
                return;
            }

            await Task.Delay(200);
        }
    }
}

internal static class Check
{
    /// <summary>Every subscriber saw every topic as 1, 2, 3, ... up to at least the last acknowledged seq: nothing
    /// acknowledged lost, nothing twice, nothing out of order. Returns the number of (subscriber, topic) pairs checked.</summary>
    public static int CompleteAndInOrder(IEnumerable<Subscriber> subscribers, PublishLoop publisher, IReadOnlyList<string> topics)
    {
        var checkedPairs = 0;
        foreach (var subscriber in subscribers)
        {
            foreach (var topic in topics)
            {
                var received = subscriber.Received(topic);
                var acknowledged = publisher.Acknowledged(topic);
                Assert.True(acknowledged.Length > 0, $"nothing was acknowledged on {topic}");
                Assert.True(received.SequenceEqual(Enumerable.Range(1, received.Length).Select(i => (long)i)),
                    $"{subscriber.Name} {topic}: received {Describe(received)}, expected 1..{received.Length} with no gap, duplicate or reorder");
                Assert.True(received.Length >= acknowledged[^1],
                    $"{subscriber.Name} {topic}: received up to {received.Length}, acknowledged up to {acknowledged[^1]}");
                checkedPairs++;
            }

            Assert.Empty(subscriber.RecoveryFailures);
        }

        return checkedPairs;
    }

    public static string Percentiles(IEnumerable<TimeSpan> values)
    {
        var sorted = values.Select(v => v.TotalMilliseconds).Order().ToArray();
        if (sorted.Length == 0)
        {
            return "none";
        }

        double At(double p) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];
        return $"{sorted.Length} reconnects, p50 {At(0.50):0} ms, p99 {At(0.99):0} ms, max {sorted[^1]:0} ms";
    }

    private static string Describe(long[] seqs) =>
        seqs.Length <= 20 ? "[" + string.Join(",", seqs) + "]" : $"{seqs.Length} messages, first gap/dup near {FirstBreak(seqs)}";

    private static string FirstBreak(long[] seqs)
    {
        for (var i = 0; i < seqs.Length; i++)
        {
            if (seqs[i] != i + 1)
            {
                return $"index {i}: {string.Join(",", seqs.Skip(Math.Max(0, i - 3)).Take(7))}";
            }
        }

        return "none";
    }
}
