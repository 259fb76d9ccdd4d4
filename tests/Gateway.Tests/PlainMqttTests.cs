using System.Globalization;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace OrleansPush.Gateway.Tests;

/// <summary>A gateway configured as a plain MQTT broker (README, MQTT): clients may publish to and use wildcards in the
/// default namespace; <c>locked:</c> is a namespace clients may not publish to; <c>state:</c> keeps a latest value.</summary>
public sealed class PlainMqttFixture : IAsyncLifetime
{
    public TestGateway Gateway { get; private set; } = null!;

    public int MqttPort { get; private set; }

    public LogCapture Logs { get; } = new();

    public string Port => MqttPort.ToString(CultureInfo.InvariantCulture);

    public async Task InitializeAsync()
    {
        MqttPort = Ports.Free();
        Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Mqtt:Port"] = Port,
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            ["Logging:LogLevel:OrleansPush"] = "Debug",
            ["OrleansPush:Topics:Default:ClientPublish"] = "true",
            ["OrleansPush:Topics:Default:Wildcards"] = "true",
            ["OrleansPush:Topics:Namespaces:locked:HistorySize"] = "10",
            ["OrleansPush:Topics:Namespaces:state:ClientPublish"] = "true",
            ["OrleansPush:Topics:Namespaces:state:KeepLatest"] = "true",
        }, logs: Logs);
    }

    public async Task DisposeAsync() => await Gateway.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class PlainMqttCollection : ICollectionFixture<PlainMqttFixture>
{
    public const string Name = "plain mqtt gateway";
}

