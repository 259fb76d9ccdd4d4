using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet;
using MQTTnet.Protocol;

namespace OrleansPush.Gateway.Tests;

/// <summary>A gateway configured as README's plain MQTT broker with retained messages: in the default namespace clients
/// may publish, use wildcards, and retain (<c>Retain</c>); <c>sensors:</c> retains without wildcards, for the other
/// transports.</summary>
public sealed class RetainBrokerFixture : IAsyncLifetime
{
    public TestGateway Gateway { get; private set; } = null!;

    public int MqttPort { get; private set; }

    public string Port => MqttPort.ToString(CultureInfo.InvariantCulture);

    public async Task InitializeAsync()
    {
        MqttPort = Ports.Free();
        Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Mqtt:Port"] = Port,
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            ["OrleansPush:Topics:Default:ClientPublish"] = "true",
            ["OrleansPush:Topics:Default:Wildcards"] = "true",
            ["OrleansPush:Topics:Default:Retain"] = "true",
            ["OrleansPush:Topics:Namespaces:sensors:ClientPublish"] = "true",
            ["OrleansPush:Topics:Namespaces:sensors:Retain"] = "true",
        });
    }

    public async Task DisposeAsync() => await Gateway.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class RetainBrokerCollection : ICollectionFixture<RetainBrokerFixture>
{
    public const string Name = "retain broker gateway";
}

