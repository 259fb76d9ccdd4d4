using System.Net;
using System.Net.Http.Json;

namespace OrleansPush.Gateway.Tests;

[Collection(HttpStreamingCollection.Name)]
public sealed class SseTests(HttpStreamingFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task HttpPublishesReachAnSseStreamByteForByteInOrderOnce()
    {
        var topic = GatewayFixture.NewTopic("sse");
        await using var stream = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + topic);
        var subscribed = (await stream.EventsAsync("subscribed", 1))[0];
        Assert.Equal(topic, subscribed.Json.GetProperty("topic").GetString());
        Assert.Equal(0, subscribed.Json.GetProperty("seq").GetInt64());
        var epoch = subscribed.Json.GetProperty("epoch").GetString();
        Assert.Equal($"{topic}={epoch}:0", subscribed.Id);

        // A body with line breaks in its whitespace still arrives as one event whose data is the msg object.
        var bodies = Enumerable.Range(1, 10).Select(i => i == 5 ? "{\n  \"i\": 5\n}" : $"{{ \"i\" : {i}, \"s\":\"caf\\u00e9 ☺\" }}").ToArray();
        foreach (var body in bodies)
        {
            await Gateway.PublishAsync(topic, body);
        }

        var messages = await stream.EventsAsync("message", 10);
        Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), messages.Select(m => m.Seq));
        Assert.Equal(bodies, messages.Select(m => m.RawData));
        Assert.All(messages, m => Assert.Equal("msg", m.Json.GetProperty("op").GetString()));
        Assert.Equal(Enumerable.Range(1, 10).Select(i => $"{topic}={epoch}:{i}"), messages.Select(m => m.Id));
        Assert.True(await stream.IsQuietAsync(TimeSpan.FromMilliseconds(500)), "no duplicate may follow");
    }

    [Fact]
    public async Task ReconnectWithLastEventIdResumesEveryTopicWithoutLossOrDuplicate()
    {
        var a = GatewayFixture.NewTopic("ssea");
        var b = GatewayFixture.NewTopic("sseb");
        var query = $"/sse?topic={a}&topic={b}";
        string lastId;
        await using (var stream = await SseClient.ConnectAsync(Gateway.Http, query))
        {
            await stream.EventsAsync("subscribed", 2);
            await Gateway.PublishAsync(a, "\"a1\"");
            await Gateway.PublishAsync(b, "\"b1\"");
            await Gateway.PublishAsync(a, "\"a2\"");
            var seen = await stream.EventsAsync("message", 3);
            Assert.Equal(["\"a1\"", "\"a2\"", "\"b1\""], seen.Select(m => m.RawData).Order(StringComparer.Ordinal));
            lastId = seen[^1].Id!;
        }

        // While away: both topics move on. The last event seen was on one topic; the id still resumes the other.
        await Gateway.PublishAsync(b, "\"b2\"");
        await Gateway.PublishAsync(a, "\"a3\"");
        await Gateway.PublishAsync(b, "\"b3\"");

        await using var resumed = await SseClient.ConnectAsync(Gateway.Http, query, lastId);
        var events = new List<SseEvent>();
        using (var deadline = new CancellationTokenSource(WsClient.DefaultWait))
        {
            while (events.Count(e => e.Event == "message") < 3 || events.Count(e => e.Event == "subscribed") < 2)
            {
                Assert.False(deadline.IsCancellationRequested, "events so far: " + string.Join(" | ", events.Select(e => e.Event + " " + e.Data)));
                var e = await resumed.NextAsync();
                if (e.Comment is null)
                {
                    events.Add(e);
                }
            }
        }

        Assert.All(events.Where(e => e.Event == "subscribed"), e => Assert.True(e.Json.GetProperty("recovered").GetBoolean()));
        var missed = events.Where(e => e.Event == "message").ToList();
        Assert.Equal(["\"a3\""], missed.Where(m => m.Topic == a).Select(m => m.RawData));
        Assert.Equal(["\"b2\"", "\"b3\""], missed.Where(m => m.Topic == b).Select(m => m.RawData));

        await Gateway.PublishAsync(a, "\"a4\"");
        var live = (await resumed.EventsAsync("message", 1))[0];
        Assert.Equal("\"a4\"", live.RawData);
        Assert.Equal(4, live.Seq);
        Assert.Contains($"{b}=", live.Id!, StringComparison.Ordinal);
        Assert.EndsWith(":3", live.Id!.Split(',').Single(p => p.StartsWith(b + "=", StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.True(await resumed.IsQuietAsync(TimeSpan.FromMilliseconds(500)), "no duplicate may follow");
    }

    [Fact]
    public async Task ResumeThatHistoryNoLongerReachesIsReportedAsRecoveredFalse()
    {
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        string lastId;
        await using (var stream = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + topic))
        {
            await stream.EventsAsync("subscribed", 1);
            await Gateway.PublishAsync(topic, "1");
            lastId = (await stream.EventsAsync("message", 1))[0].Id!;
        }

        for (var i = 2; i <= 10; i++)
        {
            await Gateway.PublishAsync(topic, i.ToString());
        }

        await using var resumed = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + topic, lastId);
        var replayed = await resumed.EventsAsync("message", 3);
        Assert.Equal([8L, 9L, 10L], replayed.Select(m => m.Seq));
        var subscribed = (await resumed.EventsAsync("subscribed", 1))[0];
        Assert.False(subscribed.Json.GetProperty("recovered").GetBoolean());
        Assert.Equal(10, subscribed.Json.GetProperty("seq").GetInt64());
    }

    [Fact]
    public async Task IdleStreamGetsHeartbeatComments()
    {
        await using var stream = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + GatewayFixture.NewTopic("idle"));
        await stream.EventsAsync("subscribed", 1);
        var next = await stream.NextAsync(TimeSpan.FromSeconds(5));
        Assert.Equal("ping", next.Comment);
    }

    [Fact]
    public async Task UserStreamFollowsItsPersonalChannelAndResumesIt()
    {
        var user = "sse-" + Guid.NewGuid().ToString("N");
        string lastId;
        await using (var stream = await SseClient.ConnectAsync(Gateway.Http, "/sse?user=" + user))
        {
            var subscribed = (await stream.EventsAsync("subscribed", 1))[0];
            Assert.Equal("user:" + user, subscribed.Json.GetProperty("topic").GetString());
            using var first = await Gateway.Http.PostAsync("/api/users/" + user, new StringContent("{\"dm\":1}"));
            first.EnsureSuccessStatusCode();
            lastId = (await stream.EventsAsync("message", 1))[0].Id!;
        }

        using (var second = await Gateway.Http.PostAsync("/api/users/" + user, new StringContent("{\"dm\":2}")))
        {
            second.EnsureSuccessStatusCode();
        }

        await using var resumed = await SseClient.ConnectAsync(Gateway.Http, "/sse?user=" + user, lastId);
        var missed = await resumed.EventsAsync("message", 1);
        Assert.Equal("{\"dm\":2}", missed[0].RawData);
        var rejoined = (await resumed.EventsAsync("subscribed", 1))[0];
        Assert.True(rejoined.Json.GetProperty("recovered").GetBoolean());
        Assert.True(await resumed.IsQuietAsync(TimeSpan.FromMilliseconds(500)), "no duplicate may follow");
    }

    [Theory]
    [InlineData("/sse?topic=bad%20topic", HttpStatusCode.BadRequest, "bad_topic")]
    [InlineData("/sse", HttpStatusCode.BadRequest, "bad_request")]
    [InlineData("/sse?topic=user:someone-else", HttpStatusCode.Forbidden, "forbidden")]
    [InlineData("/sse?topic=news", HttpStatusCode.BadRequest, "bad_request", "not-an-id")]
    public async Task RefusedStreamIsAJsonErrorBeforeTheStreamStarts(string pathAndQuery, HttpStatusCode status, string code, string? lastEventId = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, pathAndQuery);
        if (lastEventId is not null)
        {
            request.Headers.Add("Last-Event-ID", lastEventId);
        }

        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        using var response = await Gateway.Http.SendAsync(request, cts.Token);
        Assert.Equal(status, response.StatusCode);
        var error = await response.Content.ReadFromJsonAsync<System.Text.Json.JsonElement>(cts.Token);
        Assert.Equal(code, error.GetProperty("error").GetString());
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
    }
}
