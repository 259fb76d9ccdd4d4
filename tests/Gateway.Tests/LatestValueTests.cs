using System.Net.Http.Json;
using System.Text.Json;
using MQTTnet;
using MQTTnet.Protocol;
using Microsoft.AspNetCore.SignalR.Client;

namespace OrleansPush.Gateway.Tests;

/// <summary>An embedded gateway with state namespaces: <c>state</c> keeps its latest value (<c>KeepLatest</c>) with a
/// two-message history that expires after <see cref="Ttl"/>; <c>plain</c> has the same history without it; <c>delta</c>
/// has delta compression.</summary>
public sealed class StateTopicsFixture : IAsyncLifetime
{
    public static readonly TimeSpan Ttl = TimeSpan.FromSeconds(1);

    public TestGateway Gateway { get; private set; } = null!;

    public int MqttPort { get; } = Ports.Free();

    public static Dictionary<string, string?> Settings() => new()
    {
        ["OrleansPush:Topics:Namespaces:state:KeepLatest"] = "true",
        ["OrleansPush:Topics:Namespaces:state:HistorySize"] = "2",
        ["OrleansPush:Topics:Namespaces:state:HistoryTtl"] = Ttl.ToString(),
        ["OrleansPush:Topics:Namespaces:plain:HistorySize"] = "2",
        ["OrleansPush:Topics:Namespaces:plain:HistoryTtl"] = Ttl.ToString(),
        ["OrleansPush:Topics:Namespaces:delta:Delta"] = "true",
        ["OrleansPush:Topics:Namespaces:rstate:KeepLatest"] = "true",
        ["OrleansPush:Topics:Namespaces:rstate:ClientPublish"] = "true",
        ["OrleansPush:Topics:Namespaces:rplain:ClientPublish"] = "true",
        ["OrleansPush:LongPolling:Wait"] = "00:00:02",
    };

    public async Task InitializeAsync() => Gateway = await TestGateway.StartEmbeddedAsync(TestGateway.Merge(Settings(), new Dictionary<string, string?>
    {
        ["OrleansPush:Mqtt:Port"] = MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
    }));

    public async Task DisposeAsync() => await Gateway.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class StateTopicsCollection : ICollectionFixture<StateTopicsFixture>
{
    public const string Name = "state topics gateway";
}

/// <summary>Latest value (DESIGN.md "State topics"): a subscribe without <c>since</c> gets the topic's newest message
/// first, on every transport, also once history has expired; a resume history cannot serve gets it with
/// <c>recovered:false</c>.</summary>
[Collection(StateTopicsCollection.Name)]
public sealed class LatestValueTests(StateTopicsFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    private async Task<string> PublishThreeAsync(string ns)
    {
        var topic = GatewayFixture.NewTopic(ns + ":lv");
        for (var n = 1; n <= 3; n++)
        {
            await Gateway.PublishAsync(topic, $"{{\"n\":{n}}}");
        }

        return topic;
    }

    /// <summary>Waits out the history's TTL, so that only what is kept beyond it can be delivered.</summary>
    private static Task HistoryExpiresAsync() => Task.Delay(StateTopicsFixture.Ttl + TimeSpan.FromMilliseconds(500));

    [Fact]
    public async Task RawWebSocketSubscribeWithoutSinceGetsTheLatestValueFirstThenLiveMessages()
    {
        var topic = await PublishThreeAsync("state");
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var ok = await client.SubscribeAsync(topic);
        Assert.Equal("ok", ok.Op);
        Assert.Equal(3, ok.Seq);
        await Gateway.PublishAsync(topic, "{\"n\":4}");
        var messages = await client.MessagesAsync(2);
        Assert.Equal([3L, 4L], messages.Select(m => m.Seq));
        Assert.Equal(["{\"n\":3}", "{\"n\":4}"], messages.Select(m => m.RawData));
    }

    [Fact]
    public async Task AfterHistoryExpiredASubscribeStillGetsTheLatestValueAndAResumeGetsItWithRecoveredFalse()
    {
        var topic = await PublishThreeAsync("state");
        var control = await PublishThreeAsync("plain");
        await HistoryExpiresAsync();

        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        Assert.Equal(3, (await client.SubscribeAsync(control, last: 1)).Seq);
        Assert.True(await client.IsQuietAsync(TimeSpan.FromMilliseconds(500)), "history of the plain namespace should have expired");

        var ok = await client.SubscribeAsync(topic);
        Assert.Equal(3, ok.Seq);
        var latest = Assert.Single(await client.MessagesAsync(1));
        Assert.Equal((topic, 3L, "{\"n\":3}"), (latest.Topic!, latest.Seq, latest.RawData));

        await using var resumer = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var resumed = await resumer.SubscribeAsync(topic, since: new { epoch = ok.Epoch, seq = 1 });
        Assert.False(resumed.Recovered);
        Assert.Equal(3, resumed.Seq);
        var replayed = Assert.Single(await resumer.MessagesAsync(1));
        Assert.Equal((3L, "{\"n\":3}"), (replayed.Seq, replayed.RawData));
    }

    [Fact]
    public async Task SseStreamGetsTheLatestValueFirst()
    {
        var topic = await PublishThreeAsync("state");
        await HistoryExpiresAsync();
        await using var stream = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + topic);
        var latest = (await stream.EventsAsync("message", 1))[0];
        Assert.Equal((3L, "{\"n\":3}"), (latest.Seq, latest.RawData));
        await Gateway.PublishAsync(topic, "{\"n\":4}");
        Assert.Equal(4, (await stream.EventsAsync("message", 1))[0].Seq);
    }

