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
    public async Task ANewEpochDropsTheOldEpochsMessages()
    {
        var topic = NewTopic();
        await Store.AppendAsync(topic, "old", Messages(topic, "old", 1, 5), Ten);
        await Store.AppendAsync(topic, "new", Messages(topic, "new", 1, 2), Ten);

        var loaded = (await Store.LoadAsync(topic, Ten))!;
        Assert.Equal("new", loaded.Epoch);
        Assert.Equal(2, loaded.Head);
        Assert.Equal([1L, 2], loaded.Messages.Select(m => m.Seq));
        Assert.All(loaded.Messages, m => Assert.Equal("new", m.Epoch));
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
