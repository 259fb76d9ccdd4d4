using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Http.Connections;
using Microsoft.AspNetCore.SignalR.Client;
using MQTTnet;
using MQTTnet.Formatter;

namespace OrleansPush.Gateway.Tests;

/// <summary>The connections gauge (<c>orleanspush_connections</c>) follows what is open: every transport's connection
/// counts while it is open and stops counting once it closes, whether it was accepted or refused. Runs with the
/// observability tests, alone, because the gateway's meter is shared by every gateway of the process.</summary>
[Collection(ObservabilityCollection.Name)]
public sealed class ConnectionGaugeTests
{
    private static readonly string[] Transports = ["ws", "signalr", "sse", "poll", "mqtt"];

    [Fact]
    public async Task EveryTransportsConnectionsLeaveTheGaugeWhereItWasOnceClosed()
    {
        var mqttPort = Ports.Free();
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Mqtt:Port"] = mqttPort.ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            ["OrleansPush:LongPolling:Wait"] = "00:00:00.200",
        });
        var topic = GatewayFixture.NewTopic("gauge");
        await gateway.PublishAsync(topic, "{\"n\":1}");
        var before = await CountsAsync(gateway);

        // Raw WebSocket, with and without a user.
        await using (var ws = await WsClient.ConnectAsync(gateway.WebSocketUri("user=gauge-ws")))
        await using (var anonymous = await WsClient.ConnectAsync(gateway.WebSocketUri()))
        {
            await ws.SubscribeAsync(topic);
            await AssertCountedAsync(gateway, before, "ws", 2);
        }

        // SignalR on each of its transports.
        foreach (var transport in new[] { HttpTransportType.WebSockets, HttpTransportType.ServerSentEvents, HttpTransportType.LongPolling })
        {
            await using var hub = new HubConnectionBuilder().WithUrl(new Uri(gateway.BaseAddress, "/hubs/push?user=gauge-hub"), transport).Build();
            using var cts = new CancellationTokenSource(WsClient.DefaultWait);
            await hub.StartAsync(cts.Token);
            await hub.InvokeAsync<object>("Subscribe", topic, null, cts.Token);
            await AssertCountedAsync(gateway, before, "signalr", 1);
            await hub.StopAsync(cts.Token);
        }

        // SSE: an open stream, and streams refused before they start (a bad topic, a forbidden personal channel).
        using (var cts = new CancellationTokenSource(WsClient.DefaultWait))
        {
            using var stream = await gateway.Http.GetAsync($"/sse?topic={topic}&user=gauge-sse", HttpCompletionOption.ResponseHeadersRead, cts.Token);
            Assert.Equal(HttpStatusCode.OK, stream.StatusCode);
            await AssertCountedAsync(gateway, before, "sse", 1);
            using var badTopic = await gateway.Http.GetAsync("/sse?topic=bad%20topic", cts.Token);
            Assert.Equal(HttpStatusCode.BadRequest, badTopic.StatusCode);
            using var forbidden = await gateway.Http.GetAsync("/sse?topic=user:someone-else&user=gauge-sse", cts.Token);
            Assert.Equal(HttpStatusCode.Forbidden, forbidden.StatusCode);
        }

        // Long polling: an answered poll, a poll that waits out its time, and a refused one.
        using (var cts = new CancellationTokenSource(WsClient.DefaultWait))
        {
            using var answered = await gateway.Http.GetAsync($"/poll?topic={topic}&since=&user=gauge-poll", cts.Token);
            Assert.Equal(HttpStatusCode.OK, answered.StatusCode);
            var position = await PositionAsync(gateway, topic);
            using var resumed = await gateway.Http.GetAsync($"/poll?topic={topic}&since={position}&user=gauge-poll", cts.Token);
            Assert.Equal(HttpStatusCode.OK, resumed.StatusCode);
            using var refused = await gateway.Http.GetAsync("/poll?topic=bad%20topic", cts.Token);
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        }

        // MQTT over TCP and over WebSocket.
        foreach (var overTcp in new[] { true, false })
        {
            var builder = new MqttClientOptionsBuilder().WithClientId("gauge-" + Guid.NewGuid().ToString("N")).WithProtocolVersion(MqttProtocolVersion.V500)
                .WithCredentials("gauge-mqtt", string.Empty).WithTimeout(TimeSpan.FromSeconds(10));
            builder = overTcp
                ? builder.WithTcpServer("127.0.0.1", mqttPort)
                : builder.WithWebSocketServer(o => o.WithUri($"ws://{gateway.BaseAddress.Authority}/mqtt"));
            using var client = new MqttClientFactory().CreateMqttClient();
            using var cts = new CancellationTokenSource(WsClient.DefaultWait);
            await client.ConnectAsync(builder.Build(), cts.Token);
            await client.SubscribeAsync(topic, cancellationToken: cts.Token);
            await AssertCountedAsync(gateway, before, "mqtt", 1);
            await client.DisconnectAsync(cancellationToken: cts.Token);
        }

        // Once everything has closed, every transport's gauge is back where it was.
        var after = await SettledAsync(gateway, before);
        var moved = Transports.Where(t => before[t] != after[t]).Select(t => $"{t}: {before[t]} before, {after[t]} after").ToArray();
        Assert.True(moved.Length == 0, "gauges not back where they were: " + string.Join("; ", moved));
    }

    private static async Task<Dictionary<string, double>> CountsAsync(TestGateway gateway)
    {
        var scrape = await ObservabilityTests.ScrapeAsync(gateway);
        return Transports.ToDictionary(t => t, t => ObservabilityTests.Sample(scrape, "orleanspush_connections", ("transport", t)), StringComparer.Ordinal);
    }

    /// <summary>Waits (bounded) until the transport's gauge shows <paramref name="open"/> more than before.</summary>
    private static async Task AssertCountedAsync(TestGateway gateway, Dictionary<string, double> before, string transport, int open)
    {
        var deadline = DateTime.UtcNow + WsClient.DefaultWait;
        double now;
        while ((now = (await CountsAsync(gateway))[transport]) != before[transport] + open && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.True(now == before[transport] + open, $"{transport}: {open} open, but the gauge moved from {before[transport]} to {now}");
    }

    /// <summary>The gauges once they stop moving towards where they were (a close is reported after the client's side
    /// ended), bounded.</summary>
    private static async Task<Dictionary<string, double>> SettledAsync(TestGateway gateway, Dictionary<string, double> before)
    {
        var deadline = DateTime.UtcNow + WsClient.DefaultWait;
        var counts = await CountsAsync(gateway);
        while (Transports.Any(t => counts[t] > before[t]) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
            counts = await CountsAsync(gateway);
        }

        return counts;
    }

    private static async Task<string> PositionAsync(TestGateway gateway, string topic)
    {
        var answer = await gateway.Http.GetFromJsonAsync<System.Text.Json.JsonElement>("/api/admin/topics/" + topic);
        var position = answer.GetProperty("position");
        return position.GetProperty("epoch").GetString() + ":" + position.GetProperty("seq").GetInt64().ToString(CultureInfo.InvariantCulture);
    }
}