    [Fact]
    public async Task SignalRSubscribeGetsTheLatestValueFirst()
    {
        var topic = await PublishThreeAsync("state");
        await HistoryExpiresAsync();
        var hub = new HubConnectionBuilder().WithUrl(new Uri(Gateway.BaseAddress, "/hubs/push")).Build();
        await using var _ = hub;
        var received = System.Threading.Channels.Channel.CreateUnbounded<JsonElement>();
        hub.On<JsonElement>("msg", m => received.Writer.TryWrite(m.Clone()));
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await hub.StartAsync(cts.Token);
        var reply = await hub.InvokeAsync<JsonElement>("Subscribe", topic, null, cts.Token);
        Assert.Equal(3, reply.GetProperty("seq").GetInt64());
        var latest = await received.Reader.ReadAsync(cts.Token);
        Assert.Equal((3L, "{\"n\":3}"), (latest.GetProperty("seq").GetInt64(), latest.GetProperty("data").GetRawText()));
    }

    [Fact]
    public async Task MqttSubscribeGetsTheLatestValueFirst()
    {
        var topic = await PublishThreeAsync("state");
        await HistoryExpiresAsync();
        await using var mqtt = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await mqtt.SubscribeAsync(topic, MQTTnet.Protocol.MqttQualityOfServiceLevel.AtLeastOnce);
        var latest = await mqtt.NextMessageAsync();
        Assert.Equal((topic, "{\"n\":3}", true), (latest.Topic, latest.Payload, latest.Retain));
        await Gateway.PublishAsync(topic, "{\"n\":4}");
        var live = await mqtt.NextMessageAsync();
        Assert.Equal((topic, "{\"n\":4}", false), (live.Topic, live.Payload, live.Retain));
    }

