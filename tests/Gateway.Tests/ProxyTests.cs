using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Connections;
using Microsoft.AspNetCore.SignalR.Client;
using MQTTnet;
using MQTTnet.Formatter;

namespace OrleansPush.Gateway.Tests;

/// <summary>A backend in the test process (Kestrel on 127.0.0.1, port 0) that answers the gateway's connect, subscribe
/// and publish proxies, and records what it was asked.</summary>
public sealed class ProxyBackend : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TaskCompletionSource _asked = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ProxyBackend(WebApplication app) => _app = app;

    public Uri BaseAddress { get; private set; } = null!;

    /// <summary>Every connect request body, in arrival order.</summary>
    public ConcurrentQueue<JsonElement> ConnectRequests { get; } = new();

    /// <summary>The connect requests that carried the cookie <c>session={session}</c>.</summary>
    public JsonElement[] ConnectRequestsOf(string session) =>
        [.. ConnectRequests.Where(r => r.TryGetProperty("cookies", out var c) && c.TryGetProperty("session", out var s) && s.GetString() == session)];

    /// <summary>Completes once the connect proxy was asked <paramref name="count"/> times with <c>session={session}</c>;
    /// their bodies.</summary>
    public async Task<JsonElement[]> ConnectRequestsOfAsync(string session, int count)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        while (true)
        {
            var asked = Volatile.Read(ref _asked);
            if (ConnectRequestsOf(session) is { } seen && seen.Length >= count)
            {
                return seen;
            }

            await asked.Task.WaitAsync(cts.Token);
        }
    }

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
    /// <c>forbidden</c>; <c>session=slow</c> is answered after 10 s. <c>session=short-{user}</c> is that user for 2 s at its
    /// first ask and for an hour at later ones, with the subscription <c>px:feed-{user}-{n}</c> at the n-th ask;
    /// <c>session=once-{user}</c> is that user for 2 s and refused (403 <c>forbidden</c>, "Session ended.") when asked
    /// again. A token of the application's own (not a JWT) <c>app-{user}</c> is that user, and so is a header
    /// <c>X-App-Session: hdr-{user}</c> (the gateway is configured to pass that header on). An MQTT client whose password
    /// is <c>pw-ok</c> is its user name; <c>pw-deny</c> is refused with 403 <c>forbidden</c>, <c>pw-slow</c> answered
    /// after 10 s.</summary>
    private async Task<IResult> ConnectAsync(HttpRequest request)
    {
        var body = await JsonSerializer.DeserializeAsync<JsonElement>(request.Body);
        ConnectRequests.Enqueue(body);
        Interlocked.Exchange(ref _asked, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        string? user = null;
        var subscription = (string? u) => $"px:feed-{u}";
        var expiresAt = DateTimeOffset.UtcNow.AddHours(1);
        if (body.TryGetProperty("cookies", out var cookies) && cookies.TryGetProperty("session", out var session))
        {
            var value = session.GetString()!;
            var asked = ConnectRequestsOf(value).Length;
            if (value == "deny" || (value.StartsWith("once-", StringComparison.Ordinal) && asked > 1))
            {
                return Results.Json(new { code = "forbidden", message = value == "deny" ? "No such session." : "Session ended." }, statusCode: 403);
            }

            if (value == "slow")
            {
                await Task.Delay(TimeSpan.FromSeconds(10));
            }

            var dash = value.IndexOf('-', StringComparison.Ordinal);
            var kind = dash > 0 ? value[..dash] : value;
            user = kind is "ok" or "short" or "once" ? value[(dash + 1)..] : null;
            if (kind == "short")
            {
                subscription = u => $"px:feed-{u}-{asked}";
            }

            if (asked == 1 && kind is "short" or "once")
            {
                expiresAt = DateTimeOffset.UtcNow.AddSeconds(2);
            }
        }

        if (body.TryGetProperty("token", out var token) && token.GetString() is { } opaque && opaque.StartsWith("app-", StringComparison.Ordinal))
        {
            user = opaque[4..];
        }

        if (body.TryGetProperty("headers", out var headers) && headers.TryGetProperty("X-App-Session", out var header)
            && header.GetString() is { } appSession && appSession.StartsWith("hdr-", StringComparison.Ordinal))
        {
            user = appSession[4..];
        }

        if (body.TryGetProperty("mqtt", out var mqtt))
        {
            switch (mqtt.TryGetProperty("password", out var password) ? password.GetString() : null)
            {
                case "pw-ok":
                    user = mqtt.GetProperty("username").GetString();
                    break;
                case "pw-deny":
                    return Results.Json(new { code = "forbidden", message = "No such device." }, statusCode: 403);
                case "pw-slow":
                    await Task.Delay(TimeSpan.FromSeconds(10));
                    break;
            }
        }

        return user is null
            ? Results.Json(new { code = "unauthorized", message = "Log in first." }, statusCode: 401)
            : Results.Json(new
            {
                user,
                topics = new[] { "px:open:*" },
                publish = new[] { "px:**" },
                subscriptions = new[] { subscription(user) },
                expiresAt,
            });
    }

    /// <summary><c>px:allow-…</c> is allowed, anything else refused with 403; <c>px:allow-slow…</c> is answered after 10 s.</summary>
    private static async Task<IResult> SubscribeAsync(HttpRequest request)
    {
        var body = await JsonSerializer.DeserializeAsync<JsonElement>(request.Body);
        if (body.GetProperty("topic").GetString()!.StartsWith("px:allow-slow", StringComparison.Ordinal))
        {
            await Task.Delay(TimeSpan.FromSeconds(10));
        }

        return body.GetProperty("topic").GetString()!.StartsWith("px:allow-", StringComparison.Ordinal) && body.GetProperty("user").GetString() is not null
            ? Results.Ok()
            : Results.StatusCode(403);
    }

    /// <summary><c>px:pub-refuse…</c> is refused (403); <c>px:pub-replace…</c> gets the payload <c>{"replaced":true,"was":…}</c>;
    /// <c>px:pub-slow…</c> is answered after 10 s; anything else passes as it is (204).</summary>
    private async Task<IResult> PublishAsync(HttpRequest request)
    {
        var body = await JsonSerializer.DeserializeAsync<JsonElement>(request.Body);
        PublishRequests.Enqueue(body);
        var topic = body.GetProperty("topic").GetString()!;
        if (topic.StartsWith("px:pub-refuse", StringComparison.Ordinal))
        {
            return Results.StatusCode(403);
        }

        if (topic.StartsWith("px:pub-slow", StringComparison.Ordinal))
        {
            await Task.Delay(TimeSpan.FromSeconds(10));
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
            ["OrleansPush:Proxy:Connect:Headers:0"] = "X-App-Session",
            ["OrleansPush:Proxy:Subscribe:Url"] = new Uri(Backend.BaseAddress, "/subscribe").ToString(),
            ["OrleansPush:Proxy:Subscribe:Timeout"] = "00:00:02",
            ["OrleansPush:Proxy:Publish:Url"] = new Uri(Backend.BaseAddress, "/publish").ToString(),
            ["OrleansPush:Proxy:Publish:Timeout"] = "00:00:02",
            ["OrleansPush:Mqtt:Port"] = MqttPort.ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
        });
    }

    /// <summary>Publishes as a backend; the publish answer's epoch.</summary>
    public async Task<string> PublishEpochAsync(string topic, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/topics/{topic}") { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Tokens.Backend());
        using var response = await Gateway.Http.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode, $"publish to {topic} answered {(int)response.StatusCode}");
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("epoch").GetString()!;
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

