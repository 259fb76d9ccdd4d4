using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet;
using MQTTnet.Protocol;

namespace OrleansPush.Gateway.Tests;

/// <summary>An embedded gateway with fault seams: its stream (<see cref="StreamFaults"/>) and its grain calls
/// (<see cref="GrainCallFaults"/>). Each test sets faults for topics (or users) of its own.</summary>
public sealed class FaultyGatewayFixture : IAsyncLifetime
{
    public StreamFaults Stream { get; } = new();

    public GrainCallFaults Calls { get; } = new();

    public TestGateway Gateway { get; private set; } = null!;

    public int MqttPort { get; private set; }

    public async Task InitializeAsync()
    {
        MqttPort = Ports.Free();
        Gateway = await TestGateway.StartEmbeddedAsync(
            new Dictionary<string, string?>
            {
                ["OrleansPush:Topics:Namespaces:tiny:HistorySize"] = "3",
                ["OrleansPush:Topics:Personal:Presence"] = "true",
                ["OrleansPush:Gateway:EmptyTopicLinger"] = "00:00:01",
                ["OrleansPush:LongPolling:Wait"] = "00:00:10",
                ["OrleansPush:Mqtt:Port"] = MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            },
            services =>
            {
                StreamFaults.Register(Stream)(services);
                GrainCallFaults.Register(Calls)(services);
            });
    }

