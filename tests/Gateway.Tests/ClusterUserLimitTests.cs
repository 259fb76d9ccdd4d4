using System.Net;

namespace OrleansPush.Gateway.Tests;

/// <summary><c>ConnectionsPerUser</c> holds across the cluster: the user's grain counts the user's connections over every
/// gateway.</summary>
public sealed class ClusterUserLimitTests
{
    private static readonly Dictionary<string, string?> LimitTwo = new() { ["OrleansPush:Limits:ConnectionsPerUser"] = "2" };

    [Fact]
    public async Task AUserAtTheLimitOnOneGatewayIsRefusedOnAnotherUntilAConnectionCloses()
    {
        await using var silo = await TestSilo.StartAsync();
        await using var a = await TestGateway.StartClientAsync(silo, LimitTwo);
        await using var b = await TestGateway.StartClientAsync(silo, LimitTwo);
        var user = "limit-" + Guid.NewGuid().ToString("N")[..8];

        var first = await WsClient.ConnectAsync(a.WebSocketUri("user=" + user));
        await using var second = await WsClient.ConnectAsync(a.WebSocketUri("user=" + user));

        // On B, over WebSocket and SSE alike: the user already holds two connections in the cluster.
        Assert.Equal(HttpStatusCode.TooManyRequests, await DoorProbe.WebSocketStatusAsync(b.WebSocketUri("user=" + user)));
        using (var sse = await b.Http.GetAsync($"/sse?user={user}", HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, sse.StatusCode);
        }

        // Another user is not affected.
        Assert.Equal(HttpStatusCode.SwitchingProtocols, await DoorProbe.WebSocketStatusAsync(b.WebSocketUri("user=" + user + "-other")));

        // One closes on A: B admits the user again (once A has reported the close).
        await first.DisposeAsync();
        var deadline = DateTime.UtcNow + WsClient.DefaultWait;
        HttpStatusCode status;
        while ((status = await DoorProbe.WebSocketStatusAsync(b.WebSocketUri("user=" + user))) != HttpStatusCode.SwitchingProtocols && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
        }

        Assert.Equal(HttpStatusCode.SwitchingProtocols, status);
    }

    /// <summary>The user's grain does not answer within <c>ConnectionsPerUserWait</c> (its call is held at the gateway's
    /// grain-call seam): with <c>ConnectionsPerUserWhenUnreachable=Open</c> the user connects and is served on every
    /// transport; with <c>Closed</c> every transport refuses with <c>unavailable</c> (HTTP 503, MQTT "server
    /// unavailable"). Once the grain answers again, both admit the user.</summary>
    [Theory]
    [InlineData("Open")]
    [InlineData("Closed")]
    public async Task AConnectWhoseUserGrainDoesNotAnswerInTimeIsAdmittedOrRefusedAsConfigured(string policy)
    {
        var faults = new GrainCallFaults();
        var mqttPort = Ports.Free();
        await using var gateway = await TestGateway.StartEmbeddedAsync(
            new Dictionary<string, string?>
            {
                ["OrleansPush:Limits:ConnectionsPerUser"] = "5",
                ["OrleansPush:Limits:ConnectionsPerUserWait"] = "00:00:00.300",
                ["OrleansPush:Limits:ConnectionsPerUserWhenUnreachable"] = policy,
                ["OrleansPush:Mqtt:Port"] = mqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            },
            GrainCallFaults.Register(faults));
        var user = "unreach-" + Guid.NewGuid().ToString("N")[..8];
        var topic = "unreach-" + Guid.NewGuid().ToString("N")[..8];
        var held = faults.Hold(nameof(IUserGrain.TryConnectAsync), user);
        var open = policy == "Open";

        using var mqtt = new MQTTnet.MqttClientFactory().CreateMqttClient();
        var mqttCode = await DoorProbe.MqttConnectCodeAsync(mqtt, new MQTTnet.MqttClientOptionsBuilder()
            .WithTcpServer("127.0.0.1", mqttPort)
            .WithClientId("unreach-" + Guid.NewGuid().ToString("N"))
            .WithProtocolVersion(MQTTnet.Formatter.MqttProtocolVersion.V500)
            .WithCredentials(user, string.Empty)
            .WithTimeout(TimeSpan.FromSeconds(10)));
        using var sse = await gateway.Http.GetAsync($"/sse?user={user}&topic={topic}", HttpCompletionOption.ResponseHeadersRead);
        if (open)
        {
            // Admitted and served: a message published now reaches the WebSocket client.
            await using var ws = await WsClient.ConnectAsync(gateway.WebSocketUri("user=" + user));
            Assert.Equal("ok", (await ws.SubscribeAsync(topic)).Op);
            await gateway.PublishAsync(topic, "{\"n\":1}");
            Assert.Equal(1, (await ws.MessagesAsync(1, WsClient.DefaultWait)).Single().Seq);
            Assert.Equal(HttpStatusCode.OK, sse.StatusCode);
            Assert.Equal(MQTTnet.MqttClientConnectResultCode.Success, mqttCode);
        }
        else
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, await DoorProbe.WebSocketStatusAsync(gateway.WebSocketUri("user=" + user)));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, sse.StatusCode);
            Assert.Contains("unavailable", await sse.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            Assert.Equal(MQTTnet.MqttClientConnectResultCode.ServerUnavailable, mqttCode);
        }

        Assert.True(faults.Calls(nameof(IUserGrain.TryConnectAsync), user) >= 3);

        // The grain answers again: the user is admitted whatever the policy.
        held.SetResult();
        Assert.Equal(HttpStatusCode.SwitchingProtocols, await DoorProbe.WebSocketStatusAsync(gateway.WebSocketUri("user=" + user)));
    }
}