/// <summary>One open-mode gateway (no signing key: tokens not required) whose connect and subscribe proxies point at a
/// <see cref="ProxyBackend"/>: an operator who configured a proxy expects it asked in every mode.</summary>
public sealed class OpenProxyFixture : IAsyncLifetime
{
    public ProxyBackend Backend { get; private set; } = null!;

    public TestGateway Gateway { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Backend = await ProxyBackend.StartAsync();
        Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Proxy:Connect:Url"] = new Uri(Backend.BaseAddress, "/connect").ToString(),
            ["OrleansPush:Proxy:Connect:Timeout"] = "00:00:02",
            ["OrleansPush:Proxy:Subscribe:Url"] = new Uri(Backend.BaseAddress, "/subscribe").ToString(),
            ["OrleansPush:Proxy:Subscribe:Timeout"] = "00:00:02",
        });
    }

    public async Task DisposeAsync()
    {
        await Gateway.DisposeAsync();
        await Backend.DisposeAsync();
    }
}

/// <summary>The connect and subscribe proxies of a gateway in open mode.</summary>
public sealed class OpenModeProxyTests(OpenProxyFixture fixture) : IClassFixture<OpenProxyFixture>
{
    [Fact]
    public async Task InOpenModeTheConnectProxyStillDecidesWhoAConnectionIs()
    {
        var user = SecurityFixture.NewUser();

        // The open-mode user name (?user=) goes to the backend, whose answer decides: here the session cookie's user.
        await using var ws = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri("user=named-" + user), cookie: $"session=ok-{user}");
        Assert.Equal("ok", (await ws.RequestAsync("ping")).Op);
        await fixture.Gateway.PublishAsync($"user:{user}", "{\"to\":\"you\"}");
        await fixture.Gateway.PublishAsync($"px:feed-{user}", "{\"feed\":1}");
        var messages = await ws.MessagesAsync(2, WsClient.DefaultWait);
        Assert.Equal([$"user:{user}", $"px:feed-{user}"], messages.Select(m => m.Topic).Order(StringComparer.Ordinal).Reverse());
        var asked = Assert.Single(fixture.Backend.ConnectRequestsOf($"ok-{user}"));
        Assert.Equal("named-" + user, asked.GetProperty("user").GetString());

