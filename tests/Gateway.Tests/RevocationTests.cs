using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using MQTTnet;
using MQTTnet.Formatter;

namespace OrleansPush.Gateway.Tests;

/// <summary><c>POST /api/admin/users/{userId}/revoke</c>, seen from two gateways of one cluster: the user's live
/// connections on both close with <c>unauthorized</c>, every token issued before it is refused on every transport of
/// both, and a token issued a second later is accepted.</summary>
public sealed class RevocationTests
{
    private static readonly SecurityFixture Tokens = new();

    private static Dictionary<string, string?> Secured(int mqttPort) => new()
    {
        ["OrleansPush:Auth:Jwt:SigningKey"] = Convert.ToBase64String(SecurityFixture.Key),
        ["OrleansPush:Auth:Jwt:Issuer"] = SecurityFixture.Issuer,
        ["OrleansPush:Auth:Jwt:Audience"] = SecurityFixture.Audience,
        ["OrleansPush:Auth:Jwt:ClockSkew"] = "00:00:00",
        ["OrleansPush:Mqtt:Port"] = mqttPort.ToString(CultureInfo.InvariantCulture),
        ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
    };

    [Fact]
    public async Task ARevokedUsersConnectionsCloseOnEveryGatewayAndItsOldTokensAreRefusedEverywhere()
    {
        var (portA, portB) = (Ports.Free(), Ports.Free());
        await using var silo = await TestSilo.StartAsync();
        await using var a = await TestGateway.StartClientAsync(silo, Secured(portA));
        await using var b = await TestGateway.StartClientAsync(silo, Secured(portB));
        var user = SecurityFixture.NewUser();
        var old = Tokens.Token(user, topics: ["rv:**"]);

        // Live: a raw WebSocket on A, an SSE stream and an MQTT client on B.
        await using var ws = await WsClient.ConnectAsync(new Uri(a.WebSocketUri() + "?access_token=" + old));
        Assert.Equal("ok", (await ws.SubscribeAsync("rv:news")).Op);
        using var sseHttp = new HttpClient { BaseAddress = b.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        using var sse = await sseHttp.GetAsync("/sse?topic=rv:news&access_token=" + old, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, sse.StatusCode);
        using var mqtt = new MqttClientFactory().CreateMqttClient();
        var mqttGone = new TaskCompletionSource<MqttClientDisconnectedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
        mqtt.DisconnectedAsync += e =>
        {
            mqttGone.TrySetResult(e);
            return Task.CompletedTask;
        };
        using (var cts = new CancellationTokenSource(WsClient.DefaultWait))
        {
            var connected = await mqtt.ConnectAsync(MqttOptions(portB, old).Build(), cts.Token);
            Assert.Equal(MqttClientConnectResultCode.Success, connected.ResultCode);
        }

        // Revoked through A, by an operator.
        using var revoke = new HttpRequestMessage(HttpMethod.Post, $"/api/admin/users/{user}/revoke");
        revoke.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Tokens.Backend(admin: true));
        using (var answer = await a.Http.SendAsync(revoke))
        {
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        }

        // Every live connection, on both gateways, is closed with unauthorized.
        var frames = await ws.ReadToEndAsync(WsClient.DefaultWait);
        Assert.Contains(frames, f => f.Op == "error" && f.Code == "unauthorized");
        await using (var body = await sse.Content.ReadAsStreamAsync())
        {
            using var reader = new StreamReader(body);
            var text = await reader.ReadToEndAsync().WaitAsync(WsClient.DefaultWait);
            Assert.Contains("event: bye", text, StringComparison.Ordinal);
            Assert.Contains("unauthorized", text, StringComparison.Ordinal);
        }

        var gone = await mqttGone.Task.WaitAsync(WsClient.DefaultWait);
        Assert.Equal(MqttClientDisconnectReason.NotAuthorized, gone.Reason);

        // The old token is refused on every transport of both gateways.
        foreach (var (gateway, port) in new[] { (a, portA), (b, portB) })
        {
            Assert.Equal(HttpStatusCode.Unauthorized, await WebSocketStatusAsync(gateway, old));
            Assert.Equal(HttpStatusCode.Unauthorized, (await gateway.Http.GetAsync("/sse?topic=rv:news&access_token=" + old)).StatusCode);
            Assert.Equal(HttpStatusCode.Unauthorized, (await gateway.Http.GetAsync("/poll?topic=rv:news&access_token=" + old)).StatusCode);
            Assert.Equal(HttpStatusCode.Unauthorized, (await gateway.Http.PostAsync("/hubs/push/negotiate?negotiateVersion=1&access_token=" + old, null)).StatusCode);
            using var refused = new MqttClientFactory().CreateMqttClient();
            Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await MqttConnectCodeAsync(refused, MqttOptions(port, old)));
        }

        // A token issued a second after the revocation is accepted.
        await Task.Delay(TimeSpan.FromMilliseconds(1100));
        var fresh = Tokens.Token(user, topics: ["rv:**"]);
        foreach (var (gateway, port) in new[] { (a, portA), (b, portB) })
        {
            Assert.Equal(HttpStatusCode.SwitchingProtocols, await WebSocketStatusAsync(gateway, fresh));
            using var accepted = new MqttClientFactory().CreateMqttClient();
            Assert.Equal(MqttClientConnectResultCode.Success, await MqttConnectCodeAsync(accepted, MqttOptions(port, fresh)));
        }
    }

    private static MqttClientOptionsBuilder MqttOptions(int port, string token) => new MqttClientOptionsBuilder()
        .WithTcpServer("127.0.0.1", port)
        .WithClientId("rv-" + Guid.NewGuid().ToString("N"))
        .WithProtocolVersion(MqttProtocolVersion.V500)
        .WithCredentials("rv", token)
        .WithTimeout(TimeSpan.FromSeconds(10));

    private static async Task<MqttClientConnectResultCode?> MqttConnectCodeAsync(IMqttClient client, MqttClientOptionsBuilder options)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        try
        {
            return (await client.ConnectAsync(options.Build(), cts.Token)).ResultCode;
        }
        catch (Exception ex) when (ex.GetType().Name == "MqttConnectingFailedException")
        {
            return ((MqttClientConnectResult?)ex.GetType().GetProperty("Result")!.GetValue(ex))?.ResultCode;
        }
    }

    private static async Task<HttpStatusCode> WebSocketStatusAsync(TestGateway gateway, string token)
    {
        using var socket = new ClientWebSocket();
        socket.Options.AddSubProtocol("orleanspush.v1.json");
        socket.Options.CollectHttpResponseDetails = true;
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        try
        {
            await socket.ConnectAsync(new Uri(gateway.WebSocketUri() + "?access_token=" + token), cts.Token);
        }
        catch (WebSocketException)
        {
        }

        return socket.HttpStatusCode;
    }
}
