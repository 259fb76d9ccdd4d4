using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace OrleansPush.Gateway.Tests;

/// <summary>An embedded gateway with MQTT over TCP on a free loopback port and MQTT over WebSocket at <c>/mqtt</c>.</summary>
public sealed class MqttFixture : IAsyncLifetime
{
    public TestGateway Gateway { get; private set; } = null!;

    public int MqttPort { get; private set; }

    public Uri MqttWebSocketUri => new($"ws://{Gateway.BaseAddress.Authority}/mqtt");

    public async Task InitializeAsync()
    {
        MqttPort = Ports.Free();
        Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Mqtt:Port"] = MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            ["OrleansPush:Topics:Namespaces:sensors:Wildcards"] = "true",
        });
    }

    public async Task DisposeAsync() => await Gateway.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class MqttCollection : ICollectionFixture<MqttFixture>
{
    public const string Name = "mqtt gateway";
}

[Collection(MqttCollection.Name)]
public sealed class MqttTests(MqttFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task TcpListenerBoundToTheIPv4LoopbackListensThereAndNowhereElse()
    {
        // The fixture binds MQTT to 127.0.0.1: that address answers, and the IPv6 side of the same port does not.
        using (var v4 = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await v4.ConnectAsync(IPAddress.Loopback, fixture.MqttPort).WaitAsync(TimeSpan.FromSeconds(10));
        }

        using var v6 = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
        var refused = await Record.ExceptionAsync(() => v6.ConnectAsync(IPAddress.IPv6Loopback, fixture.MqttPort).WaitAsync(TimeSpan.FromSeconds(10)));
        var socketError = Assert.IsType<SocketException>(refused);
        Assert.Equal(SocketError.ConnectionRefused, socketError.SocketErrorCode);
    }

    [Fact]
    public async Task HttpPublishReachesAnMqttTcpClientAndAnMqttWebSocketClient()
    {
        var topic = GatewayFixture.NewTopic("mq");
        await using var tcp = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await using var ws = await MqttTestClient.ConnectWebSocketAsync(fixture.MqttWebSocketUri);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS0, await tcp.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtMostOnce));
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await ws.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce));

        await Gateway.PublishAsync(topic, "{\"text\":\"to mqtt\"}");

        foreach (var client in new[] { tcp, ws })
        {
            var message = await client.NextAsync();
            Assert.Equal(topic, message.Topic);
            Assert.Equal("{\"text\":\"to mqtt\"}", message.Payload);
        }
    }

    [Fact]
    public async Task MqttPublishReachesARawWebSocketSubscriberOnceAndARawPublishReachesMqttOnce()
    {
        var topic = "chat:" + Guid.NewGuid().ToString("N");
        await using var mqtt = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        Assert.Equal("ok", (await raw.SubscribeAsync(topic)).Op);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await mqtt.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce));

        Assert.Equal(MqttClientPublishReasonCode.Success, await mqtt.PublishAsync(topic, "{\"from\":\"mqtt\"}", MqttQualityOfServiceLevel.AtLeastOnce));
        var first = await raw.NextAsync();
        Assert.Equal("msg", first.Op);
        Assert.Equal(1, first.Seq);
        Assert.Equal("{\"from\":\"mqtt\"}", first.RawData);
        Assert.Equal("{\"from\":\"mqtt\"}", (await mqtt.NextAsync()).Payload);

        Assert.Equal("ok", (await raw.RequestAsync("pub", new { topic, data = new { from = "ws" } })).Op);
        Assert.Equal("{\"from\":\"ws\"}", (await mqtt.NextAsync()).Payload);
        var second = await raw.NextAsync();
        Assert.Equal(2, second.Seq);

        // Once each: nothing loops back.
        await mqtt.AssertQuietAsync(TimeSpan.FromMilliseconds(500));
        Assert.True(await raw.IsQuietAsync(TimeSpan.FromMilliseconds(100)));
    }

    [Fact]
    public async Task MosquittoSubReceivesAMessagePublishedOverHttp()
    {
        Assert.True(File.Exists("/usr/bin/mosquitto_sub"), "mosquitto_sub is not installed: apt-get install mosquitto-clients (./test.sh does).");
        var topic = GatewayFixture.NewTopic("mosq");
        var run = ChildProcess.RunAsync("mosquitto_sub",
            ["-h", "127.0.0.1", "-p", fixture.MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "-t", topic, "-q", "1", "-C", "1", "-W", "20", "-V", "mqttv311", "-i", "mosq-" + Guid.NewGuid().ToString("N")[..12]],
            null, TimeSpan.FromSeconds(30));

        // mosquitto_sub subscribes at some point after it starts: publish until it has received one message.
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(25));
        while (!run.IsCompleted && !cts.IsCancellationRequested)
        {
            await Gateway.PublishAsync(topic, "{\"text\":\"hello mosquitto\"}");
            await Task.WhenAny(run, Task.Delay(300, cts.Token).ContinueWith(_ => { }, TaskScheduler.Default));
        }

        var (exitCode, output) = await run;
        Assert.True(exitCode == 0, $"mosquitto_sub exited {exitCode}: {output}");
        Assert.Equal("{\"text\":\"hello mosquitto\"}", output.Trim());
    }

    [Fact]
    public async Task AnMqtt5ClientWithoutAClientIdIsAssignedOneAndReceives()
    {
        var topic = GatewayFixture.NewTopic("mq5");
        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId: string.Empty);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS0, await client.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtMostOnce));
        await Gateway.PublishAsync(topic, "[1,2,3]");
        Assert.Equal("[1,2,3]", (await client.NextAsync()).Payload);
    }

    [Fact]
    public async Task WildcardFiltersAndForbiddenPublishesAreRefusedWithReasons()
    {
        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientSubscribeResultCode.WildcardSubscriptionsNotSupported, await client.SubscribeAsync("news:a/+", MqttQualityOfServiceLevel.AtMostOnce));
        // The default namespace of this gateway does not allow wildcards (PlainMqttTests: one that does).
        Assert.Equal(MqttClientSubscribeResultCode.WildcardSubscriptionsNotSupported, await client.SubscribeAsync("#", MqttQualityOfServiceLevel.AtMostOnce));
        Assert.Equal(MqttClientSubscribeResultCode.TopicFilterInvalid, await client.SubscribeAsync("sensors:+", MqttQualityOfServiceLevel.AtMostOnce));
        Assert.Equal(MqttClientSubscribeResultCode.NotAuthorized, await client.SubscribeAsync("user:someone-else", MqttQualityOfServiceLevel.AtMostOnce));
        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, await client.PublishAsync(GatewayFixture.NewTopic("np"), "{}", MqttQualityOfServiceLevel.AtLeastOnce));
        // A payload need not be JSON (it is published as binary), but it must fit the size limit.
        Assert.Equal(MqttClientPublishReasonCode.PayloadFormatInvalid, await client.PublishAsync("chat:" + Guid.NewGuid().ToString("N"), new string('x', 70_000), MqttQualityOfServiceLevel.AtLeastOnce));
        Assert.True(client.IsConnected);
    }

    [Fact]
    public async Task WildcardFilterGetsExistingAndNewTopicsOfItsNamespaceThatMatchFromTheirFirstMessage()
    {
        var site = "sensors:" + Guid.NewGuid().ToString("N")[..8];
        await Gateway.PublishAsync($"{site}/hall/temp", "{\"old\":true}"); // exists before the filter: only newer messages
        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await client.SubscribeAsync($"{site}/+/temp", MqttQualityOfServiceLevel.AtLeastOnce));

        // Topics that did not exist when the filter arrived: their very first messages must arrive too, in order.
        await Gateway.PublishAsync($"{site}/hall/temp", "{\"t\":1}");
        await Gateway.PublishAsync($"{site}/kitchen/temp", "{\"t\":2}");
        await Gateway.PublishAsync($"{site}/kitchen/temp", "{\"t\":3}");
        await Gateway.PublishAsync($"{site}/kitchen/humidity", "{\"h\":1}");
        await Gateway.PublishAsync($"{site}/roof/temp/raw", "{\"r\":1}");
        var received = new List<(string Topic, string Payload)>();
        for (var i = 0; i < 3; i++)
        {
            received.Add(await client.NextAsync());
        }

        Assert.Equal([($"{site}/hall/temp", "{\"t\":1}")], received.Where(m => m.Topic.EndsWith("/hall/temp", StringComparison.Ordinal)));
        Assert.Equal([($"{site}/kitchen/temp", "{\"t\":2}"), ($"{site}/kitchen/temp", "{\"t\":3}")], received.Where(m => m.Topic.EndsWith("/kitchen/temp", StringComparison.Ordinal)));
        await client.AssertQuietAsync(TimeSpan.FromMilliseconds(500));

        // A multi-level filter, then unsubscribing it: nothing more arrives.
        await using var all = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS0, await all.SubscribeAsync($"{site}/#", MqttQualityOfServiceLevel.AtMostOnce));
        await Gateway.PublishAsync($"{site}/cellar/door", "{\"open\":true}");
        await Gateway.PublishAsync($"{site}/kitchen/humidity", "{\"h\":2}");
        var both = new[] { await all.NextAsync(), await all.NextAsync() };
        Assert.Contains(($"{site}/cellar/door", "{\"open\":true}"), both);
        Assert.Contains(($"{site}/kitchen/humidity", "{\"h\":2}"), both);
        await all.UnsubscribeAsync($"{site}/#");
        await Gateway.PublishAsync($"{site}/cellar/door", "{\"open\":false}");
        await all.AssertQuietAsync(TimeSpan.FromMilliseconds(500));
    }

    [Fact]
    public async Task UserNameIsTheUserIdAndItsPersonalChannelCanBeSubscribed()
    {
        var user = "mq-" + Guid.NewGuid().ToString("N");
        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, userName: user);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await client.SubscribeAsync("user:" + user, MqttQualityOfServiceLevel.AtLeastOnce));
        using var content = new StringContent("{\"direct\":true}", Encoding.UTF8, "application/json");
        using var response = await Gateway.Http.PostAsync("/api/users/" + user, content);
        Assert.True(response.IsSuccessStatusCode);
        var message = await client.NextAsync();
        Assert.Equal("user:" + user, message.Topic);
        Assert.Equal("{\"direct\":true}", message.Payload);
    }

    [Fact]
    public async Task UnacknowledgedQos1MessageIsSentAgainWhenAPersistentSessionReconnectsAndSubscribes()
    {
        var topic = GatewayFixture.NewTopic("mqr");
        var clientId = "resume-" + Guid.NewGuid().ToString("N");
        await using (var first = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false, acknowledge: false))
        {
            await first.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
            await Gateway.PublishAsync(topic, "{\"n\":1}");
            Assert.Equal("{\"n\":1}", (await first.NextAsync()).Payload); // received, never acknowledged
        }

        await Gateway.PublishAsync(topic, "{\"n\":2}"); // while it is away

        await using var second = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false);
        await second.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        Assert.Equal("{\"n\":1}", (await second.NextAsync()).Payload);
        Assert.Equal("{\"n\":2}", (await second.NextAsync()).Payload);
    }
}