/// <summary>MQTT as device makers use it, with clients nobody here wrote (mosquitto_pub/_sub) and MQTTnet.</summary>
[Collection(PlainMqttCollection.Name)]
public sealed class PlainMqttTests(PlainMqttFixture fixture)
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(30);

    private TestGateway Gateway => fixture.Gateway;

    private static string DefaultTopic() => "TopicA-" + Guid.NewGuid().ToString("N")[..12];

    /// <summary>Runs a mosquitto client; while it runs, <paramref name="whileRunning"/> is called every 300 ms (a
    /// subscriber subscribes at some point after it starts).</summary>
    private static async Task<(int ExitCode, string Output)> RunToolAsync(string tool, IEnumerable<string> arguments, Func<Task>? whileRunning = null)
    {
        Assert.True(File.Exists("/usr/bin/" + tool), $"{tool} is not installed: apt-get install mosquitto-clients (./test.sh does).");
        var run = ChildProcess.RunAsync(tool, arguments, null, ToolTimeout);
        using var cts = new CancellationTokenSource(ToolTimeout);
        while (whileRunning is not null && !run.IsCompleted && !cts.IsCancellationRequested)
        {
            await whileRunning();
            await Task.WhenAny(run, Task.Delay(300, cts.Token).ContinueWith(_ => { }, TaskScheduler.Default));
        }

        return await run;
    }

    [Fact]
    public async Task MosquittoSubAsTypedWithoutAClientIdReceives()
    {
        var topic = DefaultTopic();
        var (exitCode, output) = await RunToolAsync("mosquitto_sub", ["-h", "127.0.0.1", "-p", fixture.Port, "-t", topic, "-C", "1", "-W", "20"],
            () => Gateway.PublishAsync(topic, "{\"text\":\"as typed\"}"));
        Assert.True(exitCode == 0, $"mosquitto_sub exited {exitCode}: {output}");
        Assert.Equal("{\"text\":\"as typed\"}", output.Trim());
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task AnEmptyClientIdWithACleanSessionIsAcceptedAndEachClientIsAssignedItsOwn(MqttProtocolVersion protocol)
    {
        var topic = DefaultTopic();
        await using var first = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId: string.Empty, protocol: protocol);
        await using var second = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId: string.Empty, protocol: protocol);
        Assert.Equal(MqttClientConnectResultCode.Success, first.Connected.ResultCode);
        Assert.Equal(MqttClientConnectResultCode.Success, second.Connected.ResultCode);
        if (protocol == MqttProtocolVersion.V500)
        {
            Assert.False(string.IsNullOrEmpty(first.Connected.AssignedClientIdentifier));
            Assert.NotEqual(first.Connected.AssignedClientIdentifier, second.Connected.AssignedClientIdentifier);
        }

        // Both stay connected side by side (the same id would have taken the first one over) and both receive.
        await first.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        await second.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        await Gateway.PublishAsync(topic, "{\"n\":1}");
        Assert.Equal((topic, "{\"n\":1}"), await first.NextAsync());
        Assert.Equal((topic, "{\"n\":1}"), await second.NextAsync());
        Assert.True(first.IsConnected && second.IsConnected);
    }

    [Fact]
    public async Task AnEmptyClientIdWithAPersistentSessionIsRefusedOnMqtt311()
    {
        // MQTTnet's client will not send it: written by hand. CONNACK return code 0x02 is "identifier rejected".
        Assert.Equal(0x02, await RawMqtt.ConnectReturnCodeAsync(fixture.MqttPort, string.Empty, cleanSession: false));
        Assert.Equal(0x00, await RawMqtt.ConnectReturnCodeAsync(fixture.MqttPort, string.Empty, cleanSession: true));
    }

    [Theory]
    [InlineData("locked:x", false)]
    [InlineData("plain", true)]
    public async Task MosquittoPubOfARefusedPublishOnMqtt311FailsAndNothingIsPublished(string where, bool retain)
    {
        var topic = where == "plain" ? DefaultTopic() : where + Guid.NewGuid().ToString("N")[..8];
        await using var watcher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await watcher.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        string[] arguments = ["-h", "127.0.0.1", "-p", fixture.Port, "-V", "mqttv311", "-i", "pub-" + Guid.NewGuid().ToString("N")[..12], "-q", "1", "-t", topic, "-m", "{\"n\":1}", .. retain ? new[] { "-r" } : []];
        var (exitCode, output) = await RunToolAsync("mosquitto_pub", arguments);
        Assert.True(exitCode != 0, $"mosquitto_pub exited 0 (acknowledged a refused publish): {output}");
        await watcher.AssertQuietAsync(TimeSpan.FromMilliseconds(300));
    }

    [Theory]
    [InlineData(MqttQualityOfServiceLevel.AtMostOnce)]
    [InlineData(MqttQualityOfServiceLevel.AtLeastOnce)]
    public async Task ARefusedMqtt311PublishClosesTheConnectionAndIsAuditedAndCounted(MqttQualityOfServiceLevel qos)
    {
        var topic = "locked:" + Guid.NewGuid().ToString("N")[..12];
        var before = ObservabilityTests.Sample(await ObservabilityTests.ScrapeAsync(Gateway), "orleanspush_publishes_refused_total", ("transport", "mqtt"));
        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, protocol: MqttProtocolVersion.V311);
        var published = Record.ExceptionAsync(() => client.PublishAsync(topic, "{\"n\":1}", qos));
        var disconnected = await client.Disconnected.WaitAsync(WsClient.DefaultWait);
        Assert.NotNull(disconnected);
        if (qos == MqttQualityOfServiceLevel.AtLeastOnce)
        {
            Assert.NotNull(await published); // never acknowledged
        }

        Assert.True(fixture.Logs.Lines.Any(l => l.StartsWith("OrleansPush.Audit|", StringComparison.Ordinal) && l.Contains(topic, StringComparison.Ordinal)
            && l.Contains("mqtt", StringComparison.Ordinal)), string.Join("\n", fixture.Logs.Lines.Where(l => l.Contains("mqtt", StringComparison.OrdinalIgnoreCase))));
        var after = ObservabilityTests.Sample(await ObservabilityTests.ScrapeAsync(Gateway), "orleanspush_publishes_refused_total", ("transport", "mqtt"));
        Assert.True(after >= before + 1, $"refused publishes did not move ({before} -> {after})");
    }

    [Fact]
    public async Task ARefusedMqtt5PublishGetsAReasonCodeAndTheConnectionStays()
    {
        var topic = "locked:" + Guid.NewGuid().ToString("N")[..12];
        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, await client.PublishAsync(topic, "{\"n\":1}", MqttQualityOfServiceLevel.AtLeastOnce));
        Assert.True(client.IsConnected);
        var mine = DefaultTopic();
        await client.SubscribeAsync(mine, MqttQualityOfServiceLevel.AtLeastOnce);
        Assert.Equal(MqttClientPublishReasonCode.Success, await client.PublishAsync(mine, "{\"n\":2}", MqttQualityOfServiceLevel.AtLeastOnce));
        Assert.Equal((mine, "{\"n\":2}"), await client.NextAsync());
    }
}

