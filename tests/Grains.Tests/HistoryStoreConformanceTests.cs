using System.Text;
using Npgsql;
using OrleansPush.Grains.History;
using StackExchange.Redis;

namespace OrleansPush.Grains.Tests;

/// <summary>
/// The cases every history store must pass, run against the in-memory store, a real redis-server and a real
/// PostgreSQL (both started by ./test.sh, which passes their addresses in ORLEANSPUSH_TEST_REDIS and
/// ORLEANSPUSH_TEST_POSTGRES).
/// </summary>
public abstract class HistoryStoreConformanceTests
{
    private static readonly HistoryBounds Ten = new(10, TimeSpan.FromHours(1));

    protected abstract IHistoryStore Store { get; }

    private static string NewTopic() => "conf-" + Guid.NewGuid().ToString("N");

    private static TopicMessage[] Messages(string topic, string epoch, long from, long to, long? atMs = null) =>
        [.. Enumerable.Range((int)from, (int)(to - from + 1)).Select(i => new TopicMessage(
            topic, epoch, i, Encoding.UTF8.GetBytes($"{{\"n\":{i}}}"), atMs ?? DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()))];

    [Fact]
    public async Task UnknownTopicHasNoHistory()
    {
        Assert.Null(await Store.LoadAsync(NewTopic(), Ten));
    }

    [Fact]
    public async Task AppendedMessagesLoadBackInOrderByteForByte()
    {
        var topic = NewTopic();
        await Store.AppendAsync(topic, "e1", Messages(topic, "e1", 1, 3), Ten);
        await Store.AppendAsync(topic, "e1", Messages(topic, "e1", 4, 4), Ten);

        var loaded = await Store.LoadAsync(topic, Ten);
        Assert.NotNull(loaded);
        Assert.Equal("e1", loaded.Epoch);
        Assert.Equal(4, loaded.Head);
        Assert.Equal([1L, 2, 3, 4], loaded.Messages.Select(m => m.Seq));
        Assert.Equal("{\"n\":3}", Encoding.UTF8.GetString(loaded.Messages[2].Data));
        Assert.All(loaded.Messages, m => Assert.Equal(topic, m.Topic));
        Assert.All(loaded.Messages, m => Assert.Equal("e1", m.Epoch));
    }

    [Fact]
    public async Task BinaryAndLargePayloadsSurvive()
    {
        var topic = NewTopic();
        var payload = new byte[60_000];
        new Random(7).NextBytes(payload);
        await Store.AppendAsync(topic, "e", [new TopicMessage(topic, "e", 1, payload, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds())], Ten);
        Assert.Equal(payload, (await Store.LoadAsync(topic, Ten))!.Messages.Single().Data);
    }

    [Fact]
    public async Task EachMessagesPayloadFormatIsKept()
    {
        var topic = NewTopic();
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        TopicMessage[] messages =
        [
            new(topic, "e", 1, [0x00, 0xff, 0x10], now, PayloadFormat.Binary),
            new(topic, "e", 2, Encoding.UTF8.GetBytes("{\"j\":1}"), now),
            new(topic, "e", 3, Encoding.UTF8.GetBytes("[1]"), now, PayloadFormat.Binary),
        ];
        await Store.AppendAsync(topic, "e", messages, Ten);

        var loaded = (await Store.LoadAsync(topic, Ten))!.Messages;
        Assert.Equal([PayloadFormat.Binary, PayloadFormat.Json, PayloadFormat.Binary], loaded.Select(m => m.Format));
        Assert.Equal(messages.Select(m => m.Data), loaded.Select(m => m.Data));
        Assert.Equal(messages.Select(m => m.PublishedAtUnixMs), loaded.Select(m => m.PublishedAtUnixMs));
    }

