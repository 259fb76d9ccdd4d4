using OrleansPush.Grains.History;

namespace OrleansPush.Grains.Tests;

internal static class HistoryStoreExtensions
{
    /// <summary>An append without idempotency keys, in a namespace without a latest value.</summary>
    public static Task AppendAsync(this IHistoryStore store, string topic, string epoch, IReadOnlyList<TopicMessage> messages, HistoryBounds bounds) =>
        store.AppendAsync(topic, epoch, messages, [], bounds, LatestChange.Clear);

    /// <summary>An append with idempotency keys, in a namespace without a latest value.</summary>
    public static Task AppendAsync(this IHistoryStore store, string topic, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys,
        HistoryBounds bounds) =>
        store.AppendAsync(topic, epoch, messages, keys, bounds, LatestChange.Clear);

    /// <summary>An append without idempotency keys that does <paramref name="latest"/> to the latest value.</summary>
    public static Task AppendAsync(this IHistoryStore store, string topic, string epoch, IReadOnlyList<TopicMessage> messages, HistoryBounds bounds, LatestChange latest) =>
        store.AppendAsync(topic, epoch, messages, [], bounds, latest);
}