/// <summary>MQTT retained messages in a <c>Retain</c> namespace (DESIGN.md "MQTT"), and what the Paho interoperability
/// test <c>test_retained_messages</c> checks. "Nothing retained" is shown by order, not by waiting: a retained value
/// would arrive before a message published after the SUBSCRIBE was answered.</summary>
[Collection(RetainBrokerCollection.Name)]
public sealed class RetainTests(RetainBrokerFixture fixture)
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(30);

    private TestGateway Gateway => fixture.Gateway;

    private static string Unique() => "r" + Guid.NewGuid().ToString("N")[..10];

    /// <summary>Subscribes a fresh client to <paramref name="filter"/>, then publishes a live marker to
    /// <paramref name="markerTopic"/> (which the filter matches): returns what came before the marker.</summary>
    private async Task<List<MqttReceived>> RetainedOnSubscribeAsync(string filter, string markerTopic)
    {
        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await client.SubscribeAsync(filter, MqttQualityOfServiceLevel.ExactlyOnce);
        await Gateway.PublishAsync(markerTopic, "{\"marker\":true}");
        var before = new List<MqttReceived>();
        while (true)
        {
            var m = await client.NextMessageAsync();
            if (m.Payload == "{\"marker\":true}")
            {
                Assert.False(m.Retain);
                return before;
            }

            before.Add(m);
        }
    }

    [Fact]
    public async Task AnMqtt5SubscriptionWithRetainHandlingTwoGetsNoRetainedValueButEveryLiveMessage()
    {
        var p = Unique();
        await using var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(p + "/a", "kept a", MqttQualityOfServiceLevel.AtLeastOnce, retain: true));
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(p + "/b", "kept b", MqttQualityOfServiceLevel.AtLeastOnce, retain: true));

        // Paho MQTT 5 test_subscribe_options: retain handling 2, on a topic and on a wildcard, sends no retained message.
        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        foreach (var filter in new[] { p + "/a", p + "/+" })
        {
            Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
                .WithTopicFilter(f => f.WithTopic(filter).WithAtLeastOnceQoS().WithRetainHandling(MqttRetainHandling.DoNotSendOnSubscribe)).Build()));
        }

        await Gateway.PublishAsync(p + "/b", "{\"live\":1}");
        var first = await client.NextMessageAsync();
        Assert.Equal((p + "/b", "{\"live\":1}", false), (first.Topic, first.Payload, first.Retain));

        // The same topics subscribed without the option still get their retained values (the check above can fail).
        Assert.Equal(2, (await RetainedOnSubscribeAsync(p + "/+", p + "/a")).Count);
    }

    /// <summary>Paho MQTT 5 <c>test_subscribe_options</c>: a SUBSCRIBE to a filter the client holds already replaces it
    /// and, with retain handling 0 (always, on MQTT 3.1.1: §3.8.4), sends its retained values again; with retain
    /// handling 1 (only for a new subscription) it sends none.</summary>
    [Theory]
    [InlineData(MQTTnet.Formatter.MqttProtocolVersion.V500)]
    [InlineData(MQTTnet.Formatter.MqttProtocolVersion.V311)]
    public async Task SubscribingAgainToAHeldFilterSendsItsRetainedValuesAgainUnlessOnlyNewOnesAreAsked(MQTTnet.Formatter.MqttProtocolVersion protocol)
    {
        var p = Unique();
        await using (var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort))
        {
            Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(p + "/a", "kept a", MqttQualityOfServiceLevel.AtLeastOnce, retain: true));
            Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(p + "/b", "kept b", MqttQualityOfServiceLevel.ExactlyOnce, retain: true));
        }

        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, protocol: protocol);
        var markers = 0;

        // What a SUBSCRIBE brings before a live message published once it was answered.
        async Task<string[]> SubscribeAsync(string filter, MqttRetainHandling handling, string markerTopic = "m")
        {
            var options = new MqttClientSubscribeOptionsBuilder().WithTopicFilter(f => f.WithTopic(filter).WithExactlyOnceQoS().WithRetainHandling(handling)).Build();
            Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS2, await client.SubscribeAsync(options));
            var marker = "{\"marker\":" + ++markers + "}";
            await Gateway.PublishAsync(p + "/" + markerTopic, marker);
            var before = new List<string>();
            for (var m = await client.NextMessageAsync(); m.Payload != marker; m = await client.NextMessageAsync())
            {
                Assert.True(m.Retain, $"{m.Topic} {m.Payload} came without the retain flag");
                before.Add(m.Topic + " " + m.Payload);
            }

            return [.. before.Order(StringComparer.Ordinal)];
        }

        string[] both = [p + "/a kept a", p + "/b kept b"];
        Assert.Equal(both, await SubscribeAsync(p + "/+", MqttRetainHandling.SendAtSubscribe));
        Assert.Equal(both, await SubscribeAsync(p + "/+", MqttRetainHandling.SendAtSubscribe));
        if (protocol == MQTTnet.Formatter.MqttProtocolVersion.V500)
        {
            Assert.Empty(await SubscribeAsync(p + "/+", MqttRetainHandling.SendAtSubscribeIfNewSubscriptionOnly));
        }

        await client.UnsubscribeAsync(p + "/+");
        Assert.Equal([p + "/b kept b"], await SubscribeAsync(p + "/b", MqttRetainHandling.SendAtSubscribe, markerTopic: "b"));
        Assert.Equal([p + "/b kept b"], await SubscribeAsync(p + "/b", MqttRetainHandling.SendAtSubscribe, markerTopic: "b"));
    }

    /// <summary>Paho MQTT 5 <c>test_publication_expiry</c>'s start: a persistent-session client sends SUBSCRIBE for a new
    /// topic and DISCONNECT right behind it; what is published meanwhile reaches it when it comes back. (Where a topic
    /// keeps a latest value, the subscription's start position used to be known only after that value was read, which
    /// could be after the DISCONNECT: the session then kept the filter but no position, and the client resumed from the
    /// head, missing everything.)</summary>
    [Fact]
    public async Task APersistentSessionThatLeavesRightAfterItsSubscribeGetsWhatWasPublishedMeanwhile()
    {
        var clientId = "away-" + Unique();
        string[] topics = [Unique() + "/t"];
        await using (var away = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false))
        {
            await away.SubscribeAndLeaveAsync(topics[0], MqttQualityOfServiceLevel.AtLeastOnce);
        }

        // The gateway has taken the SUBSCRIBE and then the DISCONNECT once it keeps the session (a publish before that
        // could precede the subscription, and nobody would owe it to the client).
        var bridge = Gateway.Services.GetRequiredService<OrleansPush.Gateway.Transports.Mqtt.MqttBridge>();
        var deadline = DateTime.UtcNow + WsClient.DefaultWait;
        while (!bridge.KeepsSessionOf(clientId))
        {
            Assert.True(DateTime.UtcNow < deadline, "the gateway kept no session for the client");
            await Task.Delay(20);
        }

        foreach (var topic in topics)
        {
            await Gateway.PublishAsync(topic, "{\"while\":\"away\"}");
        }

        await using var back = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false);
        Assert.True(back.Connected.IsSessionPresent);
        var received = new List<string>();
        for (var i = 0; i < topics.Length; i++)
        {
            var m = await back.NextMessageAsync();
            Assert.Equal("{\"while\":\"away\"}", m.Payload);
            received.Add(m.Topic);
        }

        Assert.Equal(topics.Order(StringComparer.Ordinal), received.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task OnlyARetainedPublishSetsTheRetainedValueAndAnEmptyOneClearsItWithoutBeingDelivered()
    {
        var topic = Unique();
        await using var live = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await live.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        await using var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(topic, "retained one", MqttQualityOfServiceLevel.AtLeastOnce, retain: true));
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(topic, "{\"plain\":2}", MqttQualityOfServiceLevel.AtLeastOnce));

        // Both are published; live subscribers get them without the retain flag.
        var first = await live.NextMessageAsync();
        var second = await live.NextMessageAsync();
        Assert.Equal([("retained one", false), ("{\"plain\":2}", false)], new[] { (first.Payload, first.Retain), (second.Payload, second.Retain) });

        // A new subscriber gets the retained one (not the newer plain one), with the retain flag.
        var retained = Assert.Single(await RetainedOnSubscribeAsync(topic, topic));
        Assert.Equal((topic, "retained one", true), (retained.Topic, retained.Payload, retained.Retain));
        Assert.Equal("{\"marker\":true}", (await live.NextAsync()).Payload);

        // An empty retained publish clears it and is delivered to nobody.
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(topic, string.Empty, MqttQualityOfServiceLevel.AtLeastOnce, retain: true));
        Assert.Empty(await RetainedOnSubscribeAsync(topic, topic));
        Assert.Equal("{\"marker\":true}", (await live.NextAsync()).Payload);
    }

    /// <summary>Paho <c>test_retained_messages</c>: retained values of three topics at QoS 0, 1 and 2 reach a wildcard
    /// subscriber; after an empty retained publish to each, a new wildcard subscriber gets none.</summary>
    [Fact]
    public async Task AWildcardSubscribeGetsTheRetainedValueOfEveryTopicItMatchesAndNoneOnceCleared()
    {
        var p = Unique();
        string[] topics = [p + "/B", p + "/C", p + "/D"];

        // An earlier wildcard subscriber follows the new topics as they are announced: once it has their messages, this
        // gateway knows them, and a later subscriber joins them as existing topics (a topic announced to it mid-subscribe
        // would be followed from its first message instead, as a new one).
        await using var observer = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await observer.SubscribeAsync(p + "/+", MqttQualityOfServiceLevel.ExactlyOnce);
        await using (var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, protocol: MQTTnet.Formatter.MqttProtocolVersion.V311))
        {
            for (var qos = 0; qos < 3; qos++)
            {
                await publisher.PublishAsync(topics[qos], "qos " + qos, (MqttQualityOfServiceLevel)qos, retain: true);
            }
        }

        var live = new[] { await observer.NextMessageAsync(), await observer.NextMessageAsync(), await observer.NextMessageAsync() };
        Assert.All(live, m => Assert.False(m.Retain));
        await Gateway.PublishAsync(p + "/marker", "{\"first\":true}");
        Assert.Equal("{\"first\":true}", (await observer.NextAsync()).Payload);

        var retained = await RetainedOnSubscribeAsync(p + "/+", p + "/marker");
        Assert.Equal(topics.Select((t, qos) => (t, "qos " + qos, true)).OrderBy(m => m.t, StringComparer.Ordinal),
            retained.Select(m => (m.Topic, m.Payload, m.Retain)).OrderBy(m => m.Topic, StringComparer.Ordinal));

        await using (var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, protocol: MQTTnet.Formatter.MqttProtocolVersion.V311))
        {
            for (var qos = 0; qos < 3; qos++)
            {
                await publisher.PublishAsync(topics[qos], string.Empty, (MqttQualityOfServiceLevel)qos, retain: true);
            }

            // Its QoS 0 clear went without an answer: a QoS 1 publish after it on the same connection (to a topic the
            // filter does not match) is answered after it was handled (one publish at a time per client).
            await publisher.PublishAsync(p + "-sync", "{}", MqttQualityOfServiceLevel.AtLeastOnce);
        }

        Assert.Empty(await RetainedOnSubscribeAsync(p + "/+", p + "/marker"));
    }

    [Fact]
    public async Task MosquittoPubRetainsWithDashRAndClearsWithDashRDashN()
    {
        var topic = "sensors:" + Unique();
        await RunAsync("mosquitto_pub", ["-h", "127.0.0.1", "-p", fixture.Port, "-i", "pub-" + Unique(), "-q", "1", "-t", topic, "-m", "21.5", "-r"]);
        var (_, output) = await RunAsync("mosquitto_sub", ["-h", "127.0.0.1", "-p", fixture.Port, "-t", topic, "-C", "1", "-W", "20", "-F", "%r %p"]);
        Assert.Equal("1 21.5", output.Trim());

        await RunAsync("mosquitto_pub", ["-h", "127.0.0.1", "-p", fixture.Port, "-i", "pub-" + Unique(), "-q", "1", "-t", topic, "-n", "-r"]);
        Assert.Empty(await RetainedOnSubscribeAsync(topic, topic));
    }

    /// <summary>Other transports in a Retain namespace: a subscribe without <c>since</c> gets the retained value first (as
    /// a message with its own seq, older than the position the answer gives), then live messages.</summary>
    [Fact]
    public async Task ARawWebSocketSubscribeWithoutSinceGetsTheRetainedValueFirst()
    {
        var topic = "sensors:" + Unique();
        await using (var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort))
        {
            await publisher.PublishAsync(topic, "{\"t\":20}", MqttQualityOfServiceLevel.AtLeastOnce, retain: true);
            await publisher.PublishAsync(topic, "{\"t\":21}", MqttQualityOfServiceLevel.AtLeastOnce);
        }

        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var ok = await client.SubscribeAsync(topic);
        Assert.Equal(("ok", 2L), (ok.Op, ok.Seq));
        await Gateway.PublishAsync(topic, "{\"t\":22}");
        var messages = await client.MessagesAsync(2);
        Assert.Equal([(1L, "{\"t\":20}"), (3L, "{\"t\":22}")], messages.Select(m => (m.Seq, m.RawData)));

        // With since, it is a resume: history, not the retained value.
        await using var resumed = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await resumed.SubscribeAsync(topic, new { epoch = ok.Epoch, seq = 2 });
        await Gateway.PublishAsync(topic, "{\"t\":23}");
        Assert.Equal([(3L, "{\"t\":22}"), (4L, "{\"t\":23}")], (await resumed.MessagesAsync(2)).Select(m => (m.Seq, m.RawData)));
    }

    private static async Task<(int ExitCode, string Output)> RunAsync(string tool, IEnumerable<string> arguments)
    {
        Assert.True(File.Exists("/usr/bin/" + tool), $"{tool} is not installed: apt-get install mosquitto-clients (./test.sh does).");
        var (exitCode, output) = await ChildProcess.RunAsync(tool, arguments, null, ToolTimeout);
        Assert.True(exitCode == 0, $"{tool} exited {exitCode}: {output}");
        return (exitCode, output);
    }
}