    [Fact]
    public async Task EachMessagesPropertiesAreKeptAlsoWithTheLatestValue()
    {
        var topic = NewTopic();
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        TopicMessage[] messages =
        [
            new(topic, "e", 1, [0x00, 0xff], now, PayloadFormat.Binary, [0x26, 0, 1, (byte)'a', 0, 0]),
            new(topic, "e", 2, Encoding.UTF8.GetBytes("{\"j\":1}"), now),
            new(topic, "e", 3, Encoding.UTF8.GetBytes("[1]"), now, PayloadFormat.Json, [0xF1, 1]),
        ];
        await Store.AppendAsync(topic, "e", messages, Ten, LatestChange.To(0));

        var stored = (await Store.LoadAsync(topic, Ten))!;
        Assert.Equal(messages[0].Properties, stored.Latest?.Properties);
        var loaded = stored.Messages;
        Assert.Equal(messages.Select(m => m.Properties), loaded.Select(m => m.Properties));
        Assert.Equal(messages.Select(m => m.Data), loaded.Select(m => m.Data));
        Assert.Equal(messages.Select(m => m.Format), loaded.Select(m => m.Format));
    }

    [Fact]
    public async Task HistoryIsTrimmedToTheBoundButTheHeadKeepsCounting()
    {
        var topic = NewTopic();
        var three = new HistoryBounds(3, TimeSpan.FromHours(1));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 5), three);
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 6, 7), three);

        var loaded = (await Store.LoadAsync(topic, three))!;
        Assert.Equal(7, loaded.Head);
        Assert.Equal([5L, 6, 7], loaded.Messages.Select(m => m.Seq));
    }

    [Fact]
    public async Task AnAppendThatDoesNotContinueTheStoredHeadIsRefusedAndWritesNothing()
    {
        var topic = NewTopic();
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 3), Ten);

        var stale = Messages(topic, "e", 2, 4).Select(m => m with { Data = Encoding.UTF8.GetBytes("\"stale\"") }).ToArray();

        await Assert.ThrowsAsync<HistoryConflictException>(() => Store.AppendAsync(topic, "e", stale, Ten));
        await Assert.ThrowsAsync<HistoryConflictException>(() => Store.AppendAsync(topic, "e", Messages(topic, "e", 5, 5), Ten));
        await Assert.ThrowsAsync<HistoryConflictException>(() => Store.AppendAsync(topic, "other", Messages(topic, "other", 1, 2), Ten));
        await Assert.ThrowsAsync<HistoryConflictException>(() => Store.AppendAsync(topic, "other", Messages(topic, "other", 4, 4), Ten));

        var loaded = (await Store.LoadAsync(topic, Ten))!;
        Assert.Equal("e", loaded.Epoch);
        Assert.Equal(3, loaded.Head);
        Assert.Equal(["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"], loaded.Messages.Select(m => Encoding.UTF8.GetString(m.Data)));
    }

    [Fact]
    public async Task ATopicsFirstAppendStartsAtSeqOne()
    {
        var topic = NewTopic();
        await Assert.ThrowsAsync<HistoryConflictException>(() => Store.AppendAsync(topic, "e", Messages(topic, "e", 3, 4), Ten));
        Assert.Null(await Store.LoadAsync(topic, Ten));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 1), Ten);
        Assert.Equal(1, (await Store.LoadAsync(topic, Ten))!.Head);
    }

    [Fact]
    public async Task OfTwoWritersRacingForOneHeadExactlyOneWins()
    {
        var topic = NewTopic();
        var bounds = new HistoryBounds(100, TimeSpan.FromHours(1));
        var winners = new List<string>();
        for (var seq = 1; seq <= 20; seq++)
        {
            var writers = new[] { "a", "b" }.Select(async writer =>
            {
                var message = new TopicMessage(topic, "e", seq, Encoding.UTF8.GetBytes($"\"{writer}{seq}\""), DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
                try
                {
                    await Store.AppendAsync(topic, "e", [message], bounds);
                    return writer + seq;
                }
                catch (HistoryConflictException)
                {
                    return null;
                }
            }).ToArray();
            var won = (await Task.WhenAll(writers)).OfType<string>().ToArray();
            Assert.Single(won);
            winners.Add(won[0]);
        }

        var loaded = (await Store.LoadAsync(topic, bounds))!;
        Assert.Equal(20, loaded.Head);
        Assert.Equal(winners.Select(w => $"\"{w}\""), loaded.Messages.Select(m => Encoding.UTF8.GetString(m.Data)));
    }

    /// <summary>Defect 3 of issue 10, as a publisher sees it: an append that was written although the grain saw it fail
    /// must neither leave a second payload at its seq nor reappear after publishers were told it was not published.</summary>
    [Fact]
    public async Task AnAmbiguousAppendFailureLeavesNoDuplicateSeqAndNothingToldNotPublishedIsReplayed()
    {
        await using var silo = await StoreSilo.StartAsync(Store);
        var topic = NewTopic();
        var grain = silo.Grains.GetGrain<ITopicGrain>(topic);
        var outcomes = new List<(string Payload, TopicPosition? Position, string? Error)>();
        async Task PublishAsync(int n)
        {
            var payload = $"{{\"n\":{n}}}";
            try
            {
                outcomes.Add((payload, await grain.PublishAsync(Encoding.UTF8.GetBytes(payload), null).WaitAsync(TimeSpan.FromSeconds(30)), null));
            }
            catch (PushRejectedException rejected)
            {
                outcomes.Add((payload, null, rejected.Message));
            }
        }

        await PublishAsync(1);
        silo.Store.ApplyThenThrow();
        await PublishAsync(2);
        await PublishAsync(3);
        await silo.DeactivateAsync(grain);
        silo.Store.ApplyThenThrow();
        await PublishAsync(4);
        await silo.DeactivateAsync(grain);
        await PublishAsync(5);

        var stored = (await silo.Store.Inner.LoadAsync(topic, Ten))!;
        var seqs = stored.Messages.Select(m => m.Seq).ToArray();
        Assert.True(seqs.Distinct().Count() == seqs.Length, $"one seq holds two payloads in the store: {string.Join(",", seqs)}");
        Assert.Equal(Enumerable.Range((int)(stored.Head - seqs.Length + 1), seqs.Length).Select(i => (long)i), seqs);

        var history = (await grain.ReadAsync(0, 100)).Messages.ToDictionary(m => m.Seq, m => Encoding.UTF8.GetString(m.Data));
        var log = string.Join("; ", outcomes.Select(o => $"{o.Payload} -> {o.Position?.Seq.ToString() ?? o.Error}"));
        foreach (var (payload, position, error) in outcomes)
        {
            if (position is not null)
            {
                Assert.True(history.TryGetValue(position.Seq, out var at) && at == payload, $"{payload} was acknowledged at seq {position.Seq}, which holds {at ?? "nothing"} ({log})");
            }
            else if (error!.Contains("not published", StringComparison.Ordinal))
            {
                Assert.False(history.ContainsValue(payload), $"{payload} was refused as not published but history replays it ({log})");
            }
        }
    }

    /// <summary>An append that lands after the grain gave up on it: its publisher was told it may have been published,
    /// and it must neither overwrite nor be overwritten by what the grain publishes next.</summary>
    [Fact]
    public async Task AnAppendThatLandsAfterItsPublisherWasAnsweredTakesItsOwnSeq()
    {
        await using var silo = await StoreSilo.StartAsync(Store);
        var topic = NewTopic();
        var grain = silo.Grains.GetGrain<ITopicGrain>(topic);
        Task<TopicPosition> Publish(int n) => grain.PublishAsync(Encoding.UTF8.GetBytes($"{{\"n\":{n}}}"), null).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(1, (await Publish(1)).Seq);
        var release = new TaskCompletionSource();
        silo.Store.LandLate(release);
        silo.Store.ThrowWithoutApplying(TopicGrain.MaxUncertainRetries);
        var unsure = await Assert.ThrowsAsync<PushRejectedException>(() => Publish(2));
        Assert.Equal("unavailable", unsure.Code);
        Assert.Contains("may have been published", unsure.Message, StringComparison.Ordinal);

        release.SetResult();
        await silo.Store.LateAppend.WaitAsync(TimeSpan.FromSeconds(10));
        var third = await Publish(3);
        Assert.Equal(3, third.Seq);

        var history = await grain.ReadAsync(0, 100);
        Assert.Equal(third, new TopicPosition(history.Epoch, history.Head));
        Assert.Equal(["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"], history.Messages.Select(m => Encoding.UTF8.GetString(m.Data)));
        Assert.Equal([1L, 2, 3], (await silo.Store.Inner.LoadAsync(topic, Ten))!.Messages.Select(m => m.Seq));
    }

    [Fact]
    public async Task AnIdempotencyKeyIsFoundForItsWindowAndTheFirstAppendOfItWins()
    {
        var topic = NewTopic();
        var bounds = new HistoryBounds(10, TimeSpan.FromHours(1), TimeSpan.FromSeconds(2));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 3), [new IdempotencyKey("k1", 1), new IdempotencyKey("k3", 3)], bounds);
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 4, 4), [new IdempotencyKey("k1", 4)], bounds);

        Assert.Equal(new TopicPosition("e", 1), await Store.FindKeyAsync(topic, "k1"));
        Assert.Equal(new TopicPosition("e", 3), await Store.FindKeyAsync(topic, "k3"));
        Assert.Null(await Store.FindKeyAsync(topic, "k2"));
        Assert.Null(await Store.FindKeyAsync(NewTopic(), "k1"));

        await Task.Delay(TimeSpan.FromSeconds(2.5));
        Assert.Null(await Store.FindKeyAsync(topic, "k1"));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 5, 5), [new IdempotencyKey("k1", 5)], bounds);
        Assert.Equal(new TopicPosition("e", 5), await Store.FindKeyAsync(topic, "k1"));
    }

    /// <summary>Defect 10 of issue 10: a key is kept with its position for the whole window, also once its message has
    /// been trimmed, so a retry reaching a new activation of the topic's grain publishes nothing.</summary>
    [Fact]
    public async Task ARetryAfterTheGrainReactivatedReturnsTheFirstPositionEvenOnceItsMessageWasTrimmed()
    {
        await using var silo = await StoreSilo.StartAsync(Store);
        var topic = "small:" + NewTopic();
        var grain = silo.Grains.GetGrain<ITopicGrain>(topic);
        var first = await grain.PublishAsync(Encoding.UTF8.GetBytes("{\"first\":true}"), "order-42");
        for (var i = 0; i < 8; i++)
        {
            await grain.PublishAsync(Encoding.UTF8.GetBytes($"{{\"n\":{i}}}"), null);
        }

        await silo.DeactivateAsync(grain);
        var history = await grain.ReadAsync(0, 100);
        Assert.DoesNotContain(history.Messages, m => m.Seq == first.Seq);

        Assert.Equal(first, await grain.PublishAsync(Encoding.UTF8.GetBytes("{\"first\":true}"), "order-42").WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(new TopicPosition(first.Epoch, 9), await grain.GetPositionAsync());
    }

    [Fact]
    public async Task MessagesOlderThanTheTtlAreNotReturned()
    {
        var topic = NewTopic();
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var minute = new HistoryBounds(10, TimeSpan.FromMinutes(1));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 2, now - 120_000), minute);
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 3, 4, now), minute);

        var loaded = (await Store.LoadAsync(topic, minute))!;
        Assert.Equal(4, loaded.Head);
        Assert.Equal([3L, 4], loaded.Messages.Select(m => m.Seq));
    }

    /// <summary>Issue 16: expired messages are evicted, not only hidden from a load that asks for the same TTL.</summary>
    [Fact]
    public async Task MessagesOlderThanTheTtlAreEvictedByAnAppendNotJustHiddenFromLoads()
    {
        var topic = NewTopic();
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var minute = new HistoryBounds(10, TimeSpan.FromMinutes(1));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 2, now - 120_000), minute);
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 3, 3, now), minute);

        var loaded = (await Store.LoadAsync(topic, new HistoryBounds(10, TimeSpan.FromDays(1))))!;
        Assert.Equal(3, loaded.Head);
        Assert.Equal([3L], loaded.Messages.Select(m => m.Seq));
    }

    /// <summary>Issue 16: a quiet topic's position is kept its history's TTL plus its own, then forgotten; the topic
    /// starts over in a new epoch.</summary>
    [Fact]
    public async Task ATopicWhosePositionOutlivedItsTtlIsForgottenAndStartsOverInANewEpoch()
    {
        var topic = NewTopic();
        var shortLived = new HistoryBounds(10, TimeSpan.FromSeconds(1), PositionTtl: TimeSpan.FromSeconds(1));
        await Store.AppendAsync(topic, "old", Messages(topic, "old", 1, 2), shortLived);
        Assert.Equal(2, (await Store.LoadAsync(topic, shortLived))!.Head);

        await Task.Delay(TimeSpan.FromSeconds(2.5));
        Assert.Null(await Store.LoadAsync(topic, shortLived));
        await Assert.ThrowsAsync<HistoryConflictException>(() => Store.AppendAsync(topic, "old", Messages(topic, "old", 3, 3), shortLived));
        await Store.AppendAsync(topic, "new", Messages(topic, "new", 1, 1), shortLived);
        var loaded = (await Store.LoadAsync(topic, shortLived))!;
        Assert.Equal(("new", 1L), (loaded.Epoch, loaded.Head));
        Assert.Equal([1L], loaded.Messages.Select(m => m.Seq));
    }

    [Fact]
    public async Task TopicsAreIndependent()
    {
        var a = NewTopic();
        var b = NewTopic();
        await Store.AppendAsync(a, "ea", Messages(a, "ea", 1, 2), Ten);
        await Store.AppendAsync(b, "eb", Messages(b, "eb", 1, 1), Ten);
        Assert.Equal(2, (await Store.LoadAsync(a, Ten))!.Messages.Count);
        Assert.Single((await Store.LoadAsync(b, Ten))!.Messages);
    }

    [Fact]
    public async Task AGroupCommitOfHundredsIsOneAppend()
    {
        var topic = NewTopic();
        var bounds = new HistoryBounds(1000, TimeSpan.FromHours(1));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 256), bounds);
        var loaded = (await Store.LoadAsync(topic, bounds))!;
        Assert.Equal(256, loaded.Head);
        Assert.Equal(Enumerable.Range(1, 256).Select(i => (long)i), loaded.Messages.Select(m => m.Seq));
    }

    [Fact]
    public async Task TheLatestValueOutlivesTheCountAndAgeBounds()
    {
        var topic = NewTopic();
        var expired = DateTimeOffset.UtcNow.AddHours(-2).ToUnixTimeMilliseconds();
        var bounds = new HistoryBounds(2, TimeSpan.FromHours(1));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 3, expired), bounds, LatestChange.To(2));

        var loaded = (await Store.LoadAsync(topic, bounds))!;
        Assert.Equal(3, loaded.Head);
        Assert.Empty(loaded.Messages);
        Assert.NotNull(loaded.Latest);
        Assert.Equal((topic, "e", 3L, "{\"n\":3}", expired), (loaded.Latest.Topic, loaded.Latest.Epoch, loaded.Latest.Seq, Encoding.UTF8.GetString(loaded.Latest.Data), loaded.Latest.PublishedAtUnixMs));

        // Without history at all, too; and the next append replaces it.
        var none = bounds with { MaxCount = 0 };
        await Store.AppendAsync(topic, "e", [new TopicMessage(topic, "e", 4, [1, 2], expired, PayloadFormat.Binary)], none, LatestChange.To(0));
        var latest = (await Store.LoadAsync(topic, none))!.Latest!;
        Assert.Equal((4L, PayloadFormat.Binary), (latest.Seq, latest.Format));
        Assert.Equal([1, 2], latest.Data);
    }

    [Fact]
    public async Task AnAppendThatClearsTheLatestValueLeavesNoneBehind()
    {
        var topic = NewTopic();
        var expired = DateTimeOffset.UtcNow.AddHours(-2).ToUnixTimeMilliseconds();
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 2), new HistoryBounds(2, TimeSpan.FromHours(1)), LatestChange.To(1));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 3, 3, expired), Ten, LatestChange.Clear);

        var loaded = (await Store.LoadAsync(topic, Ten))!;
        Assert.Equal(3, loaded.Head);
        Assert.Empty(loaded.Messages);
        Assert.Null(loaded.Latest);
    }

    [Fact]
    public async Task ARetainedValueOlderThanTheHeadIsKeptByLaterAppendsUntilCleared()
    {
        var topic = NewTopic();
        var expired = DateTimeOffset.UtcNow.AddHours(-2).ToUnixTimeMilliseconds();
        var bounds = new HistoryBounds(2, TimeSpan.FromHours(1));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 3, expired), bounds, LatestChange.To(1));
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 4, 6), bounds, LatestChange.Keep);

        var loaded = (await Store.LoadAsync(topic, bounds))!;
        Assert.Equal(6, loaded.Head);
        Assert.Equal([5L, 6], loaded.Messages.Select(m => m.Seq));
        Assert.Equal((2L, "{\"n\":2}"), (loaded.Latest!.Seq, Encoding.UTF8.GetString(loaded.Latest.Data)));

        // A clear is a compare-and-set on the head like an append: a stale one changes nothing.
        await Assert.ThrowsAsync<HistoryConflictException>(() => Store.ClearLatestAsync(topic, "e", 5));
        await Assert.ThrowsAsync<HistoryConflictException>(() => Store.ClearLatestAsync(topic, "other", 6));
        Assert.Equal(2L, (await Store.LoadAsync(topic, bounds))!.Latest!.Seq);

        await Store.ClearLatestAsync(topic, "e", 6);
        loaded = (await Store.LoadAsync(topic, bounds))!;
        Assert.Null(loaded.Latest);
        Assert.Equal(6, loaded.Head);

        // Nothing stored: nothing to clear.
        await Store.ClearLatestAsync(NewTopic(), "e", 0);
    }

    [Fact]
    public async Task ANewEpochStartsWithoutTheOldEpochsLatestValue()
    {
        var topic = NewTopic();
        var lived = new HistoryBounds(10, TimeSpan.FromMilliseconds(1), PositionTtl: TimeSpan.FromMilliseconds(1));
        await Store.AppendAsync(topic, "e1", Messages(topic, "e1", 1, 1), lived, LatestChange.To(0));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (await Store.LoadAsync(topic, lived) is not null)
        {
            Assert.True(DateTime.UtcNow < deadline, "the position should be forgotten within 10 s");
            await Task.Delay(10);
        }

        await Store.AppendAsync(topic, "e2", Messages(topic, "e2", 1, 1), lived with { Ttl = TimeSpan.FromHours(1), PositionTtl = TimeSpan.FromHours(1) }, LatestChange.Keep);
        Assert.Null((await Store.LoadAsync(topic, Ten))!.Latest);
    }

    [Fact]
    public async Task LoadReturnsOnlyTheNewestWithinTheAskedBound()
    {
        var topic = NewTopic();
        await Store.AppendAsync(topic, "e", Messages(topic, "e", 1, 10), Ten);
        var loaded = (await Store.LoadAsync(topic, new HistoryBounds(4, TimeSpan.FromHours(1))))!;
        Assert.Equal([7L, 8, 9, 10], loaded.Messages.Select(m => m.Seq));
    }
}