/// <summary>An MQTTnet client with a queue of received messages; every wait is bounded.</summary>
internal sealed class MqttTestClient : IAsyncDisposable
{
    private readonly IMqttClient _client;
    private readonly Channel<MqttReceived> _received = Channel.CreateUnbounded<MqttReceived>();
    private readonly TaskCompletionSource<MqttClientDisconnectedEventArgs> _disconnected = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly System.Collections.Concurrent.ConcurrentQueue<MqttApplicationMessageReceivedEventArgs> _unacknowledged = new();

    private MqttTestClient(IMqttClient client, bool acknowledge)
    {
        _client = client;
        client.DisconnectedAsync += e =>
        {
            _disconnected.TrySetResult(e);
            return Task.CompletedTask;
        };
        client.ApplicationMessageReceivedAsync += e =>
        {
            e.AutoAcknowledge = acknowledge;
            if (!acknowledge)
            {
                _unacknowledged.Enqueue(e);
            }

            _received.Writer.TryWrite(new MqttReceived(e.ApplicationMessage.Topic, e.ApplicationMessage.ConvertPayloadToString(), e.ApplicationMessage.Retain,
                e.ApplicationMessage.QualityOfServiceLevel, e.ApplicationMessage.Payload.ToArray(), e.ApplicationMessage));
            return Task.CompletedTask;
        };
    }