/// <summary>Wildcards from the root of the default namespace, QoS 2, wills and retained values, as MQTT users expect.</summary>
[Collection(PlainMqttCollection.Name)]
public sealed class PlainMqttDeliveryTests(PlainMqttFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    private static string Unique() => "w" + Guid.NewGuid().ToString("N")[..10];

    [Fact]
    public async Task RootWildcardsMatchDefaultNamespaceTopicsOnlyAndNeverDollarTopics()
    {
        var p = Unique();
        await using var all = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await using var plusC = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, protocol: MqttProtocolVersion.V311);
        await using var slashPlus = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await all.SubscribeAsync("#", MqttQualityOfServiceLevel.AtLeastOnce));
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await plusC.SubscribeAsync("+/C", MqttQualityOfServiceLevel.AtLeastOnce));
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await slashPlus.SubscribeAsync("/+", MqttQualityOfServiceLevel.AtLeastOnce));

        // Other namespaces, personal channels and $ topics first: none of them reaches a root filter.
        await Gateway.PublishAsync("chat:" + p + "/C", "{\"n\":0}");
        await Gateway.PublishAsync("user:" + p, "{\"n\":0}");
        await Gateway.PublishAsync("$" + p + "/C", "{\"n\":0}");
        await Gateway.PublishAsync(p + "/C", "{\"n\":1}");
        await Gateway.PublishAsync("/" + p, "{\"n\":2}");

        Assert.Equal((p + "/C", "{\"n\":1}"), await plusC.NextAsync());
        Assert.Equal(("/" + p, "{\"n\":2}"), await slashPlus.NextAsync());
        var seen = new[] { await all.NextAsync(), await all.NextAsync() }.OrderBy(m => m.Payload, StringComparer.Ordinal).ToArray();
        Assert.Equal(new[] { (p + "/C", "{\"n\":1}"), ("/" + p, "{\"n\":2}") }, seen);
        await all.AssertQuietAsync(TimeSpan.FromMilliseconds(300));
        await plusC.AssertQuietAsync(TimeSpan.FromMilliseconds(100));
        await slashPlus.AssertQuietAsync(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public async Task OverlappingFiltersDeliverEachMessageOnceAtTheHighestQos()
    {
        var p = Unique();
        await using var client = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS2, await client.SubscribeAsync(p + "/#", MqttQualityOfServiceLevel.ExactlyOnce));
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await client.SubscribeAsync(p + "/+", MqttQualityOfServiceLevel.AtLeastOnce));
        Assert.Equal(MqttClientPublishReasonCode.Success, await client.PublishAsync(p + "/C", "{\"n\":1}", MqttQualityOfServiceLevel.ExactlyOnce));
        var message = await client.NextMessageAsync();
        Assert.Equal((p + "/C", "{\"n\":1}", MqttQualityOfServiceLevel.ExactlyOnce), (message.Topic, message.Payload, message.Qos));
        await client.AssertQuietAsync(TimeSpan.FromMilliseconds(300));
    }

    [Fact]
    public async Task Qos2IsGrantedAndAQos2PublishReachesQos2SubscribersOnce()
    {
        var topic = Unique();
        await using var subscriber = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await using var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, protocol: MqttProtocolVersion.V311);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS2, await subscriber.SubscribeAsync(topic, MqttQualityOfServiceLevel.ExactlyOnce));
        Assert.Equal(MqttClientPublishReasonCode.Success, await publisher.PublishAsync(topic, "{\"n\":1}", MqttQualityOfServiceLevel.ExactlyOnce));
        var message = await subscriber.NextMessageAsync();
        Assert.Equal((topic, "{\"n\":1}", MqttQualityOfServiceLevel.ExactlyOnce), (message.Topic, message.Payload, message.Qos));
        await subscriber.AssertQuietAsync(TimeSpan.FromMilliseconds(300));
    }

    [Fact]
    public async Task AQos2PublishSentAgainBeforeItsReleaseIsPublishedOnceAlsoAcrossAReconnect()
    {
        var topic = Unique();
        await using var subscriber = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await subscriber.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        var clientId = "q2-" + Guid.NewGuid().ToString("N")[..10];

        // Same connection: PUBLISH id 7, PUBLISH id 7 again (DUP), PUBREL 7.
        using (var raw = await RawMqtt.ConnectAsync(fixture.MqttPort, clientId, cleanSession: false))
        {
            await raw.SendAsync(RawMqtt.Publish(topic, "{\"n\":1}", 7, dup: false));
            Assert.Equal(0x50, (await raw.ReadAsync()).Type); // PUBREC
            await raw.SendAsync(RawMqtt.Publish(topic, "{\"n\":1}", 7, dup: true));
            Assert.Equal(0x50, (await raw.ReadAsync()).Type);
            await raw.SendAsync([0x62, 0x02, 0x00, 0x07]);
            Assert.Equal(0x70, (await raw.ReadAsync()).Type); // PUBCOMP

            // PUBLISH id 9; the connection drops before PUBREL.
            await raw.SendAsync(RawMqtt.Publish(topic, "{\"n\":2}", 9, dup: false));
            Assert.Equal(0x50, (await raw.ReadAsync()).Type);
        }

        Assert.Equal((topic, "{\"n\":1}"), await subscriber.NextAsync());
        Assert.Equal((topic, "{\"n\":2}"), await subscriber.NextAsync());

        // The persistent session comes back and sends id 9 again, as MQTT asks of it: not published twice.
        using (var raw = await RawMqtt.ConnectAsync(fixture.MqttPort, clientId, cleanSession: false))
        {
            await raw.SendAsync(RawMqtt.Publish(topic, "{\"n\":2}", 9, dup: true));
            Assert.Equal(0x50, (await raw.ReadAsync()).Type);
            await raw.SendAsync([0x62, 0x02, 0x00, 0x09]);
            Assert.Equal(0x70, (await raw.ReadAsync()).Type);
            await raw.SendAsync(RawMqtt.Publish(topic, "{\"n\":3}", 9, dup: false)); // id 9 again, released: a new message
            Assert.Equal(0x50, (await raw.ReadAsync()).Type);
        }

        Assert.Equal((topic, "{\"n\":3}"), await subscriber.NextAsync());
        await subscriber.AssertQuietAsync(TimeSpan.FromMilliseconds(300));
    }

    [Fact]
    public async Task UncompletedQos2MessageIsSentAgainOnceWhenAPersistentSessionReconnects()
    {
        var topic = Unique();
        var clientId = "q2s-" + Guid.NewGuid().ToString("N")[..10];
        await using (var first = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false, acknowledge: false))
        {
            await first.SubscribeAsync(topic, MqttQualityOfServiceLevel.ExactlyOnce);
            await Gateway.PublishAsync(topic, "{\"n\":1}");
            Assert.Equal("{\"n\":1}", (await first.NextAsync()).Payload); // received, never acknowledged (no PUBREC)
        }

        await Gateway.PublishAsync(topic, "{\"n\":2}");
        await using var second = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false);
        await second.SubscribeAsync(topic, MqttQualityOfServiceLevel.ExactlyOnce);
        Assert.Equal("{\"n\":1}", (await second.NextAsync()).Payload);
        Assert.Equal("{\"n\":2}", (await second.NextAsync()).Payload);
        await second.AssertQuietAsync(TimeSpan.FromMilliseconds(300));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task APersistentSessionComesBackWithItsSubscriptionsAndWhatWasPublishedWhileAway(MqttProtocolVersion protocol)
    {
        var p = Unique();
        var clientId = "ps-" + Guid.NewGuid().ToString("N")[..10];
        await using (var first = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false, protocol: protocol))
        {
            Assert.False(first.Connected.IsSessionPresent);
            // QoS 0: a message counts as delivered once handed over, so n:1 is not sent again (at QoS 1 or 2 it would be
            // until its PUBACK / PUBCOMP arrived, which may come after this client's DISCONNECT).
            await first.SubscribeAsync(p + "/+", MqttQualityOfServiceLevel.AtMostOnce);
            await first.SubscribeAsync(p + "-plain", MqttQualityOfServiceLevel.AtLeastOnce);
            await Gateway.PublishAsync(p + "/a", "{\"n\":1}");
            Assert.Equal((p + "/a", "{\"n\":1}"), await first.NextAsync());
        }

        await Gateway.PublishAsync(p + "/a", "{\"n\":2}"); // while it is away
        await Gateway.PublishAsync(p + "-plain", "{\"n\":3}");

        // It subscribes nothing: the session's subscriptions came back with it.
        await using var second = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false, protocol: protocol);
        Assert.True(second.Connected.IsSessionPresent);
        var received = new[] { await second.NextAsync(), await second.NextAsync() }.OrderBy(m => m.Payload, StringComparer.Ordinal).ToArray();
        Assert.Equal(new[] { (p + "/a", "{\"n\":2}"), (p + "-plain", "{\"n\":3}") }, received);
        await Gateway.PublishAsync(p + "/b", "{\"n\":4}"); // a new topic of the restored wildcard filter
        Assert.Equal((p + "/b", "{\"n\":4}"), await second.NextAsync());
        await second.AssertQuietAsync(TimeSpan.FromMilliseconds(300));

        // A clean session discards it.
        await second.DisposeAsync();
        await using var clean = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: true, protocol: protocol);
        Assert.False(clean.Connected.IsSessionPresent);
        await Gateway.PublishAsync(p + "/a", "{\"n\":5}");
        await clean.AssertQuietAsync(TimeSpan.FromMilliseconds(300));
    }

    [Fact]
    public async Task AWillWithADelayWaitsAndIsCancelledByAReconnectWithinIt()
    {
        var topic = Unique();
        await using var subscriber = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await subscriber.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);

        // Will delay 2 s, session expiry 60 s: the socket dies; the will is not published at once, and a reconnect
        // with the same client id within the delay cancels it.
        var clientId = "wd-" + Guid.NewGuid().ToString("N")[..10];
        using (await RawMqtt.ConnectAsync(fixture.MqttPort, clientId, cleanSession: false, will: (topic, "{\"gone\":1}", 2)))
        {
        }

        await subscriber.AssertQuietAsync(TimeSpan.FromMilliseconds(1000));
        using (await RawMqtt.ConnectAsync(fixture.MqttPort, clientId, cleanSession: false, will: (topic, "{\"gone\":2}", 2)))
        {
            await subscriber.AssertQuietAsync(TimeSpan.FromMilliseconds(2500));
        }

        // The second connection died too and nobody came back: its will is published after its delay.
        Assert.Equal((topic, "{\"gone\":2}"), await subscriber.NextAsync());
    }

    [Fact]
    public async Task AWillToANamespaceTheClientMayNotPublishToIsNotPublished()
    {
        var topic = "locked:" + Unique();
        await using var subscriber = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await subscriber.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        var clientId = "wf-" + Guid.NewGuid().ToString("N")[..10];
        using (await RawMqtt.ConnectAsync(fixture.MqttPort, clientId, cleanSession: true, will: (topic, "{\"gone\":1}", null)))
        {
        }

        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        while (!fixture.Logs.Lines.Any(l => l.Contains(clientId, StringComparison.Ordinal) && l.Contains(topic, StringComparison.Ordinal) && l.Contains("forbidden", StringComparison.Ordinal)))
        {
            await Task.Delay(50, cts.Token);
        }

        await subscriber.AssertQuietAsync(TimeSpan.FromMilliseconds(300));
    }

    [Fact]
    public async Task MosquittoSubReceivesTheRetainedValueWithTheRetainFlagAndTheWillOfAKilledClient()
    {
        var state = "state:" + Unique();
        var willTopic = Unique();
        await Gateway.PublishAsync(state, "{\"hp\":42}");
        var (exitCode, output) = await ChildProcess.RunAsync("mosquitto_sub", ["-h", "127.0.0.1", "-p", fixture.Port, "-t", state, "-C", "1", "-W", "20", "-F", "%r %p"],
            null, TimeSpan.FromSeconds(30));
        Assert.True(exitCode == 0, $"mosquitto_sub exited {exitCode}: {output}");
        Assert.Equal("1 {\"hp\":42}", output.Trim());

        await using var subscriber = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await subscriber.SubscribeAsync(willTopic, MqttQualityOfServiceLevel.AtLeastOnce);
        var own = Unique();
        var start = new System.Diagnostics.ProcessStartInfo("mosquitto_sub") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-h", "127.0.0.1", "-p", fixture.Port, "-t", own, "--will-topic", willTopic, "--will-payload", "{\"gone\":true}" })
        {
            start.ArgumentList.Add(a);
        }

        using var process = System.Diagnostics.Process.Start(start)!;
        try
        {
            // Connected and subscribed once it prints a message of its own topic; then killed (no DISCONNECT).
            using var cts = new CancellationTokenSource(WsClient.DefaultWait);
            var line = process.StandardOutput.ReadLineAsync(cts.Token).AsTask();
            while (!line.IsCompleted)
            {
                await Gateway.PublishAsync(own, "{\"ping\":1}");
                await Task.WhenAny(line, Task.Delay(200, cts.Token));
            }

            Assert.Equal("{\"ping\":1}", await line);
        }
        finally
        {
            process.Kill();
            await process.WaitForExitAsync();
        }

        Assert.Equal((willTopic, "{\"gone\":true}"), await subscriber.NextAsync());
    }
}

