using OrleansPush.Grains.History;

namespace OrleansPush.Grains.Tests;

internal static class HistoryStoreExtensions
{
    /// <summary>An append without idempotency keys.</summary>
    public static Task AppendAsync(this IHistoryStore store, string topic, string epoch, IReadOnlyList<TopicMessage> messages, HistoryBounds bounds) =>
        store.AppendAsync(topic, epoch, messages, [], bounds);
}
