using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace OrleansPush.Grains.History;

/// <summary>History in the silo's memory: survives a grain's deactivation, not the silo. The default, for
/// development and tests. Memory follows what is alive: an append drops the topic's expired messages, and a sweep every
/// <see cref="SweepPeriod"/> (sooner when some namespace's position lifetime is short: a quarter of the shortest, at least
/// a second) drops those of quiet topics and forgets a topic altogether once its position has outlived
/// <see cref="HistoryBounds.PositionLifetime"/> and its idempotency keys their window. Idempotency keys are kept per topic
/// for the dedupe window, at most <see cref="MaxKeysPerTopic"/> of them (the oldest go first).</summary>
public sealed class MemoryHistoryStore : IHistoryStore, IDisposable
{
    /// <summary>Most idempotency keys one topic keeps.</summary>
    public const int MaxKeysPerTopic = 100_000;

    /// <summary>How often quiet topics are swept.</summary>
    public static readonly TimeSpan SweepPeriod = TimeSpan.FromMinutes(1);

    private readonly ConcurrentDictionary<string, Entry> _topics = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;
    private readonly ITimer _sweeper;

    public MemoryHistoryStore(TimeProvider time)
        : this(time, SweepPeriod)
    {
    }

    public MemoryHistoryStore(TimeProvider time, IOptions<TopicOptions> topics)
        : this(time, SweepPeriodFor(topics.Value))
    {
    }

    private MemoryHistoryStore(TimeProvider time, TimeSpan period)
    {
        _time = time;
        _sweeper = time.CreateTimer(static state => ((MemoryHistoryStore)state!).Sweep(), this, period, period);
    }

    /// <summary>A quarter of the shortest time anything of a topic is kept (its position, an idempotency key), between a
    /// second and <see cref="SweepPeriod"/>.</summary>
    public static TimeSpan SweepPeriodFor(TopicOptions topics)
    {
        var shortest = topics.Namespaces.Values.Append(topics.Default).Append(topics.Personal)
            .Select(ns => ns.HistoryTtl + ns.PositionTtl).Append(topics.DedupeWindow).Where(t => t > TimeSpan.Zero).DefaultIfEmpty(SweepPeriod).Min();
        return TimeSpan.FromTicks(Math.Clamp(shortest.Ticks / 4, TimeSpan.TicksPerSecond, SweepPeriod.Ticks));
    }

    /// <summary>Topics held now (for tests and gauges).</summary>
    public int TopicCount => _topics.Count;

    public Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        if (!_topics.TryGetValue(topic, out var entry))
        {
            return Task.FromResult<StoredHistory?>(null);
        }