/// <summary>MQTT.js (npm <c>mqtt</c>, installed by test.sh in tests/browser) receives a retained value with the retain
/// flag and the will of a client it kills.</summary>
[Collection(PlainMqttCollection.Name)]
public sealed class MqttJsTests(PlainMqttFixture fixture)
{
    [Fact]
    public async Task MqttJsReceivesTheRetainedValueWithTheRetainFlagAndTheWillOfAKilledClient()
    {
        var scripts = Path.Combine(BrowserTests.RepositoryRoot(), "tests", "browser");
        Assert.True(Directory.Exists(Path.Combine(scripts, "node_modules", "mqtt")), "MQTT.js is not installed: run ./test.sh (it runs npm install in tests/browser).");
        var state = "state:js" + Guid.NewGuid().ToString("N")[..10];
        var willTopic = "jswill" + Guid.NewGuid().ToString("N")[..10];
        await fixture.Gateway.PublishAsync(state, "{\"hp\":7}");
        var (exitCode, output) = await ChildProcess.RunAsync("node", ["mqtt-js.mjs", fixture.Port, state, "{\"hp\":7}", willTopic], scripts, TimeSpan.FromSeconds(60));
        Assert.True(exitCode == 0, $"mqtt-js.mjs exited {exitCode}:\n{output}");
        Assert.Contains("retained ok", output, StringComparison.Ordinal);
        Assert.Contains("will ok", output, StringComparison.Ordinal);
    }
}

