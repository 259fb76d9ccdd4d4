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

/// <summary>Which store holds history and grain state (<c>OrleansPush:Storage</c>).</summary>
public sealed class StorageOptions
{
    public const string Section = "OrleansPush:Storage";

    /// <summary><c>Memory</c> (default: lost with the silo), <c>Redis</c> or <c>Postgres</c>.</summary>
    public StorageProvider Provider { get; set; } = StorageProvider.Memory;

    /// <summary>StackExchange.Redis configuration string, e.g. <c>127.0.0.1:6379</c>.</summary>
    public string? Redis { get; set; }

    /// <summary>Npgsql connection string.</summary>
    public string? Postgres { get; set; }

    /// <summary>Prefix of every key or table this project writes, so one server can hold several deployments.</summary>
    public string Prefix { get; set; } = "orleanspush";
}

public enum StorageProvider
{
    Memory,
    Redis,
    Postgres,
}