public sealed class MemoryHistoryStoreTests : HistoryStoreConformanceTests
{
    protected override IHistoryStore Store { get; } = new MemoryHistoryStore(TimeProvider.System);
}

public sealed class RedisHistoryStoreTests : HistoryStoreConformanceTests, IDisposable
{
    private readonly ConnectionMultiplexer _redis = ConnectionMultiplexer.Connect(TestServers.Redis);

    protected override IHistoryStore Store => new RedisHistoryStore(_redis, "test" + Environment.ProcessId);

    public void Dispose() => _redis.Dispose();
}

public sealed class PostgresHistoryStoreTests : HistoryStoreConformanceTests, IDisposable
{
    private readonly NpgsqlDataSource _postgres = NpgsqlDataSource.Create(TestServers.Postgres);

    protected override IHistoryStore Store => new PostgresHistoryStore(_postgres, "test");

    public void Dispose() => _postgres.Dispose();
}

/// <summary>The real servers ./test.sh starts on loopback.</summary>
public static class TestServers
{
    public static string Redis => Environment.GetEnvironmentVariable("ORLEANSPUSH_TEST_REDIS")
        ?? throw new InvalidOperationException("ORLEANSPUSH_TEST_REDIS is not set: run the tests with ./test.sh, which starts redis-server.");

    public static string Postgres => Environment.GetEnvironmentVariable("ORLEANSPUSH_TEST_POSTGRES")
        ?? throw new InvalidOperationException("ORLEANSPUSH_TEST_POSTGRES is not set: run the tests with ./test.sh, which starts PostgreSQL.");
}