/// <summary>MQTT packets written by hand, for what no client library lets a test do (send a QoS 2 PUBLISH twice, die
/// without DISCONNECT).</summary>
internal sealed class RawMqtt : IDisposable
{
    private readonly System.Net.Sockets.TcpClient _socket;
    private readonly System.Net.Sockets.NetworkStream _stream;

    private RawMqtt(System.Net.Sockets.TcpClient socket)
    {
        _socket = socket;
        _stream = socket.GetStream();
    }

    /// <summary>Connects (MQTT 5 when a will with a delay is given, with session expiry 60 s; MQTT 3.1.1 otherwise)
    /// and reads the CONNACK, which must accept.</summary>
    public static async Task<RawMqtt> ConnectAsync(int port, string clientId, bool cleanSession, (string Topic, string Payload, uint? Delay)? will = null)
    {
        var socket = new System.Net.Sockets.TcpClient();
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await socket.ConnectAsync("127.0.0.1", port, cts.Token);
        var raw = new RawMqtt(socket);
        var flags = (byte)((cleanSession ? 0x02 : 0) | (will is null ? 0 : 0x04));
        List<byte> body;
        if (will is { Delay: { } delay } w)
        {
            body = [0x00, 0x04, .. "MQTT"u8, 0x05, flags, 0x00, 0x3C, 0x05, 0x11, 0x00, 0x00, 0x00, 0x3C, .. Field(clientId),
                0x05, 0x18, (byte)(delay >> 24), (byte)(delay >> 16), (byte)(delay >> 8), (byte)delay, .. Field(w.Topic), .. Field(w.Payload)];
        }
        else
        {
            body = [0x00, 0x04, .. "MQTT"u8, 0x04, flags, 0x00, 0x3C, .. Field(clientId)];
            if (will is { } v)
            {
                body.AddRange(Field(v.Topic));
                body.AddRange(Field(v.Payload));
            }
        }

        await raw.SendAsync([0x10, .. Length(body.Count), .. body]);
        var connack = await raw.ReadAsync();
        Assert.Equal((0x20, (byte)0x00), (connack.Type, connack.Body[1]));
        return raw;
    }

