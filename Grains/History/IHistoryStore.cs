namespace OrleansPush.Grains.History;

/// <summary>
/// A topic's durable history: its epoch, its head (last seq) and its recent messages.
/// <para>Guarantees:</para>
/// <list type="bullet">
/// <item><see cref="AppendAsync"/> is a compare-and-set on the head. It applies only when the store holds
/// <c>epoch</c> with head <c>messages[0].Seq - 1</c>, or holds nothing for the topic and <c>messages[0].Seq</c> is 1
/// (a new epoch; leftovers of an older one are dropped). Otherwise it writes nothing and throws
/// <see cref="HistoryConflictException"/>. When it applies, epoch, head and messages move together, atomically, and it
/// returns once they are durable (as durable as the backing store is configured to be).</item>
/// <item>Any other exception from <see cref="AppendAsync"/> leaves the outcome unknown: the append may have been
/// applied, or may still be. Retrying the identical append is safe (the compare-and-set refuses it once the first
/// landed); a caller that must know reads back with <see cref="LoadAsync"/>.</item>
/// <item><see cref="LoadAsync"/> returns a contiguous run of messages that ends at the head: one message per seq, no
/// gap, never a second payload at one seq (possibly empty, e.g. when the newest message has expired).</item>
/// <item>Stores keep at most <see cref="HistoryBounds.MaxCount"/> messages per topic and evict messages older than
/// <see cref="HistoryBounds.Ttl"/> (an append drops the expired ones it finds; a quiet topic's messages go within a
/// sweep period of expiring). A topic whose position outlived <see cref="HistoryBounds.PositionLifetime"/> since its
/// last append is gone: a load returns null and the next append starts an epoch at seq 1.</item>
/// <item>A topic has a latest value: one message of its current epoch, kept whatever the count and age bounds, as long
/// as the topic's position is, which a load returns as <see cref="StoredHistory.Latest"/>. Each append says what becomes
/// of it (<see cref="LatestChange"/>), atomically with the messages: one of them replaces it, it stays, or it goes;
/// <see cref="ClearLatestAsync"/> drops it without an append. A new epoch starts without one.</item>
/// <item>The idempotency keys of an append are stored with it, atomically, each with its message's position, and
/// <see cref="FindKeyAsync"/> finds them for <see cref="HistoryBounds.DedupeWindow"/> after the append, also once the
/// message itself has been trimmed. The first append of a key wins; a later one does not move it.</item>
/// </list>
/// <para>Each topic has one writer in normal operation (its grain); the compare-and-set is what keeps a second writer
/// (a duplicate activation, a write that lands after its caller gave up) from giving one seq two payloads.</para>
/// </summary>
public interface IHistoryStore
{
    /// <summary>The topic's stored epoch, head and newest messages (oldest first, within the bounds, a contiguous run
    /// ending at the head), or null when the store holds nothing for it.</summary>
    Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default);

    /// <summary>Appends consecutive messages of one epoch (a group commit: one round trip however many) if the stored
    /// head is still <c>messages[0].Seq - 1</c>, with the idempotency keys some of them were published with.</summary>
    /// <exception cref="HistoryConflictException">The stored head or epoch is not the expected one; nothing was
    /// written.</exception>
    Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys, HistoryBounds bounds,
        LatestChange latest, CancellationToken cancellationToken = default);

    /// <summary>Drops the topic's latest value if the stored epoch and head are still <paramref name="epoch"/> and
    /// <paramref name="head"/> (the same compare-and-set as an append's); does nothing when the store holds nothing for
    /// the topic.</summary>
    /// <exception cref="HistoryConflictException">The stored head or epoch is not the expected one; nothing was
    /// written.</exception>
    Task ClearLatestAsync(string topic, string epoch, long head, CancellationToken cancellationToken = default);

    /// <summary>The position of the message first appended with <paramref name="key"/> on <paramref name="topic"/>,
    /// within the dedupe window, or null.</summary>
    Task<TopicPosition?> FindKeyAsync(string topic, string key, CancellationToken cancellationToken = default);
}

/// <summary>A message of an append was published with idempotency key <paramref name="Key"/>; it has seq
/// <paramref name="Seq"/> in the append's epoch.</summary>
public readonly record struct IdempotencyKey(string Key, long Seq);

/// <summary>An append was refused because the store's head is not the one it expected (another writer moved it, or
/// an earlier append the caller thought lost did land). Nothing of the refused append was written.</summary>
public sealed class HistoryConflictException : Exception
{
    public HistoryConflictException()
    {
    }

