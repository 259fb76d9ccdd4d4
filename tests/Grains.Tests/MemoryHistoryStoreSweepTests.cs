using System.Text;
using OrleansPush.Grains.History;

namespace OrleansPush.Grains.Tests;

/// <summary>Issue 16: the in-memory store follows what is alive, on a clock the test moves.</summary>
public sealed class MemoryHistoryStoreSweepTests
{
    [Fact]
    public async Task QuietTopicsLoseTheirMessagesAfterTheTtlAndLeaveMemoryOnceTheirPositionExpired()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        using var store = new MemoryHistoryStore(clock);
        var bounds = new HistoryBounds(100, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(2), TimeSpan.FromMinutes(5));
        var topics = Enumerable.Range(0, 1000).Select(i => $"churn-{i}").ToArray();
        foreach (var topic in topics)
        {
            await store.AppendAsync(topic, "e", [new TopicMessage(topic, "e", 1, Encoding.UTF8.GetBytes("1"), clock.GetUtcNow().ToUnixTimeMilliseconds())],
                [new IdempotencyKey("k", 1)], bounds);
        }

        Assert.Equal(1000, store.TopicCount);

        // Past the history's TTL and the dedupe window: messages and keys go, positions stay.
        clock.Advance(TimeSpan.FromMinutes(3));
        store.Sweep();
        Assert.Equal(1000, store.TopicCount);
        var quiet = (await store.LoadAsync(topics[0], bounds))!;
        Assert.Equal(1, quiet.Head);
        Assert.Empty(quiet.Messages);
        Assert.Null(await store.FindKeyAsync(topics[0], "k"));

        // Past TTL + position TTL since the last append: the topics are gone, and start over when published to.
        clock.Advance(TimeSpan.FromMinutes(3));
        store.Sweep();
        Assert.Equal(0, store.TopicCount);
        Assert.Null(await store.LoadAsync(topics[0], bounds));
        await store.AppendAsync(topics[0], "e2", [new TopicMessage(topics[0], "e2", 1, Encoding.UTF8.GetBytes("2"), clock.GetUtcNow().ToUnixTimeMilliseconds())], [], bounds);
        Assert.Equal(1, store.TopicCount);
    }

    [Fact]
    public async Task ATopicPublishedToKeepsItsPosition()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        using var store = new MemoryHistoryStore(clock);
        var bounds = new HistoryBounds(100, TimeSpan.FromMinutes(1), PositionTtl: TimeSpan.FromMinutes(5));
        for (var seq = 1; seq <= 10; seq++)
        {
            await store.AppendAsync("busy", "e", [new TopicMessage("busy", "e", seq, Encoding.UTF8.GetBytes("1"), clock.GetUtcNow().ToUnixTimeMilliseconds())], [], bounds);
            clock.Advance(TimeSpan.FromMinutes(4));
            store.Sweep();
        }

        var loaded = (await store.LoadAsync("busy", bounds))!;
        Assert.Equal(("e", 10L), (loaded.Epoch, loaded.Head));
    }

    /// <summary>A clock that moves only when told.</summary>
    private sealed class ManualClock(DateTimeOffset start) : TimeProvider
    {
        private DateTimeOffset _now = start;

        public override DateTimeOffset GetUtcNow() => _now;

        public void Advance(TimeSpan by) => _now += by;
    }
}