        // A connection the backend refuses is refused, with the backend's code.
        Assert.Equal(HttpStatusCode.Forbidden, await DoorProbe.WebSocketStatusAsync(fixture.Gateway.WebSocketUri(), cookie: "session=deny"));
        Assert.Equal(HttpStatusCode.Unauthorized, await DoorProbe.WebSocketStatusAsync(fixture.Gateway.WebSocketUri()));
    }

    [Fact]
    public async Task InOpenModeTheSubscribeProxyDecidesWhatTheConnectionsRightsDoNotCover()
    {
        var user = SecurityFixture.NewUser();
        await using var ws = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri(), cookie: $"session=ok-{user}");
        Assert.Equal("ok", (await ws.SubscribeAsync("px:open:lobby")).Op);
        Assert.Equal("ok", (await ws.SubscribeAsync("px:allow-" + user)).Op);
        Assert.Equal("forbidden", (await ws.SubscribeAsync("px:deny-" + user)).Code);
        Assert.Equal("ok", (await ws.SubscribeAsync($"user:{user}")).Op);
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

    [Fact]
    public async Task ACookieOnlyMqttWebSocketClientGetsTheUserAndTheSubscriptionsTheBackendReturned()
    {
        var user = SecurityFixture.NewUser();
        var clientId = "pxws-" + Guid.NewGuid().ToString("N")[..8];
        var cookies = new CookieContainer();
        cookies.Add(fixture.Gateway.BaseAddress, new Cookie("session", $"ok-{user}"));
        using var mqtt = new MqttClientFactory().CreateMqttClient();
        var received = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        mqtt.ApplicationMessageReceivedAsync += e =>
        {
            received.TrySetResult(e.ApplicationMessage.Topic);
            return Task.CompletedTask;
        };

        // No user name and no password: the browser's session cookie is all it has.
        var options = new MqttClientOptionsBuilder()
            .WithWebSocketServer(o => o.WithUri($"ws://{fixture.Gateway.BaseAddress.Authority}/mqtt").WithCookieContainer(cookies))
            .WithClientId(clientId)
            .WithProtocolVersion(MqttProtocolVersion.V500)
            .WithTimeout(TimeSpan.FromSeconds(10));
        Assert.Equal(MqttClientConnectResultCode.Success, await DoorProbe.MqttConnectCodeAsync(mqtt, options));
        var asked = Assert.Single(fixture.Backend.ConnectRequestsOf($"ok-{user}"));
        Assert.Equal("mqtt", asked.GetProperty("transport").GetString());
        Assert.Equal(clientId, asked.GetProperty("mqtt").GetProperty("clientId").GetString());

        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var subscribed = await mqtt.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter($"px:feed-{user}", MQTTnet.Protocol.MqttQualityOfServiceLevel.AtLeastOnce).Build(), cts.Token);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, Assert.Single(subscribed.Items).ResultCode);
        await fixture.PublishAsync($"/api/topics/px:feed-{user}", "{\"feed\":4}");
        Assert.Equal($"px:feed-{user}", await received.Task.WaitAsync(WsClient.DefaultWait));
    }

    [Fact]
    public async Task ATokenThatIsNotAJwtGoesToTheConnectProxyWhichDecidesWhoItIs()
    {
        var user = SecurityFixture.NewUser();
        await using var ws = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri($"access_token=app-{user}"));
        Assert.Equal("ok", (await ws.RequestAsync("ping")).Op);
        await fixture.PublishAsync($"/api/users/{user}", "{\"to\":\"you\"}");
        Assert.Equal($"user:{user}", (await ws.MessagesAsync(1, WsClient.DefaultWait)).Single().Topic);
        Assert.Contains(fixture.Backend.ConnectRequests, r => r.TryGetProperty("token", out var t) && t.GetString() == $"app-{user}");

        // A JWT the gateway refuses is refused as before: it never goes to the backend.
        var expired = fixture.Tokens.Token(user, lifetime: TimeSpan.FromMinutes(-5));
        Assert.Equal(HttpStatusCode.Unauthorized, await DoorProbe.WebSocketStatusAsync(fixture.Gateway.WebSocketUri("access_token=" + expired)));
        Assert.DoesNotContain(fixture.Backend.ConnectRequests, r => r.TryGetProperty("token", out var t) && t.GetString() == expired);
    }

    [Fact]
    public async Task TheHeadersTheConnectProxyIsConfiguredToGetReachItFromSseAndMqttOverWebSocket()
    {
        var (sseUser, mqttUser) = (SecurityFixture.NewUser(), SecurityFixture.NewUser());
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/sse?topic=px:feed-{sseUser}");
        request.Headers.Add("X-App-Session", $"hdr-{sseUser}");
        request.Headers.Add("X-Not-Configured", "secret");
        using var http = new HttpClient { BaseAddress = fixture.Gateway.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        using (var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var asked = fixture.Backend.ConnectRequests.Last(r => r.TryGetProperty("headers", out var h) && h.GetProperty("X-App-Session").GetString() == $"hdr-{sseUser}");
        Assert.Equal("sse", asked.GetProperty("transport").GetString());
        Assert.False(asked.GetProperty("headers").TryGetProperty("X-Not-Configured", out _));

        using var mqtt = new MqttClientFactory().CreateMqttClient();
        var options = new MqttClientOptionsBuilder()
            .WithWebSocketServer(o => o.WithUri($"ws://{fixture.Gateway.BaseAddress.Authority}/mqtt")
                .WithRequestHeaders(new Dictionary<string, string> { ["X-App-Session"] = $"hdr-{mqttUser}" }))
            .WithClientId("pxh-" + Guid.NewGuid().ToString("N")[..8])
            .WithProtocolVersion(MqttProtocolVersion.V500)
            .WithTimeout(TimeSpan.FromSeconds(10));
        Assert.Equal(MqttClientConnectResultCode.Success, await DoorProbe.MqttConnectCodeAsync(mqtt, options));
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var subscribed = await mqtt.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter($"user:{mqttUser}", MQTTnet.Protocol.MqttQualityOfServiceLevel.AtLeastOnce).Build(), cts.Token);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, Assert.Single(subscribed.Items).ResultCode);
    }

    [Fact]
    public async Task WhenTheConnectAnswerExpiresTheBackendIsAskedAgainAndTheConnectionTakesTheNewAnswer()
    {
        var user = SecurityFixture.NewUser();
        var session = $"short-{user}";
        await using var ws = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri(), cookie: $"session={session}");
        Assert.Equal("ok", (await ws.RequestAsync("ping")).Op);

        // The first answer holds for 2 s; then the backend is asked again, with the same cookies and the user it named.
        var asked = await fixture.Backend.ConnectRequestsOfAsync(session, 2);
        Assert.Equal(user, asked[1].GetProperty("user").GetString());
        Assert.Equal("ws", asked[1].GetProperty("transport").GetString());

        // The connection stays, and takes the second answer's subscription (px:feed-{user}-2) in place of the first's.
        var first = await FirstMessageOnceLiveAsync(ws, () => fixture.PublishAsync($"/api/topics/px:feed-{user}-2", "{\"probe\":true}"));
        Assert.Equal($"px:feed-{user}-2", first.Topic);
        await DrainAsync(ws);
        await fixture.PublishAsync($"/api/topics/px:feed-{user}-1", "{\"old\":1}");
        await fixture.PublishAsync($"/api/topics/px:feed-{user}-2", "{\"new\":2}");
        var next = await ws.MessagesAsync(1, WsClient.DefaultWait);
        Assert.Equal($"px:feed-{user}-2", next.Single().Topic);
        Assert.True(await ws.IsQuietAsync(TimeSpan.FromMilliseconds(300)), "the first answer's subscription is still live");
        Assert.Equal(WebSocketState.Open, ws.State);
        Assert.Equal("ok", (await ws.RequestAsync("ping")).Op);
    }

    [Fact]
    public async Task WhenTheBackendNoLongerAdmitsAConnectionItIsClosedWithTheBackendsCode()
    {
        var user = SecurityFixture.NewUser();
        await using var ws = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri(), cookie: $"session=once-{user}");
        Assert.Equal("ok", (await ws.RequestAsync("ping")).Op);
        var frames = await ws.ReadToEndAsync(WsClient.DefaultWait);
        Assert.Contains(frames, f => f.Op == "error" && f.Code == "forbidden");
        Assert.Equal(2, fixture.Backend.ConnectRequestsOf($"once-{user}").Length);
        Assert.NotEqual(WebSocketState.Open, ws.State);
    }

    [Fact]
    public async Task AnMqttWebSocketClientTheBackendNoLongerAdmitsIsDisconnectedNotAuthorized()
    {
        var user = SecurityFixture.NewUser();
        var cookies = new CookieContainer();
        cookies.Add(fixture.Gateway.BaseAddress, new Cookie("session", $"once-{user}"));
        using var mqtt = new MqttClientFactory().CreateMqttClient();
        var disconnected = new TaskCompletionSource<MqttClientDisconnectedEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
        mqtt.DisconnectedAsync += e =>
        {
            disconnected.TrySetResult(e);
            return Task.CompletedTask;
        };
        var options = new MqttClientOptionsBuilder()
            .WithWebSocketServer(o => o.WithUri($"ws://{fixture.Gateway.BaseAddress.Authority}/mqtt").WithCookieContainer(cookies))
            .WithClientId("pxo-" + Guid.NewGuid().ToString("N")[..8])
            .WithProtocolVersion(MqttProtocolVersion.V500)
            .WithTimeout(TimeSpan.FromSeconds(10));
        Assert.Equal(MqttClientConnectResultCode.Success, await DoorProbe.MqttConnectCodeAsync(mqtt, options));

        // Asked again at the answer's expiresAt (with the WebSocket request's cookies), the backend refuses: 403 forbidden.
        var gone = await disconnected.Task.WaitAsync(WsClient.DefaultWait);
        Assert.Equal(MqttClientDisconnectReason.NotAuthorized, gone.Reason);
        Assert.Equal("forbidden", gone.ReasonString);
        Assert.Equal(2, fixture.Backend.ConnectRequestsOf($"once-{user}").Length);
    }

    [Fact]
    public async Task ASignalRLongPollingClientIsAskedAboutOncePerConnection()
    {
        var user = SecurityFixture.NewUser();
        var session = $"ok-{user}";
        var cookies = new CookieContainer();
        cookies.Add(fixture.Gateway.BaseAddress, new Cookie("session", session));
        await using var hub = new HubConnectionBuilder()
            .WithUrl(new Uri(fixture.Gateway.BaseAddress, "/hubs/push"), HttpTransportType.LongPolling, o => o.Cookies = cookies)
            .Build();
        var received = System.Threading.Channels.Channel.CreateUnbounded<JsonElement>();
        hub.On<JsonElement>("msg", m => received.Writer.TryWrite(m));
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await hub.StartAsync(cts.Token);

        // The backend's subscription is granted to this connection; each message below takes a poll of its own.
        await hub.InvokeAsync<object>("Subscribe", $"px:feed-{user}", null, cts.Token);
        for (var i = 1; i <= 3; i++)
        {
            await fixture.PublishAsync($"/api/topics/px:feed-{user}", $"{{\"n\":{i}}}");
            var message = await received.Reader.ReadAsync(cts.Token);
            Assert.Equal(i, message.GetProperty("data").GetProperty("n").GetInt32());
        }

        Assert.Single(fixture.Backend.ConnectRequestsOf(session));
    }

    [Fact]
    public async Task ACookieOnlyLongPollGetsWhatTheBackendsSubscriptionsGrant()
    {
        var user = SecurityFixture.NewUser();
        var epoch = await fixture.PublishEpochAsync($"px:feed-{user}", "{\"polled\":1}");
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/poll?topic=px:feed-{user}&since={epoch}:0");
        request.Headers.Add("Cookie", $"session=ok-{user}");
        using var response = await fixture.Gateway.Http.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        Assert.Contains("{\"polled\":1}", body, StringComparison.Ordinal);

        using var stranger = new HttpRequestMessage(HttpMethod.Get, $"/poll?topic=px:feed-{user}");
        stranger.Headers.Add("Cookie", "session=deny");
        using var refused = await fixture.Gateway.Http.SendAsync(stranger);
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
    }

    [Fact]
    public async Task AnMqttClientTheBackendRefusesOrDoesNotAnswerInTimeGetsTheMatchingConnack()
    {
        using var refused = new MqttClientFactory().CreateMqttClient();
        Assert.Equal(MqttClientConnectResultCode.NotAuthorized,
            await DoorProbe.MqttConnectCodeAsync(refused, MqttOptions("px-d" + Guid.NewGuid().ToString("N")[..8], "device", "pw-deny")));
        using var slow = new MqttClientFactory().CreateMqttClient();
        Assert.Equal(MqttClientConnectResultCode.ServerUnavailable,
            await DoorProbe.MqttConnectCodeAsync(slow, MqttOptions("px-s" + Guid.NewGuid().ToString("N")[..8], "device", "pw-slow")));
    }

    [Fact]
    public async Task ASubscribeOrPublishProxyThatDoesNotAnswerInTimeAnswersUnavailable()
    {
        var user = SecurityFixture.NewUser();
        var token = fixture.Tokens.Token(user, topics: ["px:open:*"], publish: ["px:**"]);
        await using var ws = await WsClient.ConnectAsync(fixture.Gateway.WebSocketUri("access_token=" + token));
        Assert.Equal("unavailable", (await ws.SubscribeAsync("px:allow-slow-" + user)).Code);
        Assert.Equal("unavailable", (await ws.RequestAsync("pub", new { topic = "px:pub-slow-" + user, data = new { n = 1 } })).Code);
    }

    /// <summary>Publishes (through <paramref name="publish"/>) until a message arrives: for a subscription the gateway
    /// makes on its own, whose moment the client cannot see.</summary>
    private static async Task<Frame> FirstMessageOnceLiveAsync(WsClient ws, Func<Task> publish)
    {
        using var deadline = new CancellationTokenSource(WsClient.DefaultWait);
        while (true)
        {
            deadline.Token.ThrowIfCancellationRequested();
            await publish();
            if (await ws.MessagesWithinAsync(1, TimeSpan.FromSeconds(1)) is [var first])
            {
                return first;
            }
        }
    }

    /// <summary>Reads what is still coming (the probes' later copies) until the connection is quiet.</summary>
    private static async Task DrainAsync(WsClient ws)
    {
        while (!await ws.IsQuietAsync(TimeSpan.FromMilliseconds(500)))
        {
            await ws.NextAsync();
        }
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

/// <summary>The connect answers kept for SignalR connections (<see cref="Proxies.ProxiedConnections"/>): used for
/// nothing longer than they say, and bounded by age and count.</summary>
public sealed class ProxiedConnectionsTests
{
    private readonly Clock _clock = new();

    [Fact]
    public void AnAnswerIsHeldUntilItsExpiresAtAndNoLonger()
    {
        var kept = new Proxies.ProxiedConnections(_clock);
        var answer = Answer(_clock.Now + TimeSpan.FromSeconds(90));
        kept.Remember("token-1", answer);
        Assert.Same(answer, kept.Find("token-1"));
        _clock.Now += TimeSpan.FromSeconds(89);
        Assert.Same(answer, kept.Find("token-1"));
        _clock.Now += TimeSpan.FromSeconds(1);
        Assert.Null(kept.Find("token-1"));
    }

    [Fact]
    public void AnAnswerNoRequestUsedForTheIdleLimitIsDropped()
    {
        var kept = new Proxies.ProxiedConnections(_clock);
        kept.Remember("used", Answer(null));
        kept.Remember("idle", Answer(null));
        kept.Remember("forgotten", Answer(null));
        for (var i = 0; i < 3; i++)
        {
            _clock.Now += Proxies.ProxiedConnections.IdleLimit / 2;
            Assert.NotNull(kept.Find("used"));
        }

        Assert.Null(kept.Find("idle"));

        // A sweep (on a Remember, at most once a minute) drops what lapsed without a lookup too.
        Assert.Equal(2, kept.Count);
        kept.Remember("other", Answer(null));
        Assert.Equal(2, kept.Count);
        Assert.NotNull(kept.Find("other"));
        Assert.NotNull(kept.Find("used"));
    }

    [Fact]
    public void PastMaxEntriesANewConnectionIsNotKeptAndSimplyAsksAgain()
    {
        var kept = new Proxies.ProxiedConnections(_clock);
        for (var i = 0; i < Proxies.ProxiedConnections.MaxEntries + 10; i++)
        {
            kept.Remember("t" + i.ToString(CultureInfo.InvariantCulture), Answer(null));
        }

        Assert.Equal(Proxies.ProxiedConnections.MaxEntries, kept.Count);
        Assert.Null(kept.Find("t" + Proxies.ProxiedConnections.MaxEntries.ToString(CultureInfo.InvariantCulture)));
        Assert.NotNull(kept.Find("t0"));
    }

    private static Security.ConnectionAccess Answer(DateTimeOffset? expiresAt) =>
        new("u", [], [], admin: false, expiresAt) { ProxyRequest = new Proxies.ConnectProxyRequest("signalr", "127.0.0.1") };

    /// <summary>A clock the test moves by hand.</summary>
    private sealed class Clock : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 12, 2, 8, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => Now;
    }
}
