using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using MQTTnet;
using MQTTnet.Formatter;

namespace OrleansPush.Gateway.Tests;

/// <summary>A backend in the test process (Kestrel on 127.0.0.1, port 0) that answers the gateway's connect, subscribe
/// and publish proxies, and records what it was asked.</summary>
public sealed class ProxyBackend : IAsyncDisposable
{
    private readonly WebApplication _app;

    private ProxyBackend(WebApplication app) => _app = app;

    public Uri BaseAddress { get; private set; } = null!;

    /// <summary>Every connect request body, by the user it was answered with (or the cookie it carried).</summary>
    public ConcurrentQueue<JsonElement> ConnectRequests { get; } = new();

    public ConcurrentQueue<JsonElement> PublishRequests { get; } = new();

    public static async Task<ProxyBackend> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var backend = new ProxyBackend(app);
        app.MapPost("/connect", backend.ConnectAsync);
        app.MapPost("/subscribe", SubscribeAsync);
        app.MapPost("/publish", backend.PublishAsync);
        await app.StartAsync();
        backend.BaseAddress = new Uri(app.Urls.First());
        return backend;
    }

    /// <summary>A session cookie <c>session=ok-{user}</c> is that user; <c>session=deny</c> is refused with 403
    /// <c>forbidden</c>; <c>session=slow</c> is answered after 10 s. An MQTT client whose password is <c>pw-ok</c> is its
    /// user name.</summary>
    private async Task<IResult> ConnectAsync(HttpRequest request)
    {
        var body = await JsonSerializer.DeserializeAsync<JsonElement>(request.Body);
        ConnectRequests.Enqueue(body);
        string? user = null;
        if (body.TryGetProperty("cookies", out var cookies) && cookies.TryGetProperty("session", out var session))
        {
            var value = session.GetString()!;
            if (value == "deny")
            {
                return Results.Json(new { code = "forbidden", message = "No such session." }, statusCode: 403);
            }

            if (value == "slow")
            {
                await Task.Delay(TimeSpan.FromSeconds(10));
            }

            user = value.StartsWith("ok-", StringComparison.Ordinal) ? value[3..] : null;
        }

        if (body.TryGetProperty("mqtt", out var mqtt) && mqtt.GetProperty("password").GetString() == "pw-ok")
        {
            user = mqtt.GetProperty("username").GetString();
        }

        return user is null
            ? Results.Json(new { code = "unauthorized", message = "Log in first." }, statusCode: 401)
            : Results.Json(new
            {
                user,
                topics = new[] { "px:open:*" },
                publish = new[] { "px:**" },
                subscriptions = new[] { $"px:feed-{user}" },
                expiresAt = DateTimeOffset.UtcNow.AddHours(1),
            });
    }

    /// <summary><c>px:allow-…</c> is allowed, anything else refused with 403.</summary>
    private static async Task<IResult> SubscribeAsync(HttpRequest request)
    {
        var body = await JsonSerializer.DeserializeAsync<JsonElement>(request.Body);
        return body.GetProperty("topic").GetString()!.StartsWith("px:allow-", StringComparison.Ordinal) && body.GetProperty("user").GetString() is not null
            ? Results.Ok()
            : Results.StatusCode(403);
    }

    /// <summary><c>px:pub-refuse…</c> is refused (403); <c>px:pub-replace…</c> gets the payload <c>{"replaced":true,"was":…}</c>;
    /// anything else passes as it is (204).</summary>
    private async Task<IResult> PublishAsync(HttpRequest request)
    {
        var body = await JsonSerializer.DeserializeAsync<JsonElement>(request.Body);
        PublishRequests.Enqueue(body);
        var topic = body.GetProperty("topic").GetString()!;
        if (topic.StartsWith("px:pub-refuse", StringComparison.Ordinal))
        {
            return Results.StatusCode(403);
        }

        return topic.StartsWith("px:pub-replace", StringComparison.Ordinal)
            ? Results.Json(new { data = new { replaced = true, was = body.GetProperty("data") } })
            : Results.NoContent();
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}

