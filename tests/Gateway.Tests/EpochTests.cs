using System.Text;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Routing;
using StackExchange.Redis;

namespace OrleansPush.Gateway.Tests;

/// <summary>An embedded gateway on the Redis store whose leases are renewed only when a test says so, so that a test
/// can make a topic lose its history (<see cref="ForceNewEpochAsync"/>) and control when the gateway hears of it.</summary>
public sealed class EpochFixture : IAsyncLifetime
{
    private IConnectionMultiplexer? _redis;

    public string Prefix { get; } = "epoch" + Guid.NewGuid().ToString("N")[..8];

    public TestGateway Gateway { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        var redis = Environment.GetEnvironmentVariable("ORLEANSPUSH_TEST_REDIS")
            ?? throw new InvalidOperationException("ORLEANSPUSH_TEST_REDIS is not set: run the tests with ./test.sh.");
        _redis = await ConnectionMultiplexer.ConnectAsync(redis);
        Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Storage:Provider"] = "Redis",
            ["OrleansPush:Storage:Redis"] = redis,
            ["OrleansPush:Storage:Prefix"] = Prefix,
            ["OrleansPush:Routing:Lease"] = "00:30:00", // renewed by the tests, not by the clock
            ["OrleansPush:Silo:IdleGrainTimeout"] = "01:00:00", // at least the lease
        });
    }

    public TopicRouter Router => Gateway.Services.GetRequiredService<TopicRouter>();

    public Task ForceNewEpochAsync(string topic) => HistoryLoss.ForceNewEpochAsync(_redis!, Prefix, Gateway.Services.GetRequiredService<IClusterClient>(), topic);

    public async Task<TopicPosition> PublishAsync(string topic, string json)
    {
        using var timeout = new CancellationTokenSource(WsClient.DefaultWait);
        return await Gateway.Services.GetRequiredService<IClusterClient>().GetGrain<ITopicGrain>(topic)
            .PublishAsync(Encoding.UTF8.GetBytes(json), null).WaitAsync(timeout.Token);
    }

    public async Task DisposeAsync()
    {
        await Gateway.DisposeAsync();
        _redis?.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class EpochCollection : ICollectionFixture<EpochFixture>
{
    public const string Name = "epoch gateway";
}

/// <summary>Defect 2 of issue 10: a new epoch is delivered from its seq 1, and the changed epoch tells the client.</summary>
[Collection(EpochCollection.Name)]
public sealed class EpochTests(EpochFixture fixture)
{
    [Fact]
    public async Task MessageOfANewEpochIsDeliveredFromItsFirstSeq()
    {
        var topic = GatewayFixture.NewTopic("epochmsg");
        await using var client = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri());
        var old = (await client.SubscribeAsync(topic)).Epoch;
        await fixture.PublishAsync(topic, "\"a\"");
        await fixture.PublishAsync(topic, "\"b\"");
        Assert.Equal([1L, 2L], (await client.MessagesAsync(2)).Select(m => m.Seq));

        await fixture.ForceNewEpochAsync(topic);
        var published = new List<TopicPosition>();
        for (var i = 1; i <= 3; i++)
        {
            published.Add(await fixture.PublishAsync(topic, $"{{\"new\":{i}}}"));
        }

        var epoch = published[0].Epoch;
        Assert.NotEqual(old, epoch);
        Assert.Equal([1L, 2L, 3L], published.Select(p => p.Seq));

        // The new activation knows no lease, so nothing was routed here; then the stream brings the third message only.
        fixture.Router.OnMessage(new TopicMessage(topic, epoch, 3, Encoding.UTF8.GetBytes("{\"new\":3}"), 0));
        var messages = await client.MessagesWithinAsync(3, TimeSpan.FromSeconds(15));
        Assert.Equal([(epoch, 1L), (epoch, 2L), (epoch, 3L)], messages.Select(m => (m.Epoch, m.Seq)));
        Assert.Equal(["{\"new\":1}", "{\"new\":2}", "{\"new\":3}"], messages.Select(m => m.RawData));
        Assert.True(await client.IsQuietAsync(TimeSpan.FromMilliseconds(500)), "no duplicate may follow");
    }

    [Fact]
    public async Task PositionCheckAtLeaseRenewalRepairsATailStrandedInANewEpoch()
    {
        var topic = GatewayFixture.NewTopic("epochcheck");
        await using var client = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri());
        await client.SubscribeAsync(topic);
        await fixture.PublishAsync(topic, "\"a\"");
        Assert.Equal(1, (await client.MessagesAsync(1))[0].Seq);

        await fixture.ForceNewEpochAsync(topic);
        var first = await fixture.PublishAsync(topic, "\"n1\"");
        await fixture.PublishAsync(topic, "\"n2\"");

        // Nothing came (no lease at the new activation); the renewal takes the lease again and sees the new epoch.
        Assert.True(await client.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
        using (var renew = new CancellationTokenSource(WsClient.DefaultWait))
        {
            await fixture.Router.RenewAsync(renew.Token);
        }

        var repaired = await client.MessagesWithinAsync(2, TimeSpan.FromSeconds(15));
        Assert.Equal([(first.Epoch, 1L), (first.Epoch, 2L)], repaired.Select(m => (m.Epoch, m.Seq)));
        await fixture.PublishAsync(topic, "\"n3\"");
        Assert.Equal((first.Epoch, 3L), (await client.MessagesAsync(1)).Select(m => (m.Epoch, m.Seq)).Single());
    }

    [Fact]
    public async Task MessageOfAnEpochTheTopicIsNotInIsNeverDelivered()
    {
        var topic = GatewayFixture.NewTopic("epochstale");
        await using var client = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri());
        var epoch = (await client.SubscribeAsync(topic)).Epoch;
        await fixture.PublishAsync(topic, "1");
        await fixture.PublishAsync(topic, "2");
        Assert.Equal([1L, 2L], (await client.MessagesAsync(2)).Select(m => m.Seq));

        // A late or duplicated event of an epoch the grain is not in (an older activation's) arrives.
        fixture.Router.OnMessage(new TopicMessage(topic, "stale000", 3, Encoding.UTF8.GetBytes("\"stale\""), 0));
        await fixture.PublishAsync(topic, "3");
        var next = (await client.MessagesAsync(1))[0];
        Assert.Equal((epoch, 3L, "3"), (next.Epoch, next.Seq, next.RawData));
        Assert.True(await client.IsQuietAsync(TimeSpan.FromMilliseconds(500)), "nothing else may follow");
    }
}