        lock (entry)
        {
            var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
            if (entry.Epoch is null || entry.PositionExpired(now))
            {
                return Task.FromResult<StoredHistory?>(null);
            }

            var oldest = bounds.OldestAllowedUnixMs(now);
            var kept = entry.Messages.Where(m => m.PublishedAtUnixMs >= oldest).TakeLast(Math.Max(0, bounds.MaxCount)).ToArray();
            return Task.FromResult<StoredHistory?>(new StoredHistory(entry.Epoch, entry.Head, HistoryRun.EndingAt(entry.Head, kept))
            {
                Latest = entry.Latest,
            });
        }
    }

    public Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys, HistoryBounds bounds,
        LatestChange latest, CancellationToken cancellationToken = default)
    {
        if (messages.Count == 0)
        {
            return Task.CompletedTask;
        }

        while (true)
        {
            var entry = _topics.GetOrAdd(topic, static _ => new Entry());
            lock (entry)
            {
                if (entry.Dropped)
                {
                    continue; // swept away meanwhile: start over with a fresh entry
                }

                Append(topic, entry, epoch, messages, keys, bounds, latest);
                return Task.CompletedTask;
            }
        }
    }

    public Task ClearLatestAsync(string topic, string epoch, long head, CancellationToken cancellationToken = default)
    {
        if (!_topics.TryGetValue(topic, out var entry))
        {
            return Task.CompletedTask;
        }

        lock (entry)
        {
            var storedEpoch = entry.PositionExpired(_time.GetUtcNow().ToUnixTimeMilliseconds()) ? null : entry.Epoch;
            if (storedEpoch is null)
            {
                return Task.CompletedTask;
            }

            if (storedEpoch != epoch || entry.Head != head)
            {
                throw new HistoryConflictException(topic, epoch, head, storedEpoch, entry.Head);
            }

            entry.Latest = null;
            return Task.CompletedTask;
        }
    }

    private void Append(string topic, Entry entry, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys, HistoryBounds bounds,
        LatestChange latest)
    {
        var now = _time.GetUtcNow();
        var nowMs = now.ToUnixTimeMilliseconds();
        var storedEpoch = entry.PositionExpired(nowMs) ? null : entry.Epoch;
        if (!HistoryRun.Continues(storedEpoch, entry.Head, epoch, messages[0].Seq))
        {
            throw new HistoryConflictException(topic, epoch, messages[0].Seq - 1, storedEpoch, entry.Head);
        }

        if (storedEpoch is null)
        {
            entry.Epoch = epoch;
            entry.Messages.Clear();
            entry.Latest = null;
        }

        foreach (var m in messages)
        {
            entry.Messages.Enqueue(m);
            entry.Head = m.Seq;
        }

        entry.Latest = latest.Apply(entry.Latest, messages);
        entry.Ttl = bounds.Ttl;
        entry.PositionExpiresMs = nowMs + (long)bounds.PositionLifetime.TotalMilliseconds;
        entry.EvictMessages(Math.Max(0, bounds.MaxCount), nowMs);
        if (keys.Count > 0 && bounds.DedupeWindow > TimeSpan.Zero)
        {
            entry.ExpireKeys(now);
            foreach (var k in keys)
            {
                entry.AddKey(k.Key, new TopicPosition(epoch, k.Seq), now + bounds.DedupeWindow);
            }
        }
    }

    public Task<TopicPosition?> FindKeyAsync(string topic, string key, CancellationToken cancellationToken = default)
    {
        if (!_topics.TryGetValue(topic, out var entry))
        {
            return Task.FromResult<TopicPosition?>(null);
        }

        lock (entry)
        {
            entry.ExpireKeys(_time.GetUtcNow());
            return Task.FromResult(entry.FindKey(key));
        }
    }

    /// <summary>Drops expired messages and keys of every topic, and every topic with nothing left to keep. Runs every
    /// <see cref="SweepPeriod"/>; public so a test can run it at a time of its choosing.</summary>
    public void Sweep()
    {
        var now = _time.GetUtcNow();
        var nowMs = now.ToUnixTimeMilliseconds();
        foreach (var (topic, entry) in _topics)
        {
            lock (entry)
            {
                entry.EvictMessages(int.MaxValue, nowMs);
                entry.ExpireKeys(now);
                if (entry.PositionExpired(nowMs) && entry.KeyCount == 0)
                {
                    entry.Dropped = true;
                    _topics.TryRemove(KeyValuePair.Create(topic, entry));
                }
            }
        }
    }

    public void Dispose() => _sweeper.Dispose();

    private sealed class Entry
    {
        /// <summary>Null until the first append.</summary>
        public string? Epoch { get; set; }

        public long Head { get; set; }

        public Queue<TopicMessage> Messages { get; } = new();

        /// <summary>The latest value, kept beyond the bounds (<see cref="LatestChange"/>), or null.</summary>
        public TopicMessage? Latest { get; set; }

        public TimeSpan Ttl { get; set; }

        /// <summary>When the position is forgotten (the last append's time plus its position lifetime).</summary>
        public long PositionExpiresMs { get; set; } = long.MaxValue;

        /// <summary>Removed from the store by a sweep: an appender holding it must take a fresh entry.</summary>
        public bool Dropped { get; set; }

        /// <summary>Idempotency keys within their window; null until the topic has one (most never do).</summary>
        private Dictionary<string, (TopicPosition Position, DateTimeOffset Expires)>? _keys;

        /// <summary>Keys in the order they were added; each key once (a key is added only while it is absent).</summary>
        private Queue<string>? _keyOrder;

        public int KeyCount => _keys?.Count ?? 0;

        public TopicPosition? FindKey(string key) => _keys is not null && _keys.TryGetValue(key, out var kept) ? kept.Position : null;

        public bool PositionExpired(long nowMs) => nowMs >= PositionExpiresMs;

        /// <summary>Drops messages beyond <paramref name="maxCount"/> and those older than the TTL (from the front:
        /// seqs and publish times rise together).</summary>
        public void EvictMessages(int maxCount, long nowMs)
        {
            var oldest = nowMs - (long)Ttl.TotalMilliseconds;
            while (Messages.Count > maxCount || (Messages.TryPeek(out var first) && first.PublishedAtUnixMs < oldest))
            {
                Messages.Dequeue();
            }
        }

        /// <summary>The first append of a key wins.</summary>
        public void AddKey(string key, TopicPosition position, DateTimeOffset expires)
        {
            _keys ??= new(StringComparer.Ordinal);
            _keyOrder ??= new();
            if (!_keys.TryAdd(key, (position, expires)))
            {
                return;
            }

            _keyOrder.Enqueue(key);
            if (_keyOrder.Count > MaxKeysPerTopic)
            {
                _keys.Remove(_keyOrder.Dequeue());
            }
        }

        public void ExpireKeys(DateTimeOffset now)
        {
            if (_keys is null || _keyOrder is null)
            {
                return;
            }

            while (_keyOrder.TryPeek(out var oldest) && _keys[oldest].Expires <= now)
            {
                _keys.Remove(_keyOrder.Dequeue());
            }

            if (_keys.Count == 0)
            {
                (_keys, _keyOrder) = (null, null);
            }
        }
    }
}