    /// <summary>An MQTT 3.1.1 CONNECT; the CONNACK's return code.</summary>
    public static async Task<int> ConnectReturnCodeAsync(int port, string clientId, bool cleanSession)
    {
        using var socket = new System.Net.Sockets.TcpClient();
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await socket.ConnectAsync("127.0.0.1", port, cts.Token);
        using var raw = new RawMqtt(socket);
        List<byte> body = [0x00, 0x04, .. "MQTT"u8, 0x04, (byte)(cleanSession ? 0x02 : 0), 0x00, 0x3C, .. Field(clientId)];
        await raw.SendAsync([0x10, .. Length(body.Count), .. body]);
        var connack = await raw.ReadAsync();
        Assert.Equal(0x20, connack.Type);
        return connack.Body[1];
    }

    public static byte[] Publish(string topic, string payload, ushort packetId, bool dup)
    {
        byte[] body = [.. Field(topic), (byte)(packetId >> 8), (byte)packetId, .. System.Text.Encoding.UTF8.GetBytes(payload)];
        return [(byte)(dup ? 0x3C : 0x34), .. Length(body.Length), .. body];
    }

    public async Task SendAsync(byte[] packet)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await _stream.WriteAsync(packet, cts.Token);
    }

    /// <summary>The next packet: its type (high nibble of the first byte) and body.</summary>
    public async Task<(int Type, byte[] Body)> ReadAsync()
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var head = new byte[1];
        await _stream.ReadExactlyAsync(head, cts.Token);
        int length = 0, shift = 0;
        byte b;
        do
        {
            var one = new byte[1];
            await _stream.ReadExactlyAsync(one, cts.Token);
            b = one[0];
            length |= (b & 0x7F) << shift;
            shift += 7;
        }
        while ((b & 0x80) != 0);
        var body = new byte[length];
        await _stream.ReadExactlyAsync(body, cts.Token);
        return (head[0] & 0xF0, body);
    }

    public void Dispose()
    {
        // Closed without DISCONNECT.
        _socket.Client.LingerState = new System.Net.Sockets.LingerOption(true, 0);
        _socket.Dispose();
    }

    private static byte[] Field(string text)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        return [(byte)(bytes.Length >> 8), (byte)bytes.Length, .. bytes];
    }

    private static byte[] Length(int length)
    {
        var bytes = new List<byte>();
        do
        {
            var digit = (byte)(length % 128);
            length /= 128;
            bytes.Add(length > 0 ? (byte)(digit | 0x80) : digit);
        }
        while (length > 0);
        return [.. bytes];
    }
}