/// <summary>Issue 13's last item and Paho's <c>test_offline_message_queueing</c>, on the plain-broker gateway of
/// <see cref="PlainMqttFixture"/> (<c>state:</c> keeps a latest value).</summary>
[Collection(PlainMqttCollection.Name)]
public sealed class LatestValueClearAndOfflineQueueingTests(PlainMqttFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    private static string Unique() => "q" + Guid.NewGuid().ToString("N")[..10];

    [Fact]
    public async Task AnEmptyRetainedPublishClearsAKeepLatestValueForMqttAndRawWebSocketSubscribers()
    {
        var topic = "state:" + Unique();
        await Gateway.PublishAsync(topic, "{\"hp\":42}");
        await using var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(topic, string.Empty, MqttQualityOfServiceLevel.AtLeastOnce, retain: true));
        await AssertNothingRetainedAsync(topic, "{\"hp\":43}");

        // Set again by a publish, and cleared by mosquitto_pub -r -n (MQTT 3.1.1).
        await Gateway.PublishAsync(topic, "{\"hp\":44}");
        var (exitCode, output) = await ChildProcess.RunAsync("mosquitto_pub",
            ["-h", "127.0.0.1", "-p", fixture.Port, "-V", "mqttv311", "-i", "pub-" + Unique(), "-q", "1", "-t", topic, "-n", "-r"], null, TimeSpan.FromSeconds(30));
        Assert.True(exitCode == 0, $"mosquitto_pub exited {exitCode}: {output}");
        await AssertNothingRetainedAsync(topic, "{\"hp\":45}");
    }

    /// <summary>A later MQTT and raw WS subscriber get no retained value: the first thing each receives is
    /// <paramref name="live"/>, published after both subscribes were answered.</summary>
    private async Task AssertNothingRetainedAsync(string topic, string live)
    {
        await using var mqtt = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await mqtt.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        await using var ws = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        Assert.Equal("ok", (await ws.SubscribeAsync(topic)).Op);
        await Gateway.PublishAsync(topic, live);
        var first = await mqtt.NextMessageAsync();
        Assert.Equal((live, false), (first.Payload, first.Retain));
        Assert.Equal(live, (await ws.MessagesAsync(1))[0].RawData);
    }

    /// <summary>Paho <c>test_offline_message_queueing</c>: a persistent session subscribed <c>+/+</c> at QoS 2 and went
    /// away; another client publishes at QoS 0, 1 and 2 to topics nobody had published to before; the session comes back
    /// (session present) and gets them.</summary>
    [Theory]
    [InlineData(MQTTnet.Formatter.MqttProtocolVersion.V311)]
    [InlineData(MQTTnet.Formatter.MqttProtocolVersion.V500)]
    public async Task APersistentSessionGetsWhatWasPublishedWhileAwayToTopicsThatAppearedMeanwhile(MQTTnet.Formatter.MqttProtocolVersion protocol)
    {
        var p = Unique();
        var clientId = "offline-" + Unique();
        await using (var away = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false, protocol: protocol))
        {
            Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS2, await away.SubscribeAsync(p + "/+", MqttQualityOfServiceLevel.ExactlyOnce));
        }

        string[] topics = [p + "/a", p + "/b", p + "/c"];
        await using (var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, protocol: protocol))
        {
            for (var qos = 0; qos < 3; qos++)
            {
                await publisher.PublishAsync(topics[qos], "qos " + qos, (MqttQualityOfServiceLevel)Math.Max(qos, 1));
            }
        }

        await using var back = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false, protocol: protocol);
        Assert.True(back.Connected.IsSessionPresent);
        var received = new[] { await back.NextAsync(), await back.NextAsync(), await back.NextAsync() };
        Assert.Equal(topics.Select((t, qos) => (t, "qos " + qos)), received.OrderBy(m => m.Topic, StringComparer.Ordinal));
    }

    /// <summary>Paho MQTT 5 <c>test_offline_message_queueing</c>: clean start only discards the session the client had; with a
    /// session expiry interval the new session outlives the connection (MQTT 5 §3.1.2.4, §3.1.2.11.2).</summary>
    [Fact]
    public async Task AnMqtt5SessionWithCleanStartAndASessionExpiryIntervalOutlivesItsConnection()
    {
        var p = Unique();
        var clientId = "expiry-" + Unique();
        using (var away = new MqttClientFactory().CreateMqttClient())
        {
            using var cts = new CancellationTokenSource(WsClient.DefaultWait);
            await away.ConnectAsync(new MqttClientOptionsBuilder().WithTcpServer("127.0.0.1", fixture.MqttPort).WithClientId(clientId)
                .WithProtocolVersion(MQTTnet.Formatter.MqttProtocolVersion.V500).WithCleanStart(true).WithSessionExpiryInterval(99999).Build(), cts.Token);
            await away.SubscribeAsync(new MqttClientSubscribeOptionsBuilder().WithTopicFilter(p + "/+", MqttQualityOfServiceLevel.ExactlyOnce).Build(), cts.Token);
            await away.DisconnectAsync(new MqttClientDisconnectOptions(), cts.Token);
        }

        await Gateway.PublishAsync(p + "/a", "{\"n\":1}");
        await using var back = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false);
        Assert.True(back.Connected.IsSessionPresent);
        Assert.Equal((p + "/a", "{\"n\":1}"), await back.NextAsync());
    }
}
