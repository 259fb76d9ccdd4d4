namespace OrleansPush.Grains.History;

/// <summary>
/// A topic's durable history: its epoch, its last seq, and its recent messages.
/// <para>Guarantees: <see cref="AppendAsync"/> returns only once every message of the call is durable (as durable as
/// the backing store is configured to be) and applies the whole call atomically: epoch, head and messages move
/// together. Each topic has one writer (its grain), so a store never arbitrates concurrent appends to one topic.
/// Appending under a new epoch drops the old epoch's messages. Stores keep at most <see cref="HistoryBounds.MaxCount"/>
/// messages per topic and need not return messages older than <see cref="HistoryBounds.Ttl"/>.</para>
/// </summary>
public interface IHistoryStore
{
    /// <summary>The topic's stored epoch, head and newest messages (oldest first, within the bounds), or null when
    /// the store holds nothing for it.</summary>
    Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default);

    /// <summary>Appends consecutive messages of one epoch (a group commit: one round trip however many).</summary>
    Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, HistoryBounds bounds, CancellationToken cancellationToken = default);
}

/// <summary>What a topic keeps: at most <paramref name="MaxCount"/> messages, none older than <paramref name="Ttl"/>.</summary>
public readonly record struct HistoryBounds(int MaxCount, TimeSpan Ttl)
{
    public long OldestAllowedUnixMs(long nowUnixMs) => nowUnixMs - (long)Ttl.TotalMilliseconds;
}

/// <summary>A topic as stored: <see cref="Head"/> is its last seq (0 before the first message).</summary>
public sealed record StoredHistory(string Epoch, long Head, IReadOnlyList<TopicMessage> Messages);