/// <summary>One secured gateway (tokens required) whose connect, subscribe and publish proxies point at a
/// <see cref="ProxyBackend"/>, with a 2 s connect timeout.</summary>
public sealed class ProxyFixture : IAsyncLifetime
{
    public ProxyBackend Backend { get; private set; } = null!;

    public TestGateway Gateway { get; private set; } = null!;

    public int MqttPort { get; } = Ports.Free();

    public SecurityFixture Tokens { get; } = new();

    public async Task InitializeAsync()
    {
        Backend = await ProxyBackend.StartAsync();
        Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Auth:Jwt:SigningKey"] = Convert.ToBase64String(SecurityFixture.Key),
            ["OrleansPush:Auth:Jwt:Issuer"] = SecurityFixture.Issuer,
            ["OrleansPush:Auth:Jwt:Audience"] = SecurityFixture.Audience,
            ["OrleansPush:Topics:Namespaces:px:ClientPublish"] = "true",
            ["OrleansPush:Proxy:Connect:Url"] = new Uri(Backend.BaseAddress, "/connect").ToString(),
            ["OrleansPush:Proxy:Connect:Timeout"] = "00:00:02",
            ["OrleansPush:Proxy:Subscribe:Url"] = new Uri(Backend.BaseAddress, "/subscribe").ToString(),
            ["OrleansPush:Proxy:Publish:Url"] = new Uri(Backend.BaseAddress, "/publish").ToString(),
            ["OrleansPush:Mqtt:Port"] = MqttPort.ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
        });
    }

    /// <summary>Publishes as a backend (the publish API needs a token with the publish right).</summary>
    public async Task PublishAsync(string path, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Tokens.Backend());
        using var response = await Gateway.Http.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode, $"publish to {path} answered {(int)response.StatusCode}");
    }

    public async Task DisposeAsync()
    {
        await Gateway.DisposeAsync();
        await Backend.DisposeAsync();
    }
}

/// <summary>The connect, subscribe and publish proxies (DESIGN.md "Backends in the loop"), against a real HTTP backend.</summary>
public sealed class ProxyTests(ProxyFixture fixture) : IClassFixture<ProxyFixture>
{
    [Fact]
    public async Task ACookieOnlyWebSocketClientGetsTheUserAndTheSubscriptionsTheBackendReturned()
    {
        var user = SecurityFixture.NewUser();
        await using var ws = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri(), cookie: $"session=ok-{user}");

        // Without a sub of its own it receives its personal channel and the backend's per-connection subscription
        // (a ping's answer comes once the connection is registered).
        Assert.Equal("ok", (await ws.RequestAsync("ping")).Op);
        await fixture.PublishAsync($"/api/users/{user}", "{\"to\":\"you\"}");
        await fixture.PublishAsync($"/api/topics/px:feed-{user}", "{\"feed\":1}");
        var messages = await ws.MessagesAsync(2, WsClient.DefaultWait);
        Assert.Equal([$"user:{user}", $"px:feed-{user}"], messages.Select(m => m.Topic).Order(StringComparer.Ordinal).Reverse());

        // The backend's patterns hold: px:open:* is covered, another user's feed is not (and the subscribe proxy refuses it).
        Assert.Equal("ok", (await ws.SubscribeAsync("px:open:lobby")).Op);
        Assert.Equal("forbidden", (await ws.SubscribeAsync("px:feed-someone-else")).Code);

