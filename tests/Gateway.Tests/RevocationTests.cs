using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using MQTTnet;
using MQTTnet.Formatter;

namespace OrleansPush.Gateway.Tests;

/// <summary><c>POST /api/admin/users/{userId}/revoke</c>, seen from two gateways of one cluster: the user's live
/// connections on both close with <c>unauthorized</c>, every token issued before it is refused on every transport of
/// both, and a token issued a second later is accepted; all of it also after the silo restarted.</summary>
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
        await using (var live = await LiveConnections.OpenAsync(a, b, portB, old))
        {
            await RevokeAsync(a, user);
            await live.AssertClosedUnauthorizedAsync();
        }

        await AssertRefusedEverywhereAsync([(a, portA), (b, portB)], old);

        // A token issued a second after the revocation is accepted.
        await Task.Delay(TimeSpan.FromMilliseconds(1100));
        await AssertAcceptedEverywhereAsync([(a, portA), (b, portB)], Tokens.Token(user, topics: ["rv:**"]));
    }

    /// <summary>One silo process on a durable store (Redis), restarted in place between a revocation and the next: the
    /// old tokens stay refused on every transport of both gateways, and a revocation made after the restart still closes
    /// the user's live connections on both.</summary>
    [Fact]
    public async Task ARevocationHoldsAcrossASiloRestartAndARevocationAfterItClosesConnectionsOnBothGateways()
    {
        var prefix = "rvr" + Guid.NewGuid().ToString("N")[..8];
        var redis = Environment.GetEnvironmentVariable("ORLEANSPUSH_TEST_REDIS")
            ?? throw new InvalidOperationException("ORLEANSPUSH_TEST_REDIS is not set: run the tests with ./test.sh.");
        var cluster = new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:Clustering"] = "Redis",
            ["OrleansPush:Cluster:ServiceId"] = prefix,
            ["OrleansPush:Cluster:ClusterId"] = prefix,
            ["OrleansPush:Cluster:AdvertisedIP"] = "127.0.0.1",
            ["OrleansPush:Storage:Provider"] = "Redis",
            ["OrleansPush:Storage:Redis"] = redis,
            ["OrleansPush:Storage:Prefix"] = prefix,
        };
        var (siloPort, siloGatewayPort) = (Ports.Free(), Ports.Free());
        var silo = SiloProcess.Start(null, cluster, siloPort, siloGatewayPort);
        try
        {
            var (portA, portB) = (Ports.Free(), Ports.Free());
            var gatewaySettings = TestGateway.Merge(cluster, new Dictionary<string, string?> { ["OrleansPush:Cluster:Mode"] = "Cluster" });
            await using var a = await TestGateway.StartWhenClusterIsUpAsync(TestGateway.Merge(gatewaySettings, Secured(portA)));
            await using var b = await TestGateway.StartWhenClusterIsUpAsync(TestGateway.Merge(gatewaySettings, Secured(portB)));
            var user = SecurityFixture.NewUser();
            var old = Tokens.Token(user, topics: ["rv:**"]);

            await using (var live = await LiveConnections.OpenAsync(a, b, portB, old))
            {
                await RevokeAsync(a, user);
                await live.AssertClosedUnauthorizedAsync();
            }

            // The silo stops and a new one starts in its place, reading the user's grain from the store.
            await silo.StopAsync();
            await silo.DisposeAsync();
            silo = SiloProcess.Start(null, cluster, siloPort, siloGatewayPort);
            await WhenServedAgainAsync(a, Tokens.Token(SecurityFixture.NewUser()));
            await WhenServedAgainAsync(b, Tokens.Token(SecurityFixture.NewUser()));

            await AssertRefusedEverywhereAsync([(a, portA), (b, portB)], old);

            // A new token connects on both; revoked again (through B this time), its connections close on both.
            await Task.Delay(TimeSpan.FromMilliseconds(1100));
            var fresh = Tokens.Token(user, topics: ["rv:**"]);
            await AssertAcceptedEverywhereAsync([(a, portA), (b, portB)], fresh);
            await using (var live = await LiveConnections.OpenAsync(b, a, portA, fresh))
            {
                await RevokeAsync(b, user);
                await live.AssertClosedUnauthorizedAsync();
            }

            await AssertRefusedEverywhereAsync([(a, portA), (b, portB)], fresh);
        }
        finally
        {
            await silo.DisposeAsync();
        }
    }

    private static async Task RevokeAsync(TestGateway via, string user)
    {
        using var revoke = new HttpRequestMessage(HttpMethod.Post, $"/api/admin/users/{user}/revoke");
        revoke.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Tokens.Backend(admin: true));
        using var answer = await via.Http.SendAsync(revoke);
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
    }

    /// <summary>Waits until the gateway admits a connection again (while its cluster is down the door answers
    /// <c>unavailable</c>).</summary>
    private static async Task WhenServedAgainAsync(TestGateway gateway, string token)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        while (await DoorProbe.WebSocketStatusAsync(gateway.WebSocketUri("access_token=" + token)) != HttpStatusCode.SwitchingProtocols)
        {
            Assert.True(DateTime.UtcNow < deadline, "the gateway did not serve connections again within 90 s of the silo's restart");
            await Task.Delay(500);
        }
    }

    /// <summary>Every transport of every gateway refuses the token with <c>unauthorized</c>.</summary>
    private static async Task AssertRefusedEverywhereAsync(IEnumerable<(TestGateway Gateway, int MqttPort)> gateways, string token)
    {
        foreach (var (gateway, port) in gateways)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, await DoorProbe.WebSocketStatusAsync(gateway.WebSocketUri("access_token=" + token)));
            Assert.Equal(HttpStatusCode.Unauthorized, (await gateway.Http.GetAsync("/sse?topic=rv:news&access_token=" + token)).StatusCode);
            Assert.Equal(HttpStatusCode.Unauthorized, (await gateway.Http.GetAsync("/poll?topic=rv:news&access_token=" + token)).StatusCode);
            Assert.Equal(HttpStatusCode.Unauthorized, (await gateway.Http.PostAsync("/hubs/push/negotiate?negotiateVersion=1&access_token=" + token, null)).StatusCode);
            using var refused = new MqttClientFactory().CreateMqttClient();
            Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await DoorProbe.MqttConnectCodeAsync(refused, MqttOptions(port, token)));
        }
    }

    private static async Task AssertAcceptedEverywhereAsync(IEnumerable<(TestGateway Gateway, int MqttPort)> gateways, string token)
    {
        foreach (var (gateway, port) in gateways)
        {
            Assert.Equal(HttpStatusCode.SwitchingProtocols, await DoorProbe.WebSocketStatusAsync(gateway.WebSocketUri("access_token=" + token)));
            using var accepted = new MqttClientFactory().CreateMqttClient();
            Assert.Equal(MqttClientConnectResultCode.Success, await DoorProbe.MqttConnectCodeAsync(accepted, MqttOptions(port, token)));
            await accepted.DisconnectAsync();
        }
    }

    private static MqttClientOptionsBuilder MqttOptions(int port, string token) => new MqttClientOptionsBuilder()
        .WithTcpServer("127.0.0.1", port)
        .WithClientId("rv-" + Guid.NewGuid().ToString("N"))
        .WithProtocolVersion(MqttProtocolVersion.V500)
        .WithCredentials("rv", token)
        .WithTimeout(TimeSpan.FromSeconds(10));

    /// <summary>A user's live connections on two gateways: a raw WebSocket on one, an SSE stream and an MQTT client on
    /// the other.</summary>
    private sealed class LiveConnections : IAsyncDisposable
    {
        private readonly WsClient _ws;
        private readonly HttpClient _sseHttp;
        private readonly HttpResponseMessage _sse;
        private readonly IMqttClient _mqtt;
        private readonly TaskCompletionSource<MqttClientDisconnectedEventArgs> _mqttGone;

        private LiveConnections(WsClient ws, HttpClient sseHttp, HttpResponseMessage sse, IMqttClient mqtt, TaskCompletionSource<MqttClientDisconnectedEventArgs> mqttGone)
        {
            _ws = ws;
            _sseHttp = sseHttp;
            _sse = sse;
            _mqtt = mqtt;
            _mqttGone = mqttGone;
        }

        public static async Task<LiveConnections> OpenAsync(TestGateway wsOn, TestGateway sseAndMqttOn, int mqttPort, string token)
        {
            var ws = await WsClient.ConnectAsync(wsOn.WebSocketUri("access_token=" + token));
            Assert.Equal("ok", (await ws.SubscribeAsync("rv:news")).Op);
            var sseHttp = new HttpClient { BaseAddress = sseAndMqttOn.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
            var sse = await sseHttp.GetAsync("/sse?topic=rv:news&access_token=" + token, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, sse.StatusCode);
            var mqtt = new MqttClientFactory().CreateMqttClient();
            var mqttGone = new TaskCompletionSource<MqttClientDisconnectedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
            mqtt.DisconnectedAsync += e =>
            {
                mqttGone.TrySetResult(e);
                return Task.CompletedTask;
            };
            Assert.Equal(MqttClientConnectResultCode.Success, await DoorProbe.MqttConnectCodeAsync(mqtt, MqttOptions(mqttPort, token)));
            return new LiveConnections(ws, sseHttp, sse, mqtt, mqttGone);
        }

        /// <summary>Every one of them is closed with <c>unauthorized</c>.</summary>
        public async Task AssertClosedUnauthorizedAsync()
        {
            var frames = await _ws.ReadToEndAsync(WsClient.DefaultWait);
            Assert.Contains(frames, f => f.Op == "error" && f.Code == "unauthorized");
            await using (var body = await _sse.Content.ReadAsStreamAsync())
            {
                using var reader = new StreamReader(body);
                var text = await reader.ReadToEndAsync().WaitAsync(WsClient.DefaultWait);
                Assert.Contains("event: bye", text, StringComparison.Ordinal);
                Assert.Contains("unauthorized", text, StringComparison.Ordinal);
            }

            var gone = await _mqttGone.Task.WaitAsync(WsClient.DefaultWait);
            Assert.Equal(MqttClientDisconnectReason.NotAuthorized, gone.Reason);
        }

        public async ValueTask DisposeAsync()
        {
            await _ws.DisposeAsync();
            _sse.Dispose();
            _sseHttp.Dispose();
            _mqtt.Dispose();
        }
    }
}
