using System.Collections.Concurrent;

namespace OrleansPush.Grains.History;

/// <summary>History in the silo's memory: survives a grain's deactivation, not the silo. The default, for
/// development and tests. Idempotency keys are kept per topic for the dedupe window, at most
/// <see cref="MaxKeysPerTopic"/> of them (the oldest go first).</summary>
public sealed class MemoryHistoryStore(TimeProvider time) : IHistoryStore
{
    /// <summary>Most idempotency keys one topic keeps.</summary>
    public const int MaxKeysPerTopic = 100_000;

    private readonly ConcurrentDictionary<string, Entry> _topics = new(StringComparer.Ordinal);

    public Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        if (!_topics.TryGetValue(topic, out var entry))
        {
            return Task.FromResult<StoredHistory?>(null);
        }

        lock (entry)
        {
            if (entry.Epoch is null)
            {
                return Task.FromResult<StoredHistory?>(null);
            }

            var oldest = bounds.OldestAllowedUnixMs(time.GetUtcNow().ToUnixTimeMilliseconds());
            var kept = entry.Messages.Where(m => m.PublishedAtUnixMs >= oldest).TakeLast(Math.Max(0, bounds.MaxCount)).ToArray();
            return Task.FromResult<StoredHistory?>(new StoredHistory(entry.Epoch, entry.Head, HistoryRun.EndingAt(entry.Head, kept)));
        }
    }

    public Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        if (messages.Count == 0)
        {
            return Task.CompletedTask;
        }

        var entry = _topics.GetOrAdd(topic, _ => new Entry());
        lock (entry)
        {
            if (!HistoryRun.Continues(entry.Epoch, entry.Head, epoch, messages[0].Seq))
            {
                throw new HistoryConflictException(topic, epoch, messages[0].Seq - 1, entry.Epoch, entry.Head);
            }

            if (entry.Epoch is null)
            {
                entry.Epoch = epoch;
                entry.Messages.Clear();
            }

            foreach (var m in messages)
            {
                entry.Messages.Enqueue(m);
                entry.Head = m.Seq;
            }

            while (entry.Messages.Count > Math.Max(0, bounds.MaxCount))
            {
                entry.Messages.Dequeue();
            }

            if (keys.Count > 0 && bounds.DedupeWindow > TimeSpan.Zero)
            {
                var now = time.GetUtcNow();
                entry.ExpireKeys(now);
                foreach (var k in keys)
                {
                    entry.AddKey(k.Key, new TopicPosition(epoch, k.Seq), now + bounds.DedupeWindow);
                }
            }
        }

        return Task.CompletedTask;
    }

    public Task<TopicPosition?> FindKeyAsync(string topic, string key, CancellationToken cancellationToken = default)
    {
        if (!_topics.TryGetValue(topic, out var entry))
        {
            return Task.FromResult<TopicPosition?>(null);
        }

        lock (entry)
        {
            entry.ExpireKeys(time.GetUtcNow());
            return Task.FromResult(entry.Keys.TryGetValue(key, out var kept) ? kept.Position : null);
        }
    }

    private sealed class Entry
    {
        /// <summary>Null until the first append.</summary>
        public string? Epoch { get; set; }

        public long Head { get; set; }

        public Queue<TopicMessage> Messages { get; } = new();

        public Dictionary<string, (TopicPosition Position, DateTimeOffset Expires)> Keys { get; } = new(StringComparer.Ordinal);

        /// <summary>Keys in the order they were added; each key once (a key is added only while it is absent).</summary>
        private Queue<string> KeyOrder { get; } = new();

        /// <summary>The first append of a key wins.</summary>
        public void AddKey(string key, TopicPosition position, DateTimeOffset expires)
        {
            if (!Keys.TryAdd(key, (position, expires)))
            {
                return;
            }

            KeyOrder.Enqueue(key);
            if (KeyOrder.Count > MaxKeysPerTopic)
            {
                Keys.Remove(KeyOrder.Dequeue());
            }
        }

        public void ExpireKeys(DateTimeOffset now)
        {
            while (KeyOrder.TryPeek(out var oldest) && Keys[oldest].Expires <= now)
            {
                Keys.Remove(KeyOrder.Dequeue());
            }
        }
    }
}