        var asked = fixture.Backend.ConnectRequests.Last(r => r.TryGetProperty("cookies", out var c) && c.GetProperty("session").GetString() == $"ok-{user}");
        Assert.Equal("ws", asked.GetProperty("transport").GetString());
        Assert.Equal("127.0.0.1", asked.GetProperty("remoteAddress").GetString());
    }

    [Fact]
    public async Task ACookieOnlySseClientGetsTheUserAndTheSubscriptionsTheBackendReturned()
    {
        var user = SecurityFixture.NewUser();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/sse");
        request.Headers.Add("Cookie", $"session=ok-{user}");
        using var http = new HttpClient { BaseAddress = fixture.Gateway.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());

        // The stream opens with one subscribed event per topic once its subscriptions are recorded.
        var opening = new[] { await ReadEventAsync(reader), await ReadEventAsync(reader) };
        Assert.All(opening, e => Assert.StartsWith("event: subscribed", e, StringComparison.Ordinal));
        Assert.Contains(opening, e => e.Contains($"\"topic\":\"user:{user}\"", StringComparison.Ordinal));
        Assert.Contains(opening, e => e.Contains($"\"topic\":\"px:feed-{user}\"", StringComparison.Ordinal));
        await fixture.PublishAsync($"/api/topics/px:feed-{user}", "{\"feed\":2}");
        await fixture.PublishAsync($"/api/users/{user}", "{\"to\":\"you\"}");
        var first = await ReadEventAsync(reader);
        var second = await ReadEventAsync(reader);
        Assert.Contains($"\"topic\":\"px:feed-{user}\"", first, StringComparison.Ordinal);
        Assert.True(second.Contains($"\"topic\":\"user:{user}\"", StringComparison.Ordinal), first + "\n---\n" + second);
    }

    [Fact]
    public async Task AnMqttClientIsWhoTheBackendSaysFromItsClientIdUserNameAndPassword()
    {
        var user = SecurityFixture.NewUser();
        var clientId = "px-" + Guid.NewGuid().ToString("N")[..8];
        using var mqtt = new MqttClientFactory().CreateMqttClient();
        var received = new ConcurrentQueue<string>();
        var two = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        mqtt.ApplicationMessageReceivedAsync += e =>
        {
            received.Enqueue(e.ApplicationMessage.Topic);
            if (received.Count == 2)
            {
                two.TrySetResult();
            }

            return Task.CompletedTask;
        };
        Assert.Equal(MqttClientConnectResultCode.Success, await DoorProbe.MqttConnectCodeAsync(mqtt, MqttOptions(clientId, user, "pw-ok")));

        var asked = fixture.Backend.ConnectRequests.Last(r => r.TryGetProperty("mqtt", out var m) && m.GetProperty("clientId").GetString() == clientId);
        Assert.Equal("mqtt", asked.GetProperty("transport").GetString());
        Assert.Equal(user, asked.GetProperty("mqtt").GetProperty("username").GetString());
        Assert.Equal("pw-ok", asked.GetProperty("mqtt").GetProperty("password").GetString());

        // An MQTT client receives what it subscribes to: its personal channel (it is that user) and the backend's
        // subscription (granted to this connection although no pattern covers it).
        using (var cts = new CancellationTokenSource(WsClient.DefaultWait))
        {
            var subscribed = await mqtt.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
                .WithTopicFilter($"user:{user}", MQTTnet.Protocol.MqttQualityOfServiceLevel.AtLeastOnce)
                .WithTopicFilter($"px:feed-{user}", MQTTnet.Protocol.MqttQualityOfServiceLevel.AtLeastOnce)
                .Build(), cts.Token);
            Assert.All(subscribed.Items, i => Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, i.ResultCode));
        }

        await fixture.PublishAsync($"/api/users/{user}", "{\"to\":\"you\"}");
        await fixture.PublishAsync($"/api/topics/px:feed-{user}", "{\"feed\":3}");
        await two.Task.WaitAsync(WsClient.DefaultWait);
        Assert.Equal([$"px:feed-{user}", $"user:{user}"], received.Order(StringComparer.Ordinal));

        // A password the backend does not know is refused with the backend's code (401 unauthorized).
        using var stranger = new MqttClientFactory().CreateMqttClient();
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await DoorProbe.MqttConnectCodeAsync(stranger, MqttOptions("px-x" + clientId, user, "pw-wrong")));
    }

    [Fact]
    public async Task AConnectionTheBackendRefusesIsRefusedWithTheBackendsCodeOnEveryTransport()
    {
        Assert.Equal(HttpStatusCode.Forbidden, await DoorProbe.WebSocketStatusAsync(fixture.Gateway.WebSocketUri(), cookie: "session=deny"));
        var (status, body) = await SseAsync("session=deny");
        Assert.Equal(HttpStatusCode.Forbidden, status);
        Assert.Contains("\"forbidden\"", body, StringComparison.Ordinal);
        Assert.Contains("No such session.", body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AConnectProxyThatDoesNotAnswerInTimeAnswersUnavailable()
    {
        Assert.Equal(HttpStatusCode.ServiceUnavailable, await DoorProbe.WebSocketStatusAsync(fixture.Gateway.WebSocketUri(), cookie: "session=slow"));
        var (status, body) = await SseAsync("session=slow");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        Assert.Contains("\"unavailable\"", body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TheSubscribeProxyDecidesASubscribeThePatternsDoNotCover()
    {
        var user = SecurityFixture.NewUser();
        await using var ws = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri("access_token=" + fixture.Tokens.Token(user, topics: ["px:open:*"])));
        Assert.Equal("ok", (await ws.SubscribeAsync("px:allow-room")).Op);
        Assert.Equal("forbidden", (await ws.SubscribeAsync("px:deny-room")).Code);

        // The allowed subscription is live.
        await fixture.PublishAsync("/api/topics/px:allow-room", "{\"n\":1}");
        Assert.Equal("px:allow-room", (await ws.MessagesAsync(1, WsClient.DefaultWait)).Single().Topic);
    }

    [Fact]
    public async Task ThePublishProxyRefusesOrReplacesAClientPublish()
    {
        var user = SecurityFixture.NewUser();
        var token = fixture.Tokens.Token(user, topics: ["px:**"], publish: ["px:**"]);
        await using var subscriber = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri("access_token=" + token));
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var (refused, replaced, plain) = ($"px:pub-refuse-{suffix}", $"px:pub-replace-{suffix}", $"px:pub-plain-{suffix}");
        foreach (var topic in new[] { refused, replaced, plain })
        {
            Assert.Equal("ok", (await subscriber.SubscribeAsync(topic)).Op);
        }

        await using var publisher = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri("access_token=" + token));
        Assert.Equal("forbidden", (await publisher.RequestAsync("pub", new { topic = refused, data = new { n = 1 } })).Code);
        Assert.Equal("ok", (await publisher.RequestAsync("pub", new { topic = replaced, data = new { n = 2 } })).Op);
        Assert.Equal("ok", (await publisher.RequestAsync("pub", new { topic = plain, data = new { n = 3 } })).Op);

        var messages = await subscriber.MessagesAsync(2, WsClient.DefaultWait);
        Assert.Equal([replaced, plain], messages.Select(m => m.Topic));
        Assert.Equal("{\"replaced\":true,\"was\":{\"n\":2}}", messages[0].RawData);
        Assert.Equal("{\"n\":3}", messages[1].RawData);
        Assert.Contains(fixture.Backend.PublishRequests, r => r.GetProperty("topic").GetString() == plain && r.GetProperty("user").GetString() == user);
        Assert.True(await subscriber.IsQuietAsync(TimeSpan.FromMilliseconds(300)), "the refused publish went out");
    }

    private async Task<(HttpStatusCode Status, string Body)> SseAsync(string cookie)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/sse?topic=px:open:x");
        request.Headers.Add("Cookie", cookie);
        using var response = await fixture.Gateway.Http.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private static async Task<string> ReadEventAsync(StreamReader reader)
    {
        var lines = new StringBuilder();
        while (await reader.ReadLineAsync().WaitAsync(WsClient.DefaultWait) is { } line)
        {
            if (line.Length == 0)
            {
                if (lines.Length > 0)
                {
                    return lines.ToString();
                }

                continue;
            }

            if (!line.StartsWith(':'))
            {
                lines.AppendLine(line);
            }
        }

        throw new EndOfStreamException("the SSE stream ended");
    }

    private MqttClientOptionsBuilder MqttOptions(string clientId, string user, string password) => new MqttClientOptionsBuilder()
        .WithTcpServer("127.0.0.1", fixture.MqttPort)
        .WithClientId(clientId)
        .WithProtocolVersion(MqttProtocolVersion.V500)
        .WithCredentials(user, password)
        .WithTimeout(TimeSpan.FromSeconds(10));
}