    public bool IsConnected => _client.IsConnected;

    /// <summary>Completes when the connection ends, with why (MQTT 5: the server's reason code).</summary>
    public Task<MqttClientDisconnectedEventArgs> Disconnected => _disconnected.Task;

    /// <param name="configure">Sets more of the CONNECT (MQTT 5 properties, a will).</param>
    public static Task<MqttTestClient> ConnectTcpAsync(int port, string? clientId = null, bool cleanSession = true, bool acknowledge = true, string? userName = null,
        MqttProtocolVersion protocol = MqttProtocolVersion.V500, Action<MqttClientOptionsBuilder>? configure = null)
    {
        var builder = new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", port);
        if (!cleanSession && protocol == MqttProtocolVersion.V500)
        {
            // MQTT 5 keeps a session after the connection only for its Session Expiry Interval (0 unless given): a
            // persistent session here is one that does not expire (the gateway bounds it by SessionResumeWindow).
            builder.WithSessionExpiryInterval(uint.MaxValue);
        }

        configure?.Invoke(builder);
        return ConnectAsync(builder, clientId, cleanSession, acknowledge, userName, protocol);
    }

    public static Task<MqttTestClient> ConnectWebSocketAsync(Uri uri) =>
        ConnectAsync(new MqttClientOptionsBuilder().WithWebSocketServer(o => o.WithUri(uri.ToString())), null, true, true, null, MqttProtocolVersion.V500);

