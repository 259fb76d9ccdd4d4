using System.Collections.Concurrent;

namespace OrleansPush.Grains.History;

/// <summary>History in the silo's memory: survives a grain's deactivation, not the silo. The default, for
/// development and tests.</summary>
public sealed class MemoryHistoryStore(TimeProvider time) : IHistoryStore
{
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

    public Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, HistoryBounds bounds, CancellationToken cancellationToken = default)
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
        }

        return Task.CompletedTask;
    }

    private sealed class Entry
    {
        /// <summary>Null until the first append.</summary>
        public string? Epoch { get; set; }

        public long Head { get; set; }

        public Queue<TopicMessage> Messages { get; } = new();
    }
}