    [Fact]
    public async Task MqttRetainedPublishBecomesTheLatestValueOnlyWhereKeepLatest()
    {
        var topic = GatewayFixture.NewTopic("rstate:lv");
        await using var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(topic, "{\"n\":1}", MqttQualityOfServiceLevel.AtLeastOnce, retain: true));
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(topic, "{\"n\":2}", MqttQualityOfServiceLevel.AtLeastOnce, retain: true));
        await using var subscriber = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await subscriber.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        var latest = await subscriber.NextMessageAsync();
        Assert.Equal((topic, "{\"n\":2}", true), (latest.Topic, latest.Payload, latest.Retain));

        // An empty retained payload clears it (LatestValueClearAndOfflineQueueingTests follows a later subscriber).
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(topic, "", MqttQualityOfServiceLevel.AtLeastOnce, retain: true));

        // Where the namespace keeps no latest value, a retained publish is refused and not published.
        var plain = GatewayFixture.NewTopic("rplain:lv");
        await using var watcher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await watcher.SubscribeAsync(plain, MqttQualityOfServiceLevel.AtLeastOnce);
        Assert.Equal(MqttClientPublishReasonCode.PayloadFormatInvalid, await publisher.PublishAsync(plain, "{\"n\":1}", MqttQualityOfServiceLevel.AtLeastOnce, retain: true));
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(plain, "{\"n\":2}", MqttQualityOfServiceLevel.AtLeastOnce));
        Assert.Equal((plain, "{\"n\":2}"), await watcher.NextAsync());
    }

    [Theory]
    [InlineData(null)]
    [InlineData(1u)]
    public async Task WillOfAClientWhoseSocketDiesIsPublishedToSubscribers(uint? willDelaySeconds)
    {
        var topic = GatewayFixture.NewTopic("rplain:will");
        await using var subscriber = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await subscriber.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        using (var socket = new System.Net.Sockets.TcpClient())
        {
            using var cts = new CancellationTokenSource(WsClient.DefaultWait);
            await socket.ConnectAsync("127.0.0.1", fixture.MqttPort, cts.Token);
            var stream = socket.GetStream();
            await stream.WriteAsync(ConnectWithWill("will-" + Guid.NewGuid().ToString("N")[..8], topic, "{\"gone\":true}", willDelaySeconds), cts.Token);
            var head = new byte[2];
            await stream.ReadExactlyAsync(head, cts.Token);
            var rest = new byte[head[1]];
            await stream.ReadExactlyAsync(rest, cts.Token);
            Assert.Equal((0x20, 0x00), (head[0], rest[1])); // CONNACK, accepted

            // No DISCONNECT: the socket just closes.
        }

        Assert.Equal((topic, "{\"gone\":true}"), await subscriber.NextAsync());
    }

    /// <summary>A CONNECT (clean session, keep alive 60 s) with a QoS 0 will: MQTT 3.1.1, or MQTT 5 with a will delay
    /// interval when <paramref name="willDelaySeconds"/> is given.</summary>
    private static byte[] ConnectWithWill(string clientId, string willTopic, string willMessage, uint? willDelaySeconds)
    {
        static byte[] Field(string text)
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(text);
            return [(byte)(bytes.Length >> 8), (byte)bytes.Length, .. bytes];
        }

        byte[] body = willDelaySeconds is { } delay
            ? [0x00, 0x04, (byte)'M', (byte)'Q', (byte)'T', (byte)'T', 0x05, 0x06, 0x00, 0x3C, 0x00, .. Field(clientId),
                0x05, 0x18, (byte)(delay >> 24), (byte)(delay >> 16), (byte)(delay >> 8), (byte)delay, .. Field(willTopic), .. Field(willMessage)]
            : [0x00, 0x04, (byte)'M', (byte)'Q', (byte)'T', (byte)'T', 0x04, 0x06, 0x00, 0x3C, .. Field(clientId), .. Field(willTopic), .. Field(willMessage)];
        Assert.True(body.Length < 128);
        return [0x10, (byte)body.Length, .. body];
    }

    [Fact]
    public async Task LongPollWithoutSinceGetsTheLatestValueAtOnce()
    {
        var topic = await PublishThreeAsync("state");
        await HistoryExpiresAsync();
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        using var response = await Gateway.Http.GetAsync("/poll?topic=" + topic, cts.Token);
        Assert.True(response.IsSuccessStatusCode);
        var answer = await response.Content.ReadFromJsonAsync<JsonElement>(cts.Token);
        var message = Assert.Single(answer.GetProperty("messages").EnumerateArray());
        Assert.Equal((3L, "{\"n\":3}"), (message.GetProperty("seq").GetInt64(), message.GetProperty("data").GetRawText()));
        Assert.Equal(3, answer.GetProperty("positions").GetProperty(topic).GetProperty("seq").GetInt64());
    }
}

/// <summary>The latest value lives in the store: a gateway (and its silo) started afresh on the same Redis or
/// PostgreSQL, after the history expired, still delivers it, in the same epoch.</summary>
public sealed class LatestValueStoreTests
{
    [Theory]
    [InlineData("Redis", "ORLEANSPUSH_TEST_REDIS")]
    [InlineData("Postgres", "ORLEANSPUSH_TEST_POSTGRES")]
    public async Task LatestValueSurvivesASiloRestartAfterHistoryExpired(string provider, string variable)
    {
        var connection = Environment.GetEnvironmentVariable(variable)
            ?? throw new InvalidOperationException($"{variable} is not set: run the tests with ./test.sh.");
        var settings = TestGateway.Merge(StateTopicsFixture.Settings(), new Dictionary<string, string?>
        {
            ["OrleansPush:Storage:Provider"] = provider,
            [$"OrleansPush:Storage:{provider}"] = connection,
            ["OrleansPush:Storage:Prefix"] = "lv" + Guid.NewGuid().ToString("N")[..8],
        });
        var topic = GatewayFixture.NewTopic("state:restart");
        PublishAnswer last;
        await using (var first = await TestGateway.StartEmbeddedAsync(settings))
        {
            await first.PublishAsync(topic, "{\"n\":1}");
            last = await first.PublishAsync(topic, "{\"hp\": 42, \"pos\": [1, 2]}");
        }

        await Task.Delay(StateTopicsFixture.Ttl + TimeSpan.FromMilliseconds(500));
        await using var second = await TestGateway.StartEmbeddedAsync(settings);
        await using var client = await WsClient.ConnectAsync(second.WebSocketUri());
        var ok = await client.SubscribeAsync(topic);
        Assert.Equal((last.Epoch, 2L), (ok.Epoch!, ok.Seq));
        var latest = Assert.Single(await client.MessagesAsync(1));
        Assert.Equal((last.Epoch, 2L, "{\"hp\": 42, \"pos\": [1, 2]}"), (latest.Epoch!, latest.Seq, latest.RawData));
    }
}