    public async Task DisposeAsync() => await Gateway.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class FaultyGatewayCollection : ICollectionFixture<FaultyGatewayFixture>
{
    public const string Name = "faulty gateway";
}

/// <summary>Defect 4 of issue 10 (and 6, 7, 9): gaps in what the gateway's stream brings, repaired from history or
/// told to every subscriber; never skipped in silence.</summary>
[Collection(FaultyGatewayCollection.Name)]
public sealed class GapTests(FaultyGatewayFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task LostMessageWhoseHistoryReadFailsIsRetriedNotSkipped()
    {
        var topic = GatewayFixture.NewTopic("gapretry");
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        Assert.Equal("ok", (await client.SubscribeAsync(topic)).Op);
        fixture.Stream.Lose(topic, seq => seq == 3);
        fixture.Calls.Fail(nameof(ITopicGrain.ReadAsync), topic, 2);

        for (var i = 1; i <= 5; i++)
        {
            await Gateway.PublishAsync(topic, $"{{\"i\":{i}}}");
        }

        var messages = await client.MessagesWithinAsync(5, TimeSpan.FromSeconds(15));
        Assert.Equal([1L, 2L, 3L, 4L, 5L], messages.Select(m => m.Seq));
        Assert.Equal("{\"i\":3}", messages[2].RawData);
        Assert.True(fixture.Calls.Calls(nameof(ITopicGrain.ReadAsync), topic) >= 3, "the failed reads were tried again");
    }

    [Fact]
    public async Task ResumeWhoseHistoryReadsFailIsRetriedAndWhenTheyKeepFailingAnsweredRecoveredFalse()
    {
        var topic = GatewayFixture.NewTopic("readfail");
        var first = await Gateway.PublishAsync(topic, "1");
        await Gateway.PublishAsync(topic, "2");
        await Gateway.PublishAsync(topic, "3");

        // Two failed reads: tried again, and the resume is complete.
        fixture.Calls.Fail(nameof(ITopicGrain.ReadAsync), topic, 2);
        await using (var client = await WsClient.ConnectAsync(Gateway.WebSocketUri()))
        {
            var ok = await client.SubscribeAsync(topic, new { epoch = first.Epoch, seq = 0 });
            Assert.True(ok.Recovered, ok.Raw);
            Assert.Equal([1L, 2L, 3L], (await client.MessagesWithinAsync(3, TimeSpan.FromSeconds(5))).Select(m => m.Seq));
        }

        // History cannot be read at all: the answer says so rather than claim a recovery, and live messages follow.
        fixture.Calls.Fail(nameof(ITopicGrain.ReadAsync), topic, 1000);
        await using var other = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var honest = await other.SubscribeAsync(topic, new { epoch = first.Epoch, seq = 0 });
        Assert.False(honest.Recovered, honest.Raw);
        fixture.Calls.Fail(nameof(ITopicGrain.ReadAsync), topic, 0);
        await Gateway.PublishAsync(topic, "4");
        Assert.Equal(4, (await other.MessagesAsync(1))[0].Seq);
    }

    [Fact]
    public async Task GapHistoryNoLongerHoldsResetsEveryWebSocketSubscriberWhoResumesWithRecoveredFalse()
    {
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        await using var first = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await using var second = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var epoch = (await first.SubscribeAsync(topic)).Epoch;
        await second.SubscribeAsync(topic);
        await Gateway.PublishAsync(topic, "1");
        Assert.Equal(1, (await first.MessagesAsync(1))[0].Seq);
        Assert.Equal(1, (await second.MessagesAsync(1))[0].Seq);

        // Seq 2 to 5 never reach this gateway, and the topic keeps only 3 messages: 2 and 3 are gone for good.
        await LoseTwoToFiveAndPublishTwoToEightAsync(topic);

        foreach (var client in new[] { first, second })
        {
            var next = await client.NextAsync();
            Assert.True(next.Op == "reset", "expected a reset, got " + next.Raw);
            Assert.Equal(topic, next.Topic);
            Assert.Equal("insufficient_state", next.Code);
        }

        // The subscription ended: nothing more comes until the client subscribes again, with since.
        await Gateway.PublishAsync(topic, "9");
        Assert.True(await second.IsQuietAsync(TimeSpan.FromMilliseconds(700)), "a reset subscription must not deliver");
        var ok = await first.SubscribeAsync(topic, new { epoch, seq = 1 });
        Assert.Equal("ok", ok.Op);
        Assert.False(ok.Recovered, ok.Raw);
        var replayed = new List<Frame>();
        while (await first.IsQuietAsync(TimeSpan.FromMilliseconds(300)) is false)
        {
            replayed.Add(await first.NextAsync());
        }

        Assert.Equal([7L, 8L, 9L], replayed.Where(f => f.Op == "msg").Select(f => f.Seq));
    }

    [Fact]
    public async Task GapHistoryNoLongerHoldsEndsAnSseStreamWithByeAndItsReconnectSaysRecoveredFalse()
    {
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        string lastId;
        await using (var stream = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + topic))
        {
            await stream.EventsAsync("subscribed", 1);
            await Gateway.PublishAsync(topic, "1");
            lastId = (await stream.EventsAsync("message", 1))[0].Id!;
            await LoseTwoToFiveAndPublishTwoToEightAsync(topic);

            var next = await NextEventAsync(stream);
            Assert.True(next.Event == "bye", $"expected bye, got {next.Event} {next.Data}");
            Assert.Equal("insufficient_state", next.Json.GetProperty("code").GetString());
            Assert.True(next.Json.GetProperty("reconnect").GetBoolean());
        }

        await using var resumed = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + topic, lastId);
        var replayed = await resumed.EventsAsync("message", 3);
        Assert.Equal([6L, 7L, 8L], replayed.Select(m => m.Seq));
        var subscribed = (await resumed.EventsAsync("subscribed", 1))[0];
        Assert.False(subscribed.Json.GetProperty("recovered").GetBoolean(), subscribed.Data);
    }

    [Fact]
    public async Task GapHistoryNoLongerHoldsSendsASignalRResetInvocation()
    {
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        var hub = new HubConnectionBuilder().WithUrl(new Uri(Gateway.BaseAddress, "/hubs/push")).Build();
        await using var _ = hub;
        var frames = Channel.CreateUnbounded<(string Kind, JsonElement Body)>();
        hub.On<JsonElement>("msg", m => frames.Writer.TryWrite(("msg", m.Clone())));
        hub.On<JsonElement>("reset", m => frames.Writer.TryWrite(("reset", m.Clone())));
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await hub.StartAsync(cts.Token);
        await hub.InvokeAsync<JsonElement>("Subscribe", topic, null, cts.Token);
        await Gateway.PublishAsync(topic, "1");
        Assert.Equal("msg", (await frames.Reader.ReadAsync(cts.Token)).Kind);

        await LoseTwoToFiveAndPublishTwoToEightAsync(topic);

        var (kind, body) = await frames.Reader.ReadAsync(cts.Token);
        Assert.True(kind == "reset", $"expected a reset, got {kind} {body}");
        Assert.Equal(topic, body.GetProperty("topic").GetString());
        Assert.Equal("insufficient_state", body.GetProperty("code").GetString());
    }

    [Fact]
    public async Task LongPollWaitingAcrossAGapHistoryNoLongerHoldsDeliversNothingPastItWithoutRecoveredFalse()
    {
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        var one = await Gateway.PublishAsync(topic, "1");
        var since = $"{one.Epoch}:1";
        var answers = new List<JsonElement>();
        var polling = Gateway.Http.GetFromJsonAsync<JsonElement>($"/poll?topic={topic}&since={since}");
        await Task.Delay(300); // the poll waits
        await LoseTwoToFiveAndPublishTwoToEightAsync(topic);

        answers.Add(await polling.WaitAsync(WsClient.DefaultWait));
        for (var poll = 0; poll < 3 && LastSeq(answers[^1], topic) < 8; poll++)
        {
            var position = answers[^1].GetProperty("positions").GetProperty(topic);
            since = $"{position.GetProperty("epoch").GetString()}:{position.GetProperty("seq").GetInt64()}";
            answers.Add(await Gateway.Http.GetFromJsonAsync<JsonElement>($"/poll?topic={topic}&since={since}").WaitAsync(WsClient.DefaultWait));
        }

        // Each answer either has nothing past the gap, or says recovered:false for the topic.
        foreach (var answer in answers)
        {
            var seqs = answer.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("seq").GetInt64()).ToList();
            var recovered = answer.GetProperty("positions").GetProperty(topic).TryGetProperty("recovered", out var r) ? r.GetBoolean() : (bool?)null;
            Assert.True(seqs.All(s => s <= 1) || recovered == false, $"an answer delivered past the gap without recovered:false: {answer}");
        }

        Assert.Equal(8, LastSeq(answers[^1], topic));
    }

    [Fact]
    public async Task MqttSubscriberIsDisconnectedWhenAGapCannotBeFilled()
    {
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        await using var mqtt = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await mqtt.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce));
        await Gateway.PublishAsync(topic, "1");
        Assert.Equal("1", (await mqtt.NextAsync()).Payload);
        await LoseTwoToFiveAndPublishTwoToEightAsync(topic);

        var ended = await Task.WhenAny(mqtt.Disconnected, Task.Delay(TimeSpan.FromSeconds(15)));
        var received = new List<string>();
        while (received.Count < 10 && await mqtt.TryNextAsync(TimeSpan.FromMilliseconds(200)) is { } next)
        {
            received.Add(next.Payload);
        }

        Assert.True(ended == mqtt.Disconnected, "still connected; received after the gap: " + string.Join(",", received));
        var disconnected = await mqtt.Disconnected;
        Assert.Equal(MqttClientDisconnectReason.UnspecifiedError, disconnected.Reason);
    }

    [Fact]
    public async Task SseConnectAbandonedDuringASlowAttachLeavesNoSubscriptionLeaseOrPresence()
    {
        var user = "ghost-" + Guid.NewGuid().ToString("N");
        var attach = fixture.Calls.Hold(nameof(IUserGrain.SyncAsync), user);
        using (var request = new HttpRequestMessage(HttpMethod.Get, "/sse?user=" + user))
        using (var giveUp = new CancellationTokenSource(TimeSpan.FromMilliseconds(700)))
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Gateway.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, giveUp.Token));
        }

        await Task.Delay(500); // the gateway notices the request is gone
        attach.SetResult();

        // Nothing may be left behind: no presence, and the personal channel's lease goes after the linger.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        JsonElement presence, topic;
        do
        {
            await Task.Delay(500);
            presence = await Gateway.Http.GetFromJsonAsync<JsonElement>($"/api/topics/user:{user}/presence");
            topic = await Gateway.Http.GetFromJsonAsync<JsonElement>($"/api/topics/user:{user}");
        }
        while ((presence.GetProperty("users").GetArrayLength() > 0 || topic.GetProperty("gateways").GetArrayLength() > 0) && DateTime.UtcNow < deadline);

        Assert.True(presence.GetProperty("users").GetArrayLength() == 0, "a ghost is present: " + presence);
        Assert.True(topic.GetProperty("gateways").GetArrayLength() == 0, "the personal channel's lease is still held: " + topic);
    }

    /// <summary>Read on the wire (SignalR's JSON hub protocol over a plain WebSocket), because the .NET SignalR client
    /// runs handlers on a queue of their own and may complete an invocation before earlier handlers ran.</summary>
    [Fact]
    public async Task SignalRSubscribeAnswersAfterTheReplayedMessages()
    {
        var backlog = await Backlog.PublishAsync(Gateway, GatewayFixture.NewTopic("srorder"), 90, 1000);
        using var socket = new System.Net.WebSockets.ClientWebSocket();
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await socket.ConnectAsync(new Uri($"ws://{Gateway.BaseAddress.Authority}/hubs/push"), cts.Token);
        const char separator = '\u001e';
        await SendTextAsync(socket, "{\"protocol\":\"json\",\"version\":1}" + separator, cts.Token);
        var since = JsonSerializer.Serialize(new { epoch = backlog.Epoch, seq = 0 });
        await SendTextAsync(socket, $"{{\"type\":1,\"invocationId\":\"7\",\"target\":\"Subscribe\",\"arguments\":[\"{backlog.Topic}\",{since}]}}" + separator, cts.Token);

        var before = 0;
        var text = new StringBuilder();
        var buffer = new byte[64 * 1024];
        while (true)
        {
            var result = await socket.ReceiveAsync(buffer, cts.Token);
            Assert.NotEqual(System.Net.WebSockets.WebSocketMessageType.Close, result.MessageType);
            text.Append(Encoding.UTF8.GetString(buffer, 0, result.Count));
            var frames = text.ToString().Split(separator);
            text.Clear().Append(frames[^1]);
            foreach (var json in frames[..^1].Where(f => f.Length > 2))
            {
                var frame = JsonDocument.Parse(json).RootElement;
                var type = frame.GetProperty("type").GetInt32();
                if (type == 1 && frame.GetProperty("target").GetString() == "msg")
                {
                    before++;
                }
                else if (type == 3)
                {
                    Assert.Equal("7", frame.GetProperty("invocationId").GetString());
                    Assert.True(before == 90, $"the Subscribe answer came after {before} of the 90 replayed messages");
                    Assert.True(frame.GetProperty("result").GetProperty("recovered").GetBoolean(), json);
                    return;
                }
            }
        }
    }

    private static Task SendTextAsync(System.Net.WebSockets.ClientWebSocket socket, string text, CancellationToken cancellationToken) =>
        socket.SendAsync(Encoding.UTF8.GetBytes(text), System.Net.WebSockets.WebSocketMessageType.Text, true, cancellationToken);

    [Fact]
    public async Task MessageOneTransportCannotEncodeStillReachesTheOtherSubscribers()
    {
        var topic = GatewayFixture.NewTopic("enc");
        var hub = new HubConnectionBuilder().WithUrl(new Uri(Gateway.BaseAddress, "/hubs/push")).Build();
        await using var _ = hub;
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        hub.Closed += _ =>
        {
            closed.TrySetResult();
            return Task.CompletedTask;
        };
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await hub.StartAsync(cts.Token);
        await hub.InvokeAsync<JsonElement>("Subscribe", topic, null, cts.Token); // first in the topic's fan-out
        await using var mqtt = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await mqtt.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);

        // Seq 2 arrives corrupted (not JSON): SignalR's JSON form cannot carry it; MQTT carries bytes as they are.
        var corrupt = Encoding.UTF8.GetBytes("not json {");
        fixture.Stream.Set(topic, m => m.Seq == 2 ? m with { Data = corrupt } : m);
        for (var i = 1; i <= 3; i++)
        {
            await Gateway.PublishAsync(topic, $"{{\"i\":{i}}}");
        }

        Assert.Equal("{\"i\":1}", (await mqtt.NextAsync()).Payload);
        Assert.Equal("not json {", (await mqtt.NextAsync()).Payload);
        Assert.Equal("{\"i\":3}", (await mqtt.NextAsync()).Payload);
        await closed.Task.WaitAsync(WsClient.DefaultWait); // the SignalR connection was closed, not skipped
    }

    /// <summary>Seq 2 to 5 never reach this gateway; 2 to 8 are published. A tiny topic keeps 3 messages, so when 6 comes
    /// (the first the gateway sees after 1), 2 and 3 are gone for good.</summary>
    private async Task LoseTwoToFiveAndPublishTwoToEightAsync(string topic)
    {
        fixture.Stream.Lose(topic, seq => seq is >= 2 and <= 5);
        for (var i = 2; i <= 8; i++)
        {
            await Gateway.PublishAsync(topic, i.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }

    private static long LastSeq(JsonElement answer, string topic) => answer.GetProperty("positions").GetProperty(topic).GetProperty("seq").GetInt64();

    private static async Task<SseEvent> NextEventAsync(SseClient stream)
    {
        while (true)
        {
            var e = await stream.NextAsync();
            if (e.Comment is null)
            {
                return e;
            }
        }
    }
}
