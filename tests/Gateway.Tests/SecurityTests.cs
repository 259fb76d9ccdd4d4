using System.Net;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Connections;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;

namespace OrleansPush.Gateway.Tests;

/// <summary>The security section of the design on a gateway that requires tokens: authentication on every transport
/// and the API, topic rights, personal channels, origins, limits, expiry and refresh, and no token in any log line.</summary>
[Collection(SecurityCollection.Name)]
public sealed class SecurityTests(SecurityFixture fixture)
{
    private SecureGateway Gateway => fixture.Gateway;

    public static TheoryData<string> BadTokens => new() { "none", "garbage", "bad_signature", "expired", "wrong_audience" };

    private string? BadToken(string kind) => kind switch
    {
        "none" => null,
        "garbage" => "not.a.jwt",
        "bad_signature" => fixture.Token(SecurityFixture.NewUser(), topics: ["**"], key: [.. Enumerable.Repeat((byte)9, 32)]),
        "expired" => fixture.Token(SecurityFixture.NewUser(), topics: ["**"], lifetime: TimeSpan.FromMinutes(-5)),
        "wrong_audience" => fixture.Token(SecurityFixture.NewUser(), topics: ["**"], audience: "someone-else"),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    private async Task<WsClient> ConnectAsync(string token) => await WsClient.ConnectAsync(Gateway.WebSocketUri("access_token=" + Uri.EscapeDataString(token)));

    [Theory]
    [MemberData(nameof(BadTokens))]
    public async Task WebSocketWithoutAValidTokenIsRefusedWith401(string kind)
    {
        var token = BadToken(kind);
        var (status, socket) = await Gateway.TryConnectAsync(token is null ? null : "access_token=" + Uri.EscapeDataString(token));
        socket?.Dispose();
        Assert.Equal(HttpStatusCode.Unauthorized, status);

        if (token is not null)
        {
            (status, socket) = await Gateway.TryConnectAsync(bearer: token);
            socket?.Dispose();
            Assert.Equal(HttpStatusCode.Unauthorized, status);
        }
    }

    [Theory]
    [MemberData(nameof(BadTokens))]
    public async Task SseLongPollingSignalRAndTheApiRefuseAnInvalidToken(string kind)
    {
        var token = BadToken(kind);
        var query = token is null ? string.Empty : "&access_token=" + Uri.EscapeDataString(token);
        using var sse = await Gateway.Http.GetAsync("/sse?topic=public:x" + query, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.Unauthorized, sse.StatusCode);
        Assert.Contains("\"unauthorized\"", await sse.Content.ReadAsStringAsync());

        using var poll = await Gateway.Http.GetAsync("/poll?topic=public:x" + query);
        Assert.Equal(HttpStatusCode.Unauthorized, poll.StatusCode);

        var hub = new HubConnectionBuilder()
            .WithUrl(new Uri(Gateway.BaseAddress, "/hubs/push"), o => o.AccessTokenProvider = () => Task.FromResult(token))
            .Build();
        await using (hub)
        {
            using var cts = new CancellationTokenSource(WsClient.DefaultWait);
            var refused = await Assert.ThrowsAsync<HttpRequestException>(() => hub.StartAsync(cts.Token));
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        }

        using var publish = new HttpRequestMessage(HttpMethod.Post, "/api/topics/news-" + Guid.NewGuid().ToString("N")) { Content = Json("{\"a\":1}") };
        if (token is not null)
        {
            publish.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        using var answer = await Gateway.Http.SendAsync(publish);
        Assert.Equal(HttpStatusCode.Unauthorized, answer.StatusCode);
    }

    [Fact]
    public async Task ATokenInTheHeaderOrTheQueryConnectsAndItsUserGetsPersonalPushes()
    {
        var user = SecurityFixture.NewUser();
        var token = fixture.Token(user);
        var (status, socket) = await Gateway.TryConnectAsync(bearer: token);
        Assert.Equal(HttpStatusCode.SwitchingProtocols, status);
        socket!.Dispose();

        await using var client = await ConnectAsync(token);
        Assert.Equal("ok", (await client.RequestAsync("ping")).Op);
        var pushed = await Api(HttpMethod.Post, "/api/users/" + user, fixture.Backend(), "{\"dm\":1}");
        Assert.Equal(HttpStatusCode.OK, pushed.StatusCode);
        var message = (await client.MessagesAsync(1))[0];
        Assert.Equal("user:" + user, message.Topic);
        Assert.Equal("{\"dm\":1}", message.RawData);
    }

    [Fact]
    public async Task SubscribesAreCheckedAgainstTheTopicsPatternsAndPublicNamespaces()
    {
        var id = Guid.NewGuid().ToString("N")[..8];
        await using var client = await ConnectAsync(fixture.Token(SecurityFixture.NewUser(), topics: [$"news{id}:*", $"chat{id}:**"]));

        Assert.Equal("ok", (await client.SubscribeAsync($"news{id}:eu")).Op);
        Assert.Equal("forbidden", (await client.SubscribeAsync($"news{id}:eu:paris")).Code);
        Assert.Equal("ok", (await client.SubscribeAsync($"chat{id}:eu:paris")).Op);
        Assert.Equal("forbidden", (await client.SubscribeAsync($"sport{id}:x")).Code);
        Assert.Equal("forbidden", (await client.SubscribeAsync($"news{id}")).Code);
        Assert.Equal("ok", (await client.SubscribeAsync($"public:{id}")).Op);

        // A forbidden subscribe receives nothing.
        var backend = fixture.Backend();
        await Api(HttpMethod.Post, $"/api/topics/sport{id}:x", backend, "{\"n\":1}");
        await Api(HttpMethod.Post, $"/api/topics/news{id}:eu", backend, "{\"n\":2}");
        var message = (await client.MessagesAsync(1))[0];
        Assert.Equal($"news{id}:eu", message.Topic);
    }

    [Fact]
    public async Task AnotherUsersPersonalChannelIsForbiddenEvenToAnAllTopicsToken()
    {
        var user = SecurityFixture.NewUser();
        await using var client = await ConnectAsync(fixture.Token(user, topics: ["**"]));
        Assert.Equal("forbidden", (await client.SubscribeAsync("user:" + SecurityFixture.NewUser())).Code);
        Assert.Equal("ok", (await client.SubscribeAsync("user:" + user)).Op);

        using var sse = await Gateway.Http.GetAsync($"/sse?topic=user:someone-else&access_token={fixture.Token(user, topics: ["**"])}", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.Forbidden, sse.StatusCode);
        using var poll = await Gateway.Http.GetAsync($"/poll?topic=user:someone-else&access_token={fixture.Token(user, topics: ["**"])}");
        Assert.Equal(HttpStatusCode.Forbidden, poll.StatusCode);
    }

    [Fact]
    public async Task PublishingNeedsThePublishRightOnEveryPath()
    {
        var room = "chat:" + Guid.NewGuid().ToString("N");
        var user = SecurityFixture.NewUser();
        await using (var reader = await ConnectAsync(fixture.Token(user, topics: ["chat:**"])))
        {
            Assert.Equal("forbidden", (await reader.RequestAsync("pub", new { topic = room, data = new { x = 1 } })).Code);
        }

        await using var writer = await ConnectAsync(fixture.Token(SecurityFixture.NewUser(), topics: ["chat:**"], publish: ["chat:*"]));
        Assert.Equal("ok", (await writer.RequestAsync("pub", new { topic = room, data = new { x = 2 } })).Op);
        // The namespace must still allow clients to publish, whatever the token says.
        Assert.Equal("forbidden", (await writer.RequestAsync("pub", new { topic = "news:" + Guid.NewGuid().ToString("N"), data = 3 })).Code);

        var reading = fixture.Token(user, topics: ["**"]);
        Assert.Equal(HttpStatusCode.Forbidden, (await Api(HttpMethod.Post, "/api/topics/" + room, reading, "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Api(HttpMethod.Post, "/api/users/" + user, reading, "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Api(HttpMethod.Post, "/api/topics/" + room, fixture.Backend(), "{}")).StatusCode);

        var narrow = fixture.Token("svc", publish: ["chat:*"]);
        var batch = $"[{{\"topic\":\"{room}\",\"data\":1}},{{\"topic\":\"news:x\",\"data\":2}}]";
        var refused = await Api(HttpMethod.Post, "/api/publish", narrow, batch);
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Equal("forbidden", JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString());
        Assert.Equal(HttpStatusCode.OK, (await Api(HttpMethod.Post, "/api/publish", narrow, $"[{{\"topic\":\"{room}\",\"data\":1}}]")).StatusCode);
    }

    [Fact]
    public async Task AdminActionsNeedTheAdminClaimAndAreAudited()
    {
        var user = SecurityFixture.NewUser();
        var path = $"/api/users/{user}/subscriptions/team:blue";
        Assert.Equal(HttpStatusCode.Forbidden, (await Api(HttpMethod.Put, path, fixture.Backend(), null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Api(HttpMethod.Put, path, fixture.Backend(admin: true), null)).StatusCode);
        Assert.Contains(fixture.Logs.Lines, l => l.StartsWith("OrleansPush.Audit|2307|", StringComparison.Ordinal) && l.Contains(user, StringComparison.Ordinal));
        Assert.Contains(fixture.Logs.Lines, l => l.StartsWith("OrleansPush.Audit|2308|", StringComparison.Ordinal) && l.Contains(user, StringComparison.Ordinal));
    }

    [Fact]
    public async Task SignalRAuthenticatesWithTheTokenAndChecksEveryCall()
    {
        var user = SecurityFixture.NewUser();
        var token = fixture.Token(user, topics: ["public:**", "signal:*"]);
        var hub = new HubConnectionBuilder()
            .WithUrl(new Uri(Gateway.BaseAddress, "/hubs/push"), HttpTransportType.WebSockets, o => o.AccessTokenProvider = () => Task.FromResult<string?>(token))
            .Build();
        await using (hub)
        {
            using var cts = new CancellationTokenSource(WsClient.DefaultWait);
            await hub.StartAsync(cts.Token);
            await hub.InvokeAsync<JsonElement>("Subscribe", "signal:" + user, null, cts.Token);
            var forbidden = await Assert.ThrowsAsync<HubException>(() => hub.InvokeAsync<JsonElement>("Subscribe", "other:x", null, cts.Token));
            Assert.StartsWith("forbidden:", forbidden.Message.Split("HubException: ").Last(), StringComparison.Ordinal);
            await hub.InvokeAsync("Refresh", fixture.Token(user, topics: ["other:*"]), cts.Token);
            await hub.InvokeAsync<JsonElement>("Subscribe", "other:x", null, cts.Token);
        }
    }

    [Fact]
    public async Task AForeignOriginIsRefusedWith403OnEveryPushPath()
    {
        var token = fixture.Token(SecurityFixture.NewUser(), topics: ["**"]);
        var (status, socket) = await Gateway.TryConnectAsync("access_token=" + token, origin: "https://evil.example");
        socket?.Dispose();
        Assert.Equal(HttpStatusCode.Forbidden, status);
        (status, socket) = await Gateway.TryConnectAsync("access_token=" + token, origin: SecurityFixture.AllowedOrigin);
        Assert.Equal(HttpStatusCode.SwitchingProtocols, status);
        socket!.Dispose();

        foreach (var (method, path) in new[] { ("GET", "/sse?topic=public:a"), ("GET", "/poll?topic=public:a"), ("POST", "/hubs/push/negotiate?negotiateVersion=1"), ("GET", "/mqtt") })
        {
            using var request = new HttpRequestMessage(new HttpMethod(method), path + (path.Contains('?') ? "&" : "?") + "access_token=" + token);
            request.Headers.Add("Origin", "https://evil.example");
            using var answer = await Gateway.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.True(answer.StatusCode == HttpStatusCode.Forbidden, $"{method} {path} answered {(int)answer.StatusCode}");
        }

        Assert.Contains(fixture.Logs.Lines, l => l.StartsWith("OrleansPush.Audit|2301|", StringComparison.Ordinal) && l.Contains("evil.example", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AFloodIsRateLimitedAndTheConnectionWorksAgainAfterwards()
    {
        await using var client = await ConnectAsync(fixture.Token(SecurityFixture.NewUser()));
        const int sent = SecurityFixture.MessagesPerSecond * 4;
        for (var i = 0; i < sent; i++)
        {
            await client.SendAsync($"{{\"op\":\"ping\",\"id\":{100_000 + i}}}");
        }

        var replies = new List<Frame>();
        while (replies.Count < sent)
        {
            replies.Add(await client.NextAsync());
        }

        var limited = replies.Count(r => r.Code == "rate_limited");
        Assert.InRange(limited, sent - (SecurityFixture.MessagesPerSecond * 2), sent - 1);
        Assert.All(replies.Where(r => r.Op == "error"), r => Assert.Equal("rate_limited", r.Code));
        Assert.Equal(WebSocketState.Open, client.State);

        await Task.Delay(TimeSpan.FromSeconds(1.5));
        Assert.Equal("ok", (await client.RequestAsync("ping")).Op);
        Assert.Contains(fixture.Logs.Lines, l => l.StartsWith("OrleansPush.Audit|2304|", StringComparison.Ordinal) && l.Contains("messages_per_second", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AUsersConnectionsAreCapped()
    {
        var user = SecurityFixture.NewUser();
        var clients = new List<WsClient>();
        try
        {
            for (var i = 0; i < SecurityFixture.ConnectionsPerUser; i++)
            {
                clients.Add(await ConnectAsync(fixture.Token(user)));
            }

            var (status, socket) = await Gateway.TryConnectAsync("access_token=" + fixture.Token(user));
            socket?.Dispose();
            Assert.Equal(HttpStatusCode.TooManyRequests, status);

            using var sse = await Gateway.Http.GetAsync($"/sse?topic=public:a&access_token={fixture.Token(user)}", HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.TooManyRequests, sse.StatusCode);
            Assert.Contains("rate_limited", await sse.Content.ReadAsStringAsync());

            // Another user is not affected, and a slot frees when a connection closes.
            await using (var other = await ConnectAsync(fixture.Token(SecurityFixture.NewUser())))
            {
                Assert.Equal("ok", (await other.RequestAsync("ping")).Op);
            }

            await clients[0].DisposeAsync();
            clients.RemoveAt(0);
            var deadline = DateTime.UtcNow + WsClient.DefaultWait;
            while (true)
            {
                (status, socket) = await Gateway.TryConnectAsync("access_token=" + fixture.Token(user));
                socket?.Dispose();
                if (status == HttpStatusCode.SwitchingProtocols || DateTime.UtcNow > deadline)
                {
                    break;
                }

                await Task.Delay(100);
            }

            Assert.Equal(HttpStatusCode.SwitchingProtocols, status);
        }
        finally
        {
            foreach (var c in clients)
            {
                await c.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task AConnectionWhoseTokenExpiresIsClosedWithUnauthorized()
    {
        await using var client = await ConnectAsync(fixture.Token(SecurityFixture.NewUser(), lifetime: TimeSpan.FromSeconds(2)));
        Assert.Equal("ok", (await client.RequestAsync("ping")).Op);
        var frames = await client.ReadToEndAsync(TimeSpan.FromSeconds(10));
        Assert.Contains(frames, f => f.Op == "error" && f.Code == "unauthorized");
        Assert.NotEqual(WebSocketState.Open, client.State);
        Assert.Contains(fixture.Logs.Lines, l => l.StartsWith("OrleansPush.Audit|2305|", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ARefreshBeforeExpiryKeepsTheConnectionAndAWrongOneIsRefused()
    {
        var user = SecurityFixture.NewUser();
        await using var client = await ConnectAsync(fixture.Token(user, lifetime: TimeSpan.FromSeconds(2)));
        Assert.Equal("unauthorized", (await client.RequestAsync("refresh", new { token = BadToken("expired") })).Code);
        Assert.Equal("forbidden", (await client.RequestAsync("refresh", new { token = fixture.Token(SecurityFixture.NewUser()) })).Code);
        Assert.Equal("ok", (await client.RequestAsync("refresh", new { token = fixture.Token(user, topics: ["fresh:*"]) })).Op);

        await Task.Delay(TimeSpan.FromSeconds(3.5));
        Assert.Equal(WebSocketState.Open, client.State);
        Assert.Equal("ok", (await client.RequestAsync("ping")).Op);
        // The fresh token's rights apply.
        Assert.Equal("ok", (await client.SubscribeAsync("fresh:" + Guid.NewGuid().ToString("N"))).Op);
    }

    [Fact]
    public async Task ARefreshEndsTheSubscriptionsTheNewTokenNoLongerGrantsAndKeepsTheOthers()
    {
        var user = SecurityFixture.NewUser();
        var (kept, revoked) = ("stay:" + Guid.NewGuid().ToString("N"), "gone:" + Guid.NewGuid().ToString("N"));
        await using var client = await ConnectAsync(fixture.Token(user, topics: ["stay:*", "gone:*"]));
        Assert.Equal("ok", (await client.SubscribeAsync(kept)).Op);
        Assert.Equal("ok", (await client.SubscribeAsync(revoked)).Op);

        var ok = await client.RequestAsync("refresh", new { token = fixture.Token(user, topics: ["stay:*"]) });
        Assert.Equal("ok", ok.Op);
        Assert.Equal([revoked], ok.Json.GetProperty("unsubscribed").EnumerateArray().Select(t => t.GetString()));

        // Nothing more arrives from the topic the token no longer grants; the personal channel and the kept topic go on.
        foreach (var (path, body) in new[] { ("/api/topics/" + revoked, "{\"n\":1}"), ("/api/topics/" + kept, "{\"n\":2}"), ("/api/users/" + user, "{\"n\":3}") })
        {
            using var published = await Api(HttpMethod.Post, path, fixture.Backend(), body);
            Assert.True(published.IsSuccessStatusCode);
        }

        var messages = await client.MessagesAsync(2);
        Assert.Equal(new[] { kept, "user:" + user }.Order(StringComparer.Ordinal), messages.Select(m => m.Topic).Order(StringComparer.Ordinal));
        Assert.True(await client.IsQuietAsync(TimeSpan.FromMilliseconds(500)));
        Assert.Contains(fixture.Logs.Lines, l => l.Contains(revoked, StringComparison.Ordinal) && l.StartsWith("OrleansPush.Audit|", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SseAndLongPollingTakeTheTokenFromTheQueryAndCheckEachTopic()
    {
        var user = SecurityFixture.NewUser();
        var token = fixture.Token(user, topics: ["feed:*"]);
        var topic = "feed:" + Guid.NewGuid().ToString("N");
        await using (var sse = await SseClient.ConnectAsync(Gateway.Http, $"/sse?topic={topic}&access_token={token}"))
        {
            await Api(HttpMethod.Post, "/api/topics/" + topic, fixture.Backend(), "{\"s\":1}");
            Assert.Equal("{\"s\":1}", (await sse.EventsAsync("message", 1))[0].RawData);
        }

        using (var refused = await Gateway.Http.GetAsync($"/sse?topic=other:x&access_token={token}", HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        }

        using var poll = new HttpRequestMessage(HttpMethod.Get, $"/poll?topic={topic}&since=");
        poll.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        var polling = Gateway.Http.SendAsync(poll);
        await Task.Delay(300);
        await Api(HttpMethod.Post, "/api/topics/" + topic, fixture.Backend(), "{\"p\":2}");
        using var answer = await polling.WaitAsync(WsClient.DefaultWait);
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Contains("{\"p\":2}", await answer.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task NoLogLineHoldsATokenAndRequestUrlsAreRedacted()
    {
        // Make sure there are token-bearing URLs to log, whatever ran before.
        var token = fixture.Token(SecurityFixture.NewUser(), topics: ["**"]);
        await using (var client = await ConnectAsync(token))
        {
            await client.RequestAsync("refresh", new { token = fixture.Token("someone") });
        }

        await Gateway.TryConnectAsync("access_token=" + BadToken("expired"));
        using (await Gateway.Http.GetAsync("/poll?topic=public:a&access_token=" + BadToken("bad_signature")))
        {
        }

        await Task.Delay(200);
        var lines = fixture.Logs.Lines.ToArray();
        Assert.Contains(lines, l => l.Contains("access_token=[redacted]", StringComparison.Ordinal));
        foreach (var minted in fixture.Tokens)
        {
            var signature = minted[(minted.LastIndexOf('.') + 1)..];
            var leaking = lines.FirstOrDefault(l => l.Contains(signature, StringComparison.Ordinal) || l.Contains(minted[..40], StringComparison.Ordinal));
            Assert.True(leaking is null, "A log line holds a token: " + (leaking is null ? string.Empty : leaking[..Math.Min(200, leaking.Length)]));
        }
    }

    private async Task<HttpResponseMessage> Api(HttpMethod method, string path, string? token, string? json)
    {
        using var request = new HttpRequestMessage(method, path) { Content = json is null ? null : Json(json) };
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        return await Gateway.Http.SendAsync(request, cts.Token);
    }

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");
}