    public HistoryConflictException(string message) : base(message)
    {
    }

    public HistoryConflictException(string message, Exception inner) : base(message, inner)
    {
    }

    public HistoryConflictException(string topic, string expectedEpoch, long expectedHead, string? storedEpoch, long storedHead)
        : base(storedEpoch is null
            ? $"History of {topic}: expected {expectedEpoch}/{expectedHead}, but nothing is stored."
            : $"History of {topic}: expected {expectedEpoch}/{expectedHead}, but {storedEpoch}/{storedHead} is stored.")
    {
    }
}

/// <summary>The rule every store applies to what it loads.</summary>
public static class HistoryRun
{
    /// <summary>The longest run of <paramref name="bySeq"/> (sorted by seq, oldest first) of consecutive seqs that ends
    /// at <paramref name="head"/>. A seq present twice ends the run before it: neither payload can be trusted.</summary>
    public static IReadOnlyList<TopicMessage> EndingAt(long head, IReadOnlyList<TopicMessage> bySeq)
    {
        var start = bySeq.Count;
        var expected = head;
        for (var i = bySeq.Count - 1; i >= 0; i--)
        {
            if (bySeq[i].Seq != expected || (i > 0 && bySeq[i - 1].Seq == expected))
            {
                break;
            }

            start = i;
            expected--;
        }

        return start == 0 ? bySeq : start == bySeq.Count ? [] : bySeq.Skip(start).ToArray();
    }

    /// <summary>The stored state as a compare-and-set sees it: what an append of <paramref name="epoch"/> starting at
    /// <paramref name="firstSeq"/> expects.</summary>
    public static bool Continues(string? storedEpoch, long storedHead, string epoch, long firstSeq) =>
        storedEpoch is null ? firstSeq == 1 : storedEpoch == epoch && storedHead == firstSeq - 1;
}

/// <summary>What a topic keeps: at most <paramref name="MaxCount"/> messages, none older than <paramref name="Ttl"/>,
/// each idempotency key for <paramref name="DedupeWindow"/> (zero: keys are not kept), and its position (epoch, head)
/// until <paramref name="Ttl"/> + <paramref name="PositionTtl"/> after its last append (zero: 7 days), after which the
/// store holds nothing for it.</summary>
public readonly record struct HistoryBounds(int MaxCount, TimeSpan Ttl, TimeSpan DedupeWindow = default, TimeSpan PositionTtl = default)
{
    /// <summary>The position's time to live when <see cref="PositionTtl"/> is not given.</summary>
    public static readonly TimeSpan DefaultPositionTtl = TimeSpan.FromDays(7);

    public long OldestAllowedUnixMs(long nowUnixMs) => nowUnixMs - (long)Ttl.TotalMilliseconds;

    /// <summary>How long after its last append a topic's position is kept.</summary>
    public TimeSpan PositionLifetime => Ttl + (PositionTtl > TimeSpan.Zero ? PositionTtl : DefaultPositionTtl);
}

/// <summary>A topic as stored: <see cref="Head"/> is its last seq (0 before the first message).</summary>
public sealed record StoredHistory(string Epoch, long Head, IReadOnlyList<TopicMessage> Messages)
{
    /// <summary>The topic's latest value (a message of this epoch, at or before <see cref="Head"/>), kept beyond the
    /// history's bounds; null when it has none.</summary>
    public TopicMessage? Latest { get; init; }
}

/// <summary>What an append does to the topic's latest value: <see cref="Keep"/> it, <see cref="Clear"/> it, or replace
/// it with the append's message at <see cref="Index"/> (<see cref="To"/>). A namespace with <c>KeepLatest</c> makes every
/// append's last message the latest value; one with <c>Retain</c>, only a retained one; elsewhere there is none.</summary>
public readonly record struct LatestChange(int Index)
{
    private const int KeepIndex = -1;
    private const int ClearIndex = -2;

    public static LatestChange Keep => new(KeepIndex);

    public static LatestChange Clear => new(ClearIndex);

    public static LatestChange To(int index) => new(index >= 0 ? index : throw new ArgumentOutOfRangeException(nameof(index)));

    public bool Keeps => Index == KeepIndex;

    public bool Clears => Index == ClearIndex;

    /// <summary>The latest value after an append of <paramref name="messages"/> that had <paramref name="before"/>.</summary>
    public TopicMessage? Apply(TopicMessage? before, IReadOnlyList<TopicMessage> messages) =>
        Index >= 0 ? messages[Index] : Keeps ? before : null;
}