    /// <summary>The CONNACK of the last connect.</summary>
    public MqttClientConnectResult Connected { get; private set; } = null!;

    private static async Task<MqttTestClient> ConnectAsync(MqttClientOptionsBuilder builder, string? clientId, bool cleanSession, bool acknowledge, string? userName,
        MqttProtocolVersion protocol)
    {
        builder.WithClientId(clientId ?? "test-" + Guid.NewGuid().ToString("N"))
            .WithProtocolVersion(protocol)
            .WithCleanSession(cleanSession)
            .WithTimeout(TimeSpan.FromSeconds(10));
        if (userName is not null)
        {
            builder.WithCredentials(userName, string.Empty);
        }

        var client = new MqttClientFactory().CreateMqttClient();
        var wrapper = new MqttTestClient(client, acknowledge);
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        wrapper.Connected = await client.ConnectAsync(builder.Build(), cts.Token);
        return wrapper;
    }

    public async Task<MqttClientSubscribeResultCode> SubscribeAsync(string topic, MqttQualityOfServiceLevel qos)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var result = await _client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder().WithTopicFilter(topic, qos).Build(), cts.Token);
        return result.Items.Single().ResultCode;
    }

    public async Task UnsubscribeAsync(string filter)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var result = await _client.UnsubscribeAsync(new MqttClientUnsubscribeOptionsBuilder().WithTopicFilter(filter).Build(), cts.Token);
        Assert.Equal(MqttClientUnsubscribeResultCode.Success, result.Items.Single().ResultCode);
    }

    public async Task<MqttClientPublishReasonCode> PublishAsync(string topic, string payload, MqttQualityOfServiceLevel qos, bool retain = false)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var result = await _client.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(topic).WithPayload(payload).WithQualityOfServiceLevel(qos)
            .WithRetainFlag(retain).Build(), cts.Token);
        return result.ReasonCode;
    }

    /// <summary>Subscribes with every option of <paramref name="options"/> (MQTT 5 subscription options and identifier).</summary>
    public async Task<MqttClientSubscribeResultCode> SubscribeAsync(MqttClientSubscribeOptions options)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var result = await _client.SubscribeAsync(options, cts.Token);
        return result.Items.Single().ResultCode;
    }

    /// <summary>Publishes <paramref name="message"/> as built (MQTT 5 properties included).</summary>
    public async Task<MqttClientPublishReasonCode> PublishAsync(MqttApplicationMessage message)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        return (await _client.PublishAsync(message, cts.Token)).ReasonCode;
    }

    /// <summary>Acknowledges the oldest message not acknowledged yet (a client connected with <c>acknowledge: false</c>).</summary>
    public async Task AcknowledgeOldestAsync()
    {
        Assert.True(_unacknowledged.TryDequeue(out var oldest), "no message awaits an acknowledgement");
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await oldest.AcknowledgeAsync(cts.Token);
    }

    /// <summary>Sends SUBSCRIBE and, right behind it without waiting for the SUBACK, DISCONNECT (as Paho's test client
    /// does).</summary>
    public async Task SubscribeAndLeaveAsync(string topic, MqttQualityOfServiceLevel qos)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var subscribing = _client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder().WithTopicFilter(topic, qos).Build(), cts.Token);
        await _client.DisconnectAsync(new MqttClientDisconnectOptions(), cts.Token);
        try
        {
            await subscribing; // its SUBACK may have come before the connection closed
        }
        catch (Exception ex) when (ex is OperationCanceledException or MQTTnet.Exceptions.MqttCommunicationException)
        {
        }
    }

    /// <summary>Ends the connection with DISCONNECT reason 0x04 (MQTT 5: the server publishes the will).</summary>
    public async Task DisconnectWithWillAsync()
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await _client.DisconnectAsync(new MqttClientDisconnectOptions { Reason = MqttClientDisconnectOptionsReason.DisconnectWithWillMessage }, cts.Token);
    }

    /// <summary>Publishes <paramref name="payload"/> as is (any bytes).</summary>
    public async Task<MqttClientPublishReasonCode> PublishBytesAsync(string topic, byte[] payload, MqttQualityOfServiceLevel qos)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var result = await _client.PublishAsync(new MqttApplicationMessageBuilder().WithTopic(topic).WithPayload(payload).WithQualityOfServiceLevel(qos).Build(), cts.Token);
        return result.ReasonCode;
    }

    public async Task<(string Topic, string Payload)> NextAsync()
    {
        var m = await NextMessageAsync();
        return (m.Topic, m.Payload);
    }

    /// <summary>The next message with its retain flag.</summary>
    public async Task<MqttReceived> NextMessageAsync()
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        return await _received.Reader.ReadAsync(cts.Token);
    }

    /// <summary>The next message, or null when none arrives within <paramref name="wait"/>.</summary>
    public async Task<(string Topic, string Payload)?> TryNextAsync(TimeSpan wait)
    {
        using var cts = new CancellationTokenSource(wait);
        try
        {
            var m = await _received.Reader.ReadAsync(cts.Token);
            return (m.Topic, m.Payload);
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    public async Task AssertQuietAsync(TimeSpan wait)
    {
        using var cts = new CancellationTokenSource(wait);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await _received.Reader.ReadAsync(cts.Token));
    }

    public async ValueTask DisposeAsync()
    {
        if (_client.IsConnected)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                await _client.DisconnectAsync(new MqttClientDisconnectOptions(), cts.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or MQTTnet.Exceptions.MqttCommunicationException)
            {
            }
        }

        _client.Dispose();
    }
}

/// <summary>A message an <see cref="MqttTestClient"/> received: its topic, payload (as text, and as the bytes received),
/// retain flag and QoS, and the whole message as received (MQTT 5 properties).</summary>
internal readonly record struct MqttReceived(string Topic, string Payload, bool Retain, MqttQualityOfServiceLevel Qos, byte[]? Bytes = null,
    MqttApplicationMessage? Message = null);
